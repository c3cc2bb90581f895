"""The redirect resolver over each backend's real stores: a slow lookup racing a delete must
never bring the deleted link back, and a shared cache outage must not break redirects."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import pytest

from fanout.accounts.model import UserId
from fanout.core.clock import ManualClock, SystemClock
from fanout.core.errors import Unavailable
from fanout.links.model import Link
from fanout.links.resolver import REFRESH_GATHER_S, Outcome, Resolution, Resolver
from tests.contract.conftest import LinksUnderTest

OWNER = UserId(2**60 + 5)


class PausingStore:
    """The real store, with a gate before ``get`` answers (to interleave a delete)."""

    def __init__(self, store: object) -> None:
        self._store = store
        self.gate: asyncio.Event | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def get(self, code: str) -> Link | None:
        found = await self._store.get(code)  # type: ignore[attr-defined]
        if self.gate is not None:
            await self.gate.wait()
        return found  # type: ignore[no-any-return]


async def test_a_slow_lookup_cannot_resurrect_a_deleted_link(links: LinksUnderTest) -> None:
    clock = SystemClock()
    link = Link("racey", OWNER, "https://example.com", 302, clock.now_ms(), None)
    await links.links.create(link)
    store = PausingStore(links.links)
    resolver = Resolver(store, links.cache, clock)  # type: ignore[arg-type]
    store.gate = asyncio.Event()
    slow = asyncio.create_task(resolver.resolve("racey"))  # reads the live link, then waits
    await asyncio.sleep(0.05)
    await links.links.delete("racey")
    await resolver.deleted(dataclasses.replace(link, deleted=True))
    store.gate.set()
    await slow  # this one in-flight answer may be either; what it caches must not be live
    store.gate = None
    assert (await resolver.resolve("racey")).outcome is Outcome.GONE
    fresh = Resolver(links.links, links.cache, clock)  # another process, empty LRU
    assert (await fresh.resolve("racey")).outcome is Outcome.GONE


async def test_redirects_survive_a_shared_cache_outage(links: LinksUnderTest) -> None:
    class Down:
        async def get(self, code: str) -> object:
            raise Unavailable("cache down")

        async def put(self, *args: object, **kwargs: object) -> None:
            raise Unavailable("cache down")

        async def forget(self, code: str) -> None:
            raise Unavailable("cache down")

    clock = SystemClock()
    await links.links.create(Link("alive", OWNER, "https://example.com", 302, clock.now_ms(),
                                  None))  # fmt: skip
    resolver = Resolver(links.links, Down(), clock)  # type: ignore[arg-type]
    assert (await resolver.resolve("alive")).outcome is Outcome.REDIRECT
    assert (await resolver.resolve("nope")).outcome is Outcome.UNKNOWN
    await resolver.forget("alive")


async def test_watchers_hear_of_every_entry_the_resolver_stops_trusting(
    links: LinksUnderTest,
) -> None:
    """What callers keep of an entry (``watch``) must go with it: deleted here, invalidated,
    forgotten whole, replaced; and ``trusted_until`` vouches only for the very object cached."""
    clock = ManualClock(start_ms=1_000_000)
    link = Link("watched", OWNER, "https://example.com/w", 302, clock.now_ms(), None)
    await links.links.create(link)
    resolver = Resolver(links.links, links.cache, clock, positive_ttl_s=60)
    dropped: list[str | None] = []
    resolver.watch(dropped.append)
    resolver.watch(dropped.append)  # once is enough
    assert resolver.trusted_until(link) == 0.0  # nothing cached yet
    cached = (await resolver.resolve("watched")).link
    assert cached is not None and resolver.trusted_until(cached) == clock.monotonic() + 60
    assert resolver.trusted_until(dataclasses.replace(cached)) == 0.0  # an equal, other object
    resolver.invalidate("watched")
    assert dropped == ["watched"] and resolver.trusted_until(cached) == 0.0
    await resolver.resolve("watched")
    await resolver.deleted(dataclasses.replace(link, deleted=True))  # drops the live one
    await resolver.resolve("watched")  # answered from the deleted link cached: nothing dropped
    resolver.invalidate_all()
    assert dropped == ["watched", "watched", None]
    resolver.unwatch(dropped.append)
    await resolver.resolve("watched")
    resolver.invalidate("watched")
    assert dropped == ["watched", "watched", None]


async def test_cached_answers_only_what_this_process_holds(links: LinksUnderTest) -> None:
    """``resolve_now`` (the HTTP protocol's synchronous path) answers from the LRU alone, as
    ``resolve`` would, and leaves misses, stale entries and limited visits to ``resolve``."""
    clock = ManualClock(start_ms=1_000_000)
    live = Link("cachedok", OWNER, "https://example.com/a", 302, clock.now_ms(), None)
    limited = Link("cachedlim", OWNER, "https://example.com/b", 302, clock.now_ms(), None, 1)
    timed = Link("cachedexp", OWNER, "https://example.com/c", 302, clock.now_ms(),
                 clock.now_ms() + 10_000)  # fmt: skip
    for link in (live, limited, timed):
        await links.links.create(link)
    resolver = Resolver(links.links, links.cache, clock, positive_ttl_s=60)
    for code in ("cachedok", "cachedlim", "cachedexp", "cachednone"):
        assert resolver.resolve_now(code) is None  # nothing held yet
        await resolver.resolve(code, visit=False)
    lookups, hits = resolver.lookups, resolver.hits
    assert resolver.resolve_now("cachedok") == Resolution(Outcome.REDIRECT, live)
    assert resolver.resolve_now("cachednone") == Resolution(Outcome.UNKNOWN)
    assert resolver.resolve_now("cachedlim") is None  # a visit must be counted by the store
    assert resolver.resolve_now("cachedlim", visit=False) == Resolution(Outcome.REDIRECT, limited)
    assert (resolver.lookups, resolver.hits) == (lookups + 3, hits + 3)
    assert (await resolver.resolve("cachedlim")).outcome is Outcome.REDIRECT  # the one visit
    assert (await resolver.resolve("cachedlim")).outcome is Outcome.GONE
    clock.advance(11)
    assert resolver.resolve_now("cachedexp") == Resolution(Outcome.GONE, timed)  # expired meanwhile
    clock.advance(60)
    assert resolver.resolve_now("cachedok") is None  # past the LRU's lifetime: ask again
    assert (await resolver.resolve("cachedok")).outcome is Outcome.REDIRECT
    assert resolver.resolve_now("cachedok") == Resolution(Outcome.REDIRECT, live)


async def test_a_store_that_reads_without_a_wait_answers_misses_at_once(
    links: LinksUnderTest,
) -> None:
    """Embedded SQLite reads a link on the loop's thread (``get_now``): a miss is answered by
    ``resolve_now`` too, and cached. Stores without it (scaled) leave misses to ``resolve``."""
    clock = ManualClock(start_ms=1_000_000)
    live = Link("nowok", OWNER, "https://example.com/a", 302, clock.now_ms(), None)
    limited = Link("nowlim", OWNER, "https://example.com/b", 302, clock.now_ms(), None, 1)
    for link in (live, limited):
        await links.links.create(link)
    get_now = getattr(links.links, "get_now", None)
    resolver = Resolver(links.links, links.cache, clock, get_now=get_now)
    if get_now is None:
        assert resolver.resolve_now("nowok") is None and resolver.lookups == 0
        return
    assert resolver.resolve_now("nowok") == Resolution(Outcome.REDIRECT, live)
    assert (resolver.lookups, resolver.hits) == (1, 0)
    assert resolver.resolve_now("nowok") == Resolution(Outcome.REDIRECT, live)
    assert (resolver.lookups, resolver.hits) == (2, 1)
    assert resolver.resolve_now("nownone") == Resolution(Outcome.UNKNOWN)
    await links.links.create(Link("nownone", OWNER, "https://example.com/c", 302,
                                  clock.now_ms(), None))  # fmt: skip
    await resolver.forget("nownone")  # as the service does after a create
    assert resolver.resolve_now("nownone") is not None
    assert resolver.resolve_now("nownone").outcome is Outcome.REDIRECT  # type: ignore[union-attr]
    assert resolver.resolve_now("nowlim") is None  # read and cached, but the visit is the store's
    assert (await resolver.resolve("nowlim")).outcome is Outcome.REDIRECT
    assert (await resolver.resolve("nowlim")).outcome is Outcome.GONE


async def _refreshes(resolver: Resolver, at_least: int) -> None:
    """Wait (a bounded while) until the resolver's refresher has read ``at_least`` links."""
    for _ in range(200):
        if resolver.refreshed >= at_least:
            return
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _refreshing(resolver: Resolver) -> AsyncIterator[None]:
    refresher = asyncio.create_task(resolver.refresh_forever())
    try:
        yield
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher


async def test_links_redirecting_near_their_end_are_read_again_in_the_background(
    links: LinksUnderTest,
) -> None:
    """With a shared cache, a live link hit in the last half of its lifetime here is read
    again in the background — from the shared cache, or from the store where the shared cache
    lost it — and trusted for another lifetime; what changed meanwhile is cached as found, and
    what this process dropped is not brought back. Without a shared cache nothing is read."""
    clock = ManualClock(start_ms=1_000_000)
    codes = ("fresh1", "fresh2", "fresh3", "fresh4", "fresh5")
    made = {code: Link(code, OWNER, f"https://example.com/{code}", 302, clock.now_ms(), None)
            for code in codes}  # fmt: skip
    for link in made.values():
        await links.links.create(link)
    resolver = Resolver(links.links, links.cache, clock, positive_ttl_s=60)
    dropped: list[str | None] = []
    resolver.watch(dropped.append)
    cached = {code: (await resolver.resolve(code)).link for code in codes}
    async with _refreshing(resolver):
        clock.advance(20)  # not yet in the last half: nothing is read again
        for code in codes:
            assert resolver.resolve_now(code) is not None
        await asyncio.sleep(REFRESH_GATHER_S * 2)
        assert resolver.refreshed == 0
        clock.advance(20)  # 20 s left of 60: due when hit
        if links.cache is not None:
            deleted = dataclasses.replace(made["fresh2"], deleted=True)
            await links.cache.put("fresh2", deleted, 300)  # as another process's delete does
            await links.cache.forget("fresh3")  # the shared cache's copy ran out
        for code in ("fresh2", "fresh3", "fresh4", "fresh5"):
            assert resolver.resolve_now(code) is not None
        resolver.hit("fresh1", clock.monotonic())  # a kept answer's hit: due as well
        resolver.invalidate("fresh4")  # another process's delete, heard here meanwhile
        await _refreshes(resolver, 4)
        clock.advance(30)  # past the first lifetime
        if links.cache is None:
            assert resolver.refreshed == 0
            assert all(resolver.resolve_now(code) is None for code in codes)  # missed: read
            return
        assert resolver.refreshed == 4  # all but fresh4
        assert resolver.resolve_now("fresh1") == Resolution(Outcome.REDIRECT, cached["fresh1"])
        first = cached["fresh1"]
        assert first is not None  # the very object, trusted 60 s from the read (20 s ago)
        assert resolver.trusted_until(first) == clock.monotonic() - 30 + 60
        gone = resolver.resolve_now("fresh2")
        assert gone is not None and gone.outcome is Outcome.GONE
        assert resolver.resolve_now("fresh3") == Resolution(Outcome.REDIRECT, made["fresh3"])
        assert await links.cache.get("fresh3") == made["fresh3"]  # read from the store, filled
        assert resolver.resolve_now("fresh4") is None  # dropped here: not brought back
        assert dropped == ["fresh4", "fresh2"]  # equal links keep their entries' objects


class GatedCache:
    """The real shared cache, with a gate after ``get_many`` has read (to interleave a
    delete with a refresh in flight)."""

    def __init__(self, cache: object) -> None:
        self._cache = cache
        self.read = asyncio.Event()
        self.gate = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._cache, name)

    async def get_many(self, codes: list[str]) -> list[object]:
        found = await self._cache.get_many(codes)  # type: ignore[attr-defined]
        self.read.set()
        await self.gate.wait()
        return found  # type: ignore[no-any-return]


