"""Resolving a code for a redirect: in-process LRU → shared cache (Redis) → store.

Positive entries live ``POSITIVE_TTL_S`` in the LRU, so a link deleted through another process
stops redirecting within that time (this process forgets it at once) — or, with a delete feed
telling every process of every delete (scaled: Redis pub/sub), ``BROADCAST_TTL_S``, the feed's
failures bounded by that and by forgetting everything when the feed reports a gap. Unknown
codes are cached ``NEGATIVE_TTL_S`` so a scan of random codes cannot hammer the store. Links
with a visit limit are counted in the store on every visit (the slow path; they are rare).

With a shared cache, a live link still redirecting in the last ``REFRESH_AHEAD`` of its lifetime
here is read again in the background (:meth:`Resolver.refresh_forever`) — from the shared cache,
many codes a round trip, or from the store (filling the shared cache) where the shared cache no
longer holds it — and trusted for another lifetime: popular links do not fall out of this
process every lifetime, each to be missed once by a redirect that waits for Redis (measured in
a 30 s scaled benchmark: the hit rate 93.0 → 96.6 %; a miss costs the event loop ~130 µs). The
bound on how long a missed delete may redirect is unchanged: an entry is still trusted for one
lifetime from its last read.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fanout.core.clock import Clock
from fanout.core.errors import Unavailable
from fanout.links.model import Link
from fanout.links.ports import DeleteFeed, LinkCache, LinkStore

__all__ = ["Outcome", "Resolution", "Resolver"]

log = logging.getLogger(__name__)

LRU_BYTES = 128 * 1024 * 1024  # in-process cache budget, what callers keep of entries included
ENTRY_OVERHEAD_B = 300  # the Link object, the tuple, the dict slot (and the URL, counted apart)
# A live link's answer as a redirect front builds it once and keeps it while the entry lives
# (api/redirect.py: headers, ASGI messages, encoded lines; the URL twice, counted apart).
ANSWER_OVERHEAD_B = 900
POSITIVE_TTL_S = 5.0  # how long another process may still redirect a deleted link
SOLE_PROCESS_TTL_S = 300.0  # with no other process (embedded), deletes here invalidate at once
BROADCAST_TTL_S = 60.0  # other processes hear of deletes through the feed; this bounds a miss
NEGATIVE_TTL_S = 2.0  # unknown codes: long enough to absorb scans, short for new aliases
SHARED_TTL_S = 300.0  # the shared cache is told of deletes, so it may keep links longer
# Of a lifetime: a link redirecting in its last half is read again. A quarter missed the links
# of a benchmark whose load pauses for 10-20 s at a time (the raw-ASGI ceiling's turn).
REFRESH_AHEAD = 0.5
REFRESH_GATHER_S = 0.25  # codes gather this long before a round: a few round trips a second
REFRESH_BATCH = 256  # codes a round trip: the Redis adapter's most per MGET
REFRESH_DUE_MAX = 16 * REFRESH_BATCH  # codes queued at most; others queue on a later hit
REFRESH_BACKOFF_S = 1.0  # after a round that failed (Redis or the store out of reach)


class Outcome(enum.Enum):
    REDIRECT = "redirect"
    GONE = "gone"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Resolution:
    outcome: Outcome
    link: Link | None = None


_UNKNOWN = Resolution(Outcome.UNKNOWN)


class Resolver:
    """Lookups that race a create or delete in this process are answered but not cached (an
    epoch counter tells), and fills of the shared cache never overwrite what a delete wrote
    there, so a deleted link cannot be brought back by a slow lookup. A shared cache that is
    down is skipped: redirects fall back to the store."""

    def __init__(
        self,
        store: LinkStore,
        cache: LinkCache | None,
        clock: Clock,
        *,
        positive_ttl_s: float = POSITIVE_TTL_S,
        feed: DeleteFeed | None = None,
        get_now: Callable[[str], Link | None] | None = None,
    ) -> None:
        """``positive_ttl_s``: how long a found link is trusted in this process; only a single
        process (which sees every delete) may trust it long. ``get_now``: the store's ``get``
        answered at once, where it needs no wait (embedded SQLite, on the loop's thread)."""
        self._store = store
        self._get_now = get_now
        self._cache = cache
        self._clock = clock
        self._positive_ttl_s = positive_ttl_s
        self._feed = feed
        # By code: until when it is trusted, the link (None: no such code), its cost in bytes
        # and the answer while the link is live (built once: ~0.7 µs a redirect otherwise).
        self._lru: OrderedDict[str, tuple[float, Link | None, int, Resolution]] = OrderedDict()
        self._bytes = 0
        self._epoch = 0
        self._watchers: list[Callable[[str | None], None]] = []
        # Links to read again (code -> the entry then cached), hit within this long of their
        # entry's end; nothing to read them from without a shared cache.
        self._refresh_within_s = positive_ttl_s * REFRESH_AHEAD if cache is not None else 0.0
        self._due: dict[str, tuple[float, Link | None, int, Resolution]] = {}
        self._due_event = asyncio.Event()
        self.hits = 0
        self.lookups = 0
        self.refreshed = 0

    def watch(self, dropped: Callable[[str | None], None]) -> None:
        """Call ``dropped(code)`` whenever this process stops trusting what it cached of
        ``code`` (deleted, invalidated, replaced, evicted), ``dropped(None)`` when it forgets
        every code: for what callers build from a cached link and keep, such as an answer.
        An entry whose lifetime runs out is not reported: callers keep :meth:`trusted_until`'s
        deadline and check it themselves."""
        if dropped not in self._watchers:
            self._watchers.append(dropped)

    def unwatch(self, dropped: Callable[[str | None], None]) -> None:
        if dropped in self._watchers:
            self._watchers.remove(dropped)

    def trusted_until(self, link: Link) -> float:
        """Until when (``clock.monotonic()``) this process trusts ``link`` as cached: 0 if what
        it caches of the code is another object (a lookup that raced a delete) or nothing."""
        entry = self._lru.get(link.code)
        return entry[0] if entry is not None and entry[1] is link else 0.0

    def hit(self, code: str, now: float) -> None:
        """A caller answered ``code`` at ``now`` (``clock.monotonic()``) from what it built of
        this cache's entry (see :meth:`watch`): counted as a lookup answered here, ``code`` kept
        recent, and read again if due."""
        self.lookups += 1
        self.hits += 1
        self._lru.move_to_end(code)
        self._refresh_if_due(code, self._lru[code], now)

    def hit_again(self) -> None:
        """A caller answered a code it told :meth:`hit` of a moment ago, from what it built
        of the same entry: counted, and nothing else (the code is recent enough already)."""
        self.lookups += 1
        self.hits += 1

    async def resolve(self, code: str, *, visit: bool = True) -> Resolution:
        """``visit=False`` (a HEAD) answers without using up a visit of a limited link."""
        answer = self.resolve_now(code, visit=visit)
        if answer is not None:
            return answer
        link = await self._lookup(code)
        if link is None:
            return _UNKNOWN
        if link.gone(self._clock.now_ms()):
            return Resolution(Outcome.GONE, link)
        if visit and link.max_visits is not None and not await self._store.take_visit(code):
            return Resolution(Outcome.GONE, link)
        return Resolution(Outcome.REDIRECT, link)

    def resolve_now(self, code: str, *, visit: bool = True) -> Resolution | None:
        """The answer without awaiting anything — from this process's cache, or from a store
        that answers at once (``get_now``) — or ``None`` when it takes the shared cache or an
        awaited store read, or is the visit of a live limited link (the store counts those)."""
        now = self._clock.monotonic()
        entry = self._lru.get(code)
        if entry is not None and entry[0] > now:
            hit = True
            self._refresh_if_due(code, entry, now)
        elif self._get_now is not None:
            hit = False
            # Nothing can change it meanwhile: no await.
            entry = self._remember(code, self._get_now(code), now)
        else:
            return None
        link = entry[1]
        if link is None:
            answer = _UNKNOWN
        elif link.gone(self._clock.now_ms()):
            answer = Resolution(Outcome.GONE, link)
        elif visit and link.max_visits is not None:
            return None
        else:
            answer = entry[3]
        self.lookups += 1
        if hit:
            self.hits += 1
            self._lru.move_to_end(code)
        return answer

    async def _lookup(self, code: str) -> Link | None:
        self.lookups += 1
        now = self._clock.monotonic()
        cached = self._lru.get(code)
        if cached is not None and cached[0] > now:
            self.hits += 1
            self._lru.move_to_end(code)
            return cached[1]
        epoch = self._epoch
        shared = await self._shared_get(code)
        link: Link | None
        if shared is False:
            link = None
        elif isinstance(shared, Link):
            link = shared
        else:
            link = await self._from_store(code, epoch)
        if epoch == self._epoch:  # nothing was created or deleted meanwhile
            self._remember(code, link, now)
        return link

    async def _from_store(self, code: str, epoch: int) -> Link | None:
        """The store's link for ``code``, filled into the shared cache unless a link was
        created or deleted here since ``epoch`` (the fill could then be stale)."""
        link = await self._store.get(code)
        if epoch == self._epoch:
            await self._shared_put(code, link, SHARED_TTL_S if link else NEGATIVE_TTL_S,
                                   replace=False)  # fmt: skip
        return link

    def _refresh_if_due(
        self, code: str, entry: tuple[float, Link | None, int, Resolution], now: float
    ) -> None:
        """Queue a live link's entry hit at ``now`` to be read again if it is within
        ``_refresh_within_s`` of its end ("no such code" is not: scans end; a deleted link's
        entry would only learn what this process told the shared cache)."""
        if entry[0] - now >= self._refresh_within_s or code in self._due:
            return
        link = entry[1]
        if link is not None and not link.deleted and len(self._due) < REFRESH_DUE_MAX:
            self._due[code] = entry
            self._due_event.set()

    async def refresh_forever(self) -> None:
        """Read the links due again (see the module's docstring) until cancelled; with no
        shared cache, return at once (nothing is ever due). A link whose entry changed here
        meanwhile (deleted, invalidated, replaced, evicted) is left as it is; what was read
        replaces the entry if it differs (deleted or changed elsewhere), else extends it. A
        round that fails is logged and its codes dropped (they run out, or queue again on
        their next hit)."""
        if self._cache is None:
            return
        while True:
            await self._due_event.wait()
            await asyncio.sleep(REFRESH_GATHER_S)
            due, self._due = self._due, {}
            self._due_event.clear()
            codes = list(due)
            try:
                for start in range(0, len(codes), REFRESH_BATCH):
                    await self._refresh(codes[start : start + REFRESH_BATCH], due)
            except Unavailable as exc:  # entries run out and are missed as without refreshes
                log.debug("refreshing cached links: %s", exc)
                await asyncio.sleep(REFRESH_BACKOFF_S)
            except Exception:  # the same, but unexpected
                log.exception("refreshing %d cached links failed", len(codes))
                await asyncio.sleep(REFRESH_BACKOFF_S)

    async def _refresh(
        self, codes: Sequence[str], due: dict[str, tuple[float, Link | None, int, Resolution]]
    ) -> None:
        assert self._cache is not None
        now = self._clock.monotonic()  # before the reads: the new lifetime starts no later
        epoch = self._epoch
        read: dict[str, Link | None] = {}
        missing = []
        for code, value in zip(codes, await self._cache.get_many(codes), strict=True):
            if value is None:
                missing.append(code)
            else:
                read[code] = value if isinstance(value, Link) else None
        if missing:  # the shared cache's copy ran out: read the store and fill it, as a miss
            links = await asyncio.gather(*(self._from_store(code, epoch) for code in missing))
            if epoch == self._epoch:  # else created or deleted meanwhile: may be stale
                read.update(zip(missing, links, strict=True))
        for code, link in read.items():
            entry = self._lru.get(code)
            if entry is None or entry is not due[code]:  # changed here meanwhile
                continue
            if link == entry[1]:  # the same link: the same object, trusted longer
                self._lru[code] = (now + self._positive_ttl_s, *entry[1:])
            else:  # deleted or changed elsewhere: as a lookup would have found it
                self._remember(code, link, now)
            self.refreshed += 1

    async def _shared_get(self, code: str) -> Link | bool | None:
        if self._cache is None:
            return None
        try:
            return await self._cache.get(code)
        except Unavailable:  # the store still answers; the cache is an accelerator
            return None

    async def _shared_put(
        self, code: str, link: Link | None, ttl_s: float, *, replace: bool
    ) -> None:
        if self._cache is not None:
            with contextlib.suppress(Unavailable):  # an outage only costs cache misses
                await self._cache.put(code, link, ttl_s, replace=replace)

    def _remember(
        self, code: str, link: Link | None, now: float
    ) -> tuple[float, Link | None, int, Resolution]:
        self._drop(code)
        cost = ENTRY_OVERHEAD_B + len(code)
        if link is not None:
            cost += len(link.url)
            if link.max_visits is None and not link.deleted:  # an answer may be kept for it
                cost += ANSWER_OVERHEAD_B + 2 * len(link.url)
        ttl_s = self._positive_ttl_s if link else NEGATIVE_TTL_S
        answer = Resolution(Outcome.REDIRECT, link) if link else _UNKNOWN
        entry = self._lru[code] = (now + ttl_s, link, cost, answer)
        self._bytes += cost
        while self._bytes > LRU_BYTES:
            self._drop(next(iter(self._lru)))
        return entry

    def _drop(self, code: str) -> None:
        entry = self._lru.pop(code, None)
        if entry is not None:
            self._bytes -= entry[2]
            for dropped in self._watchers:
                dropped(code)

    async def forget(self, code: str) -> None:
        """A link was created: drop any cached "no such code" for it, here and shared."""
        self._epoch += 1
        self._drop(code)
        if self._cache is not None:
            with contextlib.suppress(Unavailable):
                await self._cache.forget(code)

    async def deleted(self, link: Link) -> None:
        """A link was deleted: this process answers 410 at once, and the shared cache holds the
        deleted link (not a gap a slow lookup could refill with the live one)."""
        self._epoch += 1
        self._drop(link.code)
        self._remember(link.code, link, self._clock.monotonic())
        await self._shared_put(link.code, link, SHARED_TTL_S, replace=True)
        if self._feed is not None:
            with contextlib.suppress(Unavailable):  # the others' LRU lifetime bounds a miss
                await self._feed.deleted(link.code)

    def invalidate(self, code: str) -> None:
        """Another process deleted ``code``: stop trusting what this one cached."""
        self._epoch += 1
        self._drop(code)

    def invalidate_all(self) -> None:
        """The delete feed lost messages: forget every cached link."""
        self._epoch += 1
        self._lru.clear()
        self._bytes = 0
        for dropped in self._watchers:
            dropped(None)
