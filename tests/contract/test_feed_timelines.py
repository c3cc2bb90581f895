"""Contract of TimelineStore and SnapshotStore on every backend (cap = TIMELINE_CAP)."""

from __future__ import annotations

import asyncio

from fanout.accounts.model import UserId
from fanout.feed.model import Entry, Position, PostId
from tests.contract.conftest import TIMELINE_CAP, FeedUnderTest

BASE = 2**60
OWNER = UserId(BASE + 7)
SLACK = max(1, TIMELINE_CAP // 8)


def entry(n: int, ms: int | None = None) -> Entry:
    return Entry(PostId(BASE + n), 1_767_225_600_000 + (n * 10 if ms is None else ms))


async def all_pages(feed: FeedUnderTest, owner: UserId, size: int = 3) -> list[Entry]:
    seen: list[Entry] = []
    before: Position | None = None
    while page := await feed.timelines.page(owner, before, size):
        seen += page
        before = page[-1].position
    return seen


async def test_push_is_idempotent_and_pages_newest_first(feed: FeedUnderTest) -> None:
    owners = [UserId(BASE + i) for i in range(5)]
    for n in (3, 1, 2):
        await feed.timelines.push(entry(n), owners)
    await feed.timelines.push(entry(2), owners)
    for owner in owners:
        assert await all_pages(feed, owner, 2) == [entry(3), entry(2), entry(1)]
        assert await feed.timelines.size(owner) == 3
    assert await feed.timelines.page(UserId(1), None, 10) == []


async def test_equal_scores_are_ordered_by_post_id(feed: FeedUnderTest) -> None:
    same = [entry(n, ms=0) for n in (5, 9, 7, 11, 100)]
    await feed.timelines.add(OWNER, same)
    assert await all_pages(feed, OWNER, 2) == sorted(same, key=lambda e: e.post_id, reverse=True)


async def test_the_cap_trims_the_oldest_and_raises_the_floor(feed: FeedUnderTest) -> None:
    for n in range(1, 3 * TIMELINE_CAP + 1):
        await feed.timelines.push(entry(n), [OWNER])
        assert await feed.timelines.size(OWNER) <= TIMELINE_CAP + SLACK
    kept = await all_pages(feed, OWNER)
    assert len(kept) >= TIMELINE_CAP
    assert kept == [entry(n) for n in range(3 * TIMELINE_CAP, 3 * TIMELINE_CAP - len(kept), -1)]
    floor = await feed.timelines.floor(OWNER)
    assert floor is not None and floor < kept[-1].position
    assert floor == entry(3 * TIMELINE_CAP - len(kept)).position  # the newest one trimmed away
    await feed.timelines.push(entry(0), [OWNER])  # older than the floor: never shown
    assert entry(0) not in await all_pages(feed, OWNER)


def just_below(e: Entry) -> Position:
    return Position(e.score_ms, e.post_id - 1)


async def test_add_with_a_floor_drops_what_is_at_or_below_it(feed: FeedUnderTest) -> None:
    assert await feed.timelines.floor(OWNER) is None
    await feed.timelines.add(OWNER, [entry(1), entry(2), entry(8)])
    await feed.timelines.add(OWNER, [entry(5), entry(6)], floor=just_below(entry(5)))
    assert await all_pages(feed, OWNER) == [entry(8), entry(6), entry(5)]
    assert await feed.timelines.floor(OWNER) == just_below(entry(5))
    await feed.timelines.add(OWNER, [entry(3)], floor=just_below(entry(3)))  # never lowers it
    assert await feed.timelines.floor(OWNER) == just_below(entry(5))
    assert await all_pages(feed, OWNER) == [entry(8), entry(6), entry(5)]
    await feed.timelines.add(OWNER, [entry(4), entry(7)], floor=entry(4).position)
    assert await all_pages(feed, OWNER) == [entry(8), entry(7), entry(6), entry(5)]


async def test_remove_and_remove_everywhere(feed: FeedUnderTest) -> None:
    owners = [UserId(BASE + i) for i in range(3)]
    for n in range(1, 5):
        await feed.timelines.push(entry(n), owners)
    await feed.timelines.remove(owners[0], [PostId(BASE + 1), PostId(BASE + 3), PostId(5)])
    assert await all_pages(feed, owners[0]) == [entry(4), entry(2)]
    await feed.timelines.remove_everywhere(PostId(BASE + 4), owners)
    assert await all_pages(feed, owners[0]) == [entry(2)]
    assert await all_pages(feed, owners[2]) == [entry(3), entry(2), entry(1)]
    assert await feed.timelines.size(owners[2]) == 3


async def test_built_marker(feed: FeedUnderTest) -> None:
    assert await feed.timelines.built_at(OWNER) is None
    await feed.timelines.mark_built(OWNER, 1234)
    assert await feed.timelines.built_at(OWNER) == 1234
    await feed.timelines.mark_built(OWNER, None)
    assert await feed.timelines.built_at(OWNER) is None


async def test_snapshots_round_trip_and_expire(feed: FeedUnderTest) -> None:
    ids = [PostId(BASE + n) for n in (3, 1, 2)]
    await feed.snapshots.put("s1", ids, ttl_s=1)
    assert await feed.snapshots.get("s1") == ids
    assert await feed.snapshots.get("nope") is None
    await feed.snapshots.put("empty", [], ttl_s=60)
    assert await feed.snapshots.get("empty") == []
    await asyncio.sleep(1.2)
    assert await feed.snapshots.get("s1") is None


async def test_push_many_is_each_push_at_once(feed: FeedUnderTest) -> None:
    owners = [UserId(BASE + i) for i in range(6)]
    pushes = [(entry(1), owners[:4]), (entry(3), owners[2:]), (entry(2), owners[1:5])]
    await feed.timelines.push_many([*pushes, (entry(3), owners[:1]), (entry(9), [])])
    await feed.timelines.push_many(pushes)  # again: changes nothing
    for i, owner in enumerate(owners):
        expected = [e for e, reached in [pushes[1], pushes[2], pushes[0]] if owner in reached]
        if i == 0:
            expected = [entry(3), entry(1)]
        assert await all_pages(feed, owner, 2) == expected
        assert await feed.timelines.size(owner) == len(expected)
    await feed.timelines.push_many([])


async def test_push_many_past_the_cap_in_one_call_trims_once(feed: FeedUnderTest) -> None:
    """A timeline new to this push gets more than ``cap + slack`` entries at once: it keeps the
    newest, and its floor is the newest of those trimmed away."""
    many = [entry(n) for n in range(1, 3 * TIMELINE_CAP + 1)]
    await feed.timelines.push_many([(e, [OWNER]) for e in reversed(many)])
    kept = await all_pages(feed, OWNER)
    assert TIMELINE_CAP <= len(kept) <= TIMELINE_CAP + SLACK
    assert kept == many[::-1][: len(kept)]
    assert await feed.timelines.floor(OWNER) == many[-len(kept) - 1].position
    await feed.timelines.push_many([(entry(0), [OWNER]), (entry(10**6), [OWNER])])
    assert (await all_pages(feed, OWNER))[0] == entry(10**6)
    assert entry(0) not in await all_pages(feed, OWNER)  # under the floor: never shown