async def test_a_refresh_in_flight_cannot_resurrect_a_deleted_link(
    links: LinksUnderTest,
) -> None:
    if links.cache is None:
        pytest.skip("the embedded backend has no shared cache")
    clock = ManualClock(start_ms=1_000_000)
    link = Link("refrace", OWNER, "https://example.com/r", 302, clock.now_ms(), None)
    await links.links.create(link)
    cache = GatedCache(links.cache)
    resolver = Resolver(links.links, cache, clock, positive_ttl_s=60)  # type: ignore[arg-type]
    await resolver.resolve("refrace")
    clock.advance(40)
    async with _refreshing(resolver):
        assert resolver.resolve_now("refrace") is not None  # due: the refresher reads it live
        await asyncio.wait_for(cache.read.wait(), 5)
        deleted = dataclasses.replace(link, deleted=True)  # deleted by another process …
        await links.links.delete("refrace")
        await links.cache.put("refrace", deleted, 300)
        resolver.invalidate("refrace")  # … and heard of here, while the refresh waits
        assert (await resolver.resolve("refrace")).outcome is Outcome.GONE
        cache.gate.set()
        await _refreshes(resolver, 1)
        await asyncio.sleep(0.05)
    answer = resolver.resolve_now("refrace")
    assert answer is not None and answer.outcome is Outcome.GONE  # the live read is not kept
