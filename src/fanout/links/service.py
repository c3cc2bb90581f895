"""Short links: create (generated code or alias), read, list, delete, statistics.

* Generated codes come from a counter leased in blocks of ``BLOCK`` (one store round trip per
  block, not per link) through the keyed permutation; a code already taken by an alias is
  skipped. An alias is checked (reserved words → 409) and taken atomically by the insert.
* ``reuse`` returns the caller's newest live link to exactly the same URL instead of a new one.
* Only the owner reads, deletes or sees the statistics of a link (403 for anyone else).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fanout.accounts.model import UserId
from fanout.core.clock import Clock
from fanout.core.errors import Conflict, Forbidden, Invalid, NotFound
from fanout.links.codes import CODE_SPACE, CodePermutation
from fanout.links.model import Link, LinkStats
from fanout.links.ports import ClickStore, LinkStore
from fanout.links.resolver import Resolver
from fanout.links.urls import check_alias, check_target

__all__ = ["BLOCK", "GRANULARITY_MS", "LinkService", "NewLinkRequest"]

BLOCK = 1_000  # counter values leased per round trip
GRANULARITY_MS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}
MAX_BUCKETS = 2_000  # series points one stats request may ask for


@dataclass(frozen=True, slots=True)
class NewLinkRequest:
    url: str
    alias: str | None = None
    expires_ms: int | None = None
    redirect: int = 302
    reuse: bool = False
    max_visits: int | None = None


def _reusable(link: Link, request: NewLinkRequest, now_ms: int) -> bool:
    """An existing link serves a ``reuse`` request only if it behaves as the new one would:
    live, same redirect, no visit limit on either side, and the asked expiry if one was asked."""
    return (
        not link.gone(now_ms)
        and link.redirect == request.redirect
        and link.max_visits is None
        and request.max_visits is None
        and (request.expires_ms is None or request.expires_ms == link.expires_ms)
    )


class LinkService:
    def __init__(
        self,
        links: LinkStore,
        clicks: ClickStore,
        resolver: Resolver,
        permutation: CodePermutation,
        clock: Clock,
        *,
        ttl_days: int = 1825,
        blocklist: Sequence[str] = (),
        short_url: Callable[[str], str] = lambda code: "/" + code,
    ) -> None:
        self._links = links
        self._clicks = clicks
        self._resolver = resolver
        self._perm = permutation
        self._clock = clock
        self._ttl_ms = ttl_days * 86_400_000
        self._blocklist = tuple(blocklist)
        self.short_url = short_url
        self._lock = asyncio.Lock()
        self._next = 0
        self._end = 0

    async def _counter(self) -> int:
        async with self._lock:
            if self._next >= self._end:
                self._next = await self._links.lease_block(BLOCK)
                self._end = self._next + BLOCK
            value = self._next
            self._next += 1
        if value >= CODE_SPACE:
            raise Conflict("the 7-character code space is used up")
        return value

    async def create(self, owner: UserId, request: NewLinkRequest) -> Link:
        url = check_target(request.url, self._blocklist)
        now = self._clock.now_ms()
        if request.redirect not in (301, 302):
            raise Invalid("redirect must be 301 or 302",
                          details=[{"field": "redirect", "message": "301 or 302"}])  # fmt: skip
        if request.expires_ms is not None and request.expires_ms <= now:
            raise Invalid("expires_at must be in the future",
                          details=[{"field": "expires_at", "message": "in the past"}])  # fmt: skip
        if request.max_visits is not None and request.max_visits < 1:
            raise Invalid("max_visits must be at least 1",
                          details=[{"field": "max_visits", "message": "at least 1"}])  # fmt: skip
        if request.reuse and request.alias is None:
            existing = await self._links.find_for_reuse(owner, url)
            if existing is not None and _reusable(existing, request, now):
                return existing
        expires = request.expires_ms if request.expires_ms is not None else now + self._ttl_ms
        if request.alias is not None:
            link = self._link(check_alias(request.alias), owner, url, request, now, expires)
            await self._links.create(link)  # Conflict when taken
        else:
            while True:
                link = self._link(self._perm.code(await self._counter()), owner, url, request,
                                  now, expires)  # fmt: skip
                try:
                    await self._links.create(link)
                    break
                except Conflict:
                    continue  # an alias holds this code: take the next counter value
        await self._resolver.forget(link.code)  # a cached "unknown" must not shadow it
        return link

    @staticmethod
    def _link(code: str, owner: UserId, url: str, request: NewLinkRequest, now: int,
              expires: int) -> Link:  # fmt: skip
        return Link(code, owner, url, request.redirect, now, expires, request.max_visits)

    async def get(self, owner: UserId, code: str) -> Link:
        link = await self._links.get(code)
        if link is None or link.deleted:
            raise NotFound("link", code)
        if link.owner_id != owner:
            raise Forbidden("only the owner sees a link")
        return link

    async def mine(self, owner: UserId, before: tuple[int, str] | None, limit: int) -> list[Link]:
        return await self._links.by_owner(owner, before, limit)

    async def delete(self, owner: UserId, code: str) -> None:
        link = await self.get(owner, code)
        await self._links.delete(code)
        await self._resolver.deleted(dataclasses.replace(link, deleted=True))

    async def orphan_visits(self) -> int:
        """Requests for codes that never existed, bots included (aggregated under "")."""
        now = self._clock.now_ms()
        stats = await self._clicks.stats("", "day", now - GRANULARITY_MS["day"], now + 1, top=0)
        return stats.total + stats.bots

    async def totals(self, links: Sequence[Link]) -> dict[str, int]:
        return await self._clicks.totals([link.code for link in links]) if links else {}

    async def stats(
        self, owner: UserId, code: str, granularity: str, from_ms: int | None, to_ms: int | None
    ) -> LinkStats:
        link = await self.get(owner, code)
        step = GRANULARITY_MS[granularity]
        end = to_ms if to_ms is not None else self._clock.now_ms() + step
        start = from_ms if from_ms is not None else max(link.created_ms, end - 60 * step)
        if start >= end or (end - start) // step > MAX_BUCKETS:
            raise Invalid(
                f"from must be before to, and at most {MAX_BUCKETS} {granularity}s apart",
                details=[{"field": "from", "message": "bad range"}],
            )
        return await self._clicks.stats(code, granularity, start - start % step, end)
