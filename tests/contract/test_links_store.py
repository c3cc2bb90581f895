"""Contract of LinkStore (and LinkCache where the backend has one)."""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

import pytest

from fanout.accounts.model import UserId
from fanout.core.errors import Conflict, Invalid
from fanout.links.model import Link
from tests.contract.conftest import LinksUnderTest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

OWNER, OTHER = UserId(2**60 + 1), UserId(2**60 + 2)
T0 = 1_767_225_600_000


def link(code: str, owner: UserId = OWNER, url: str = "https://example.com/a", ms: int = T0,
         **extra: object) -> Link:  # fmt: skip
    return Link(code, owner, url, 302, ms, T0 + 10**9, **extra)  # type: ignore[arg-type]


async def test_leased_blocks_never_overlap(links: LinksUnderTest) -> None:
    starts = await asyncio.gather(*(links.links.lease_block(100) for _ in range(20)))
    ranges = sorted((s, s + 100) for s in starts)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ranges))
    assert await links.links.lease_block(5) >= ranges[-1][1]


async def test_create_get_and_codes_are_unique_even_when_deleted(links: LinksUnderTest) -> None:
    made = link("Abc123x", max_visits=None)
    await links.links.create(made)
    assert await links.links.get("Abc123x") == made
    assert await links.links.get("abc123x") is None  # codes are case-sensitive
    with pytest.raises(Conflict):
        await links.links.create(link("Abc123x", owner=OTHER))
    assert await links.links.delete("Abc123x")
    assert not await links.links.delete("Abc123x")
    assert not await links.links.delete("nope")
    gone = await links.links.get("Abc123x")
    assert gone is not None and gone.deleted
    with pytest.raises(Conflict):
        await links.links.create(link("Abc123x"))


async def test_reuse_finds_the_newest_live_link_of_that_owner(links: LinksUnderTest) -> None:
    url = "https://example.com/reuse"
    await links.links.create(link("r1", url=url, ms=T0))
    await links.links.create(link("r2", url=url, ms=T0 + 5))
    await links.links.create(link("r3", url=url, ms=T0 + 9, owner=OTHER))
    found = await links.links.find_for_reuse(OWNER, url)
    assert found is not None and found.code == "r2"
    await links.links.delete("r2")
    found = await links.links.find_for_reuse(OWNER, url)
    assert found is not None and found.code == "r1"
    assert await links.links.find_for_reuse(OWNER, url + "/other") is None


async def test_owner_lists_page_newest_first_without_deleted(links: LinksUnderTest) -> None:
    for i in range(7):
        await links.links.create(link(f"code{i}", ms=T0 + i // 2))  # ties on time
    await links.links.create(link("theirs", owner=OTHER))
    await links.links.delete("code3")
    seen: list[str] = []
    before = None
    while page := await links.links.by_owner(OWNER, before, 2):
        seen += [x.code for x in page]
        before = (page[-1].created_ms, page[-1].code)
    expected = sorted(((T0 + i // 2, f"code{i}") for i in range(7) if i != 3), reverse=True)
    assert seen == [code for _, code in expected]


async def test_visit_limits_are_exact_under_concurrency(links: LinksUnderTest) -> None:
    await links.links.create(link("limited", max_visits=3))
    taken = await asyncio.gather(*(links.links.take_visit("limited") for _ in range(10)))
    assert sum(taken) == 3
    assert not await links.links.take_visit("limited")


@pytest.fixture(params=[False, True], ids=["one-server", "cluster-calls"])
async def cache(links: LinksUnderTest, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The backend's shared cache, and one making the calls it makes on a Redis Cluster (a
    command per code) against the same server."""
    if links.cache is None:
        pytest.skip("the embedded backend has no shared cache")
    if not request.param:
        yield links.cache
        return
    from fanout.storage.redis.links import RedisLinkCache

    yield RedisLinkCache(links.redis, cluster=True)


async def test_shared_cache_round_trips_and_forgets(cache: Any) -> None:
    made = link("cached1", max_visits=4)
    assert await cache.get("cached1") is None
    await cache.put("cached1", made, 60)
    assert await cache.get("cached1") == made
    await cache.put("missing", None, 60)
    assert await cache.get("missing") is False
    await cache.forget("cached1")
    assert await cache.get("cached1") is None
    await cache.put("short", made, 0.2)
    await asyncio.sleep(0.4)
    assert await cache.get("short") is None


async def test_concurrent_gets_each_get_their_own_link(links: LinksUnderTest) -> None:
    """Gets made together (PostgreSQL joins them into one query) answer each for its code."""
    made = [link(f"many{n}", url=f"https://example.com/{n}") for n in range(30)]
    for one in made:
        await links.links.create(one)
    codes = [f"many{n}" for n in range(30)] + ["MANY1", "none", "many1"]
    found = await asyncio.gather(*(links.links.get(code) for code in codes))
    assert found == [*made, None, None, made[1]]


async def test_concurrent_cache_calls_each_keep_their_own_entry(cache: Any) -> None:
    """Puts and gets made together (joined into one call) act as if made one by one."""
    made = [link(f"c{n}", url=f"https://example.com/{n}") for n in range(30)]
    await asyncio.gather(*(cache.put(m.code, m, 60) for m in made),
                         cache.put("gone", None, 60))  # fmt: skip
    fill = link("c0", url="https://example.com/fill")
    await asyncio.gather(*(cache.put(m.code, fill, 60, replace=False) for m in made[:5]))
    codes = ["gone", "nope", *(m.code for m in made)]
    got = await asyncio.gather(*(cache.get(code) for code in codes))
    assert got == [False, None, *made]  # a fill (replace=False) overwrote nothing
    assert await cache.get_many(codes) == got  # the same, in one call
    assert await cache.get_many([]) == []


async def test_a_forget_lands_after_the_fills_made_before_it(cache: Any) -> None:
    """A create's forget must not be overtaken by a "no such code" fill decided before it."""
    for n in range(5):
        code = f"new{n}"
        await asyncio.gather(cache.put(code, None, 60, replace=False),
                             cache.forget(code))  # fmt: skip
        assert await cache.get(code) is None


async def test_a_code_the_store_refuses_fails_no_other_get(links: LinksUnderTest) -> None:
    made = [link(f"ok{n}") for n in range(5)]
    for one in made:
        await links.links.create(one)
    codes = ["ok0", "ok1", "bad\x00code", "ok2", "ok3", "ok4"]
    found = await asyncio.gather(*(links.links.get(c) for c in codes), return_exceptions=True)
    assert found[2] is None or isinstance(found[2], Invalid)  # PostgreSQL refuses a NUL
    assert [f for n, f in enumerate(found) if n != 2] == made
