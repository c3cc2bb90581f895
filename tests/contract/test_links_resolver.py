"""The redirect resolver over each backend's real stores: a slow lookup racing a delete must
never bring the deleted link back, and a shared cache outage must not break redirects."""

from __future__ import annotations

import asyncio
import dataclasses

from fanout.accounts.model import UserId
from fanout.core.clock import SystemClock
from fanout.core.errors import Unavailable
from fanout.links.model import Link
from fanout.links.resolver import Outcome, Resolver
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
