"""Resolving a code for a redirect: in-process LRU → shared cache (Redis) → store.

Positive entries live ``POSITIVE_TTL_S`` in the LRU, so a link deleted through another process
stops redirecting within that time (this process forgets it at once); unknown codes are cached
``NEGATIVE_TTL_S`` so a scan of random codes cannot hammer the store. Links with a visit limit
are counted in the store on every visit (the slow path; they are rare).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

from fanout.core.clock import Clock
from fanout.links.model import Link
from fanout.links.ports import LinkCache, LinkStore

__all__ = ["Outcome", "Resolution", "Resolver"]

LRU_ENTRIES = 100_000  # ~200 B each: ~20 MB per process at most
POSITIVE_TTL_S = 5.0  # how long another process may still redirect a deleted link
NEGATIVE_TTL_S = 2.0  # unknown codes: long enough to absorb scans, short for new aliases
SHARED_TTL_S = 300.0  # the shared cache is told of deletes, so it may keep links longer


class Outcome(enum.Enum):
    REDIRECT = "redirect"
    GONE = "gone"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Resolution:
    outcome: Outcome
    link: Link | None = None


class Resolver:
    def __init__(self, store: LinkStore, cache: LinkCache | None, clock: Clock) -> None:
        self._store = store
        self._cache = cache
        self._clock = clock
        self._lru: OrderedDict[str, tuple[float, Link | None]] = OrderedDict()
        self.hits = 0
        self.lookups = 0

    async def resolve(self, code: str) -> Resolution:
        link = await self._lookup(code)
        if link is None:
            return Resolution(Outcome.UNKNOWN)
        if link.gone(self._clock.now_ms()):
            return Resolution(Outcome.GONE, link)
        if link.max_visits is not None and not await self._store.take_visit(code):
            return Resolution(Outcome.GONE, link)
        return Resolution(Outcome.REDIRECT, link)

    async def _lookup(self, code: str) -> Link | None:
        self.lookups += 1
        now = self._clock.monotonic()
        cached = self._lru.get(code)
        if cached is not None and cached[0] > now:
            self.hits += 1
            self._lru.move_to_end(code)
            return cached[1]
        link: Link | None
        shared = await self._cache.get(code) if self._cache is not None else None
        if shared is False:
            link = None
        elif isinstance(shared, Link):
            link = shared
        else:
            link = await self._store.get(code)
            if self._cache is not None:
                await self._cache.put(code, link, SHARED_TTL_S if link else NEGATIVE_TTL_S)
        self._remember(code, link, now)
        return link

    def _remember(self, code: str, link: Link | None, now: float) -> None:
        self._lru[code] = (now + (POSITIVE_TTL_S if link else NEGATIVE_TTL_S), link)
        self._lru.move_to_end(code)
        if len(self._lru) > LRU_ENTRIES:
            self._lru.popitem(last=False)

    async def forget(self, code: str) -> None:
        """Drop ``code`` from both caches (after a create or delete through this process)."""
        self._lru.pop(code, None)
        if self._cache is not None:
            await self._cache.forget(code)
