"""Hand-built scenarios for the feed's delicate paths, on every backend.

Each one arranges the exact state where a shortcut would lose a post: a truncated rebuild or
backfill on top of older entries, authors moving between tiers, idle followers.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fanout.accounts.model import UserId
from fanout.core.clock import ManualClock
from fanout.feed.model import PostId
from fanout.feed.policy import FanoutPolicy
from tests.feedkit import FeedKit, feed_kit

CAP = 4
_bases = itertools.count(1)


@pytest.fixture
async def kit(feed_backend: dict[str, str], tmp_path: Path) -> AsyncIterator[FeedKit]:
    policy = FanoutPolicy("hybrid", low_priority_from=3, pull_from=5)
    async with feed_kit(feed_backend, tmp_path, policy, ManualClock(), cap=CAP,
                        worker_id=500 + next(_bases) % 400) as made:  # fmt: skip
        yield made


def users(n: int) -> list[UserId]:
    base = 2**61 + next(_bases) * 100
    return [UserId(base + i) for i in range(n)]


async def posts_by(kit: FeedKit, author: UserId, n: int) -> list[int]:
    made = []
    for _ in range(n):
        kit.clock.advance(1)
        made.append((await kit.service.create_post(author, "x", [])).id)
    return made


async def read_all(kit: FeedKit, viewer: UserId, limit: int = 2) -> list[int]:
    seen: list[int] = []
    cursor = None
    while True:
        page = await kit.reader.read(viewer, cursor, limit, "chronological")
        seen += [p.id for p in page.posts]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


async def test_a_truncated_rebuild_on_top_of_old_entries_skips_nothing(kit: FeedKit) -> None:
    viewer, a, b = users(3)
    await kit.service.follow(viewer, a)
    await kit.service.follow(viewer, b)
    old = await posts_by(kit, a, 1)
    await kit.settle()
    assert await read_all(kit, viewer) == old
    await kit.settle()  # the first read built the timeline; it now holds a's old post
    kit.clock.advance(31 * 86_400)
    newer = await posts_by(kit, b, CAP + 2)  # fan-out skips the idle viewer
    await kit.settle()
    assert await read_all(kit, viewer) == newer[::-1] + old  # stale: answered by pull
    await kit.settle()  # rebuild: only the newest CAP of b fit, above a's old entry
    assert await kit.reader.timeline_ready(viewer)
    assert await read_all(kit, viewer) == newer[::-1] + old


async def test_a_truncated_backfill_on_top_of_old_entries_skips_nothing(kit: FeedKit) -> None:
    viewer, a, b = users(3)
    await kit.service.follow(viewer, a)
    old = await posts_by(kit, a, 1)
    newer = await posts_by(kit, b, CAP + 3)
    await kit.settle()
    await read_all(kit, viewer)
    await kit.settle()  # timeline built: it holds a's post
    await kit.service.follow(viewer, b)  # backfill: only b's newest CAP fit
    assert await read_all(kit, viewer, limit=3) == newer[::-1] + old


async def test_authors_crossing_the_pull_tier_both_ways_lose_nothing(kit: FeedKit) -> None:
    star, *fans = users(7)
    viewer = fans[0]
    await kit.service.follow(viewer, star)
    before = await posts_by(kit, star, 2)  # pushed (1 follower)
    for fan in fans[1:]:
        await kit.service.follow(fan, star)  # 6 followers: pull tier from 5
    pulled = await posts_by(kit, star, 2)
    for fan in fans[1:]:
        await kit.service.unfollow(fan, star)  # back to 1 follower: pushed again
    after = await posts_by(kit, star, 2)
    await kit.settle()
    expected = (before + pulled + after)[::-1]
    assert await read_all(kit, viewer) == expected
    await kit.settle()
    assert await read_all(kit, viewer, limit=1) == expected


async def test_low_lane_posts_arrive_and_deletes_vanish_everywhere(kit: FeedKit) -> None:
    author, *fans = users(5)
    for fan in fans:
        await kit.service.follow(fan, author)  # 4 followers: low lane from 3
    made = await posts_by(kit, author, 3)
    await kit.settle()
    for fan in fans:
        assert await read_all(kit, fan) == made[::-1]
    await kit.settle()
    await kit.service.delete_post(author, made[1])  # type: ignore[arg-type]
    for fan in fans:
        assert await read_all(kit, fan) == [made[2], made[0]]
    await kit.settle()  # the purge removed it from the timelines too
    for fan in fans:
        page = await kit.stores.timelines.page(fan, None, 10)
        assert made[1] not in [e.post_id for e in page]


async def test_an_unfollow_purge_racing_a_refollow_loses_nothing(kit: FeedKit) -> None:
    viewer, bob, carol = users(3)
    await kit.service.follow(viewer, carol)
    older = await posts_by(kit, carol, 1)
    await kit.service.follow(viewer, bob)
    bobs = await posts_by(kit, bob, 3)
    await kit.settle()
    await read_all(kit, viewer)
    await kit.settle()  # timeline built
    await kit.service.unfollow(viewer, bob)
    await kit.service.follow(viewer, bob)  # backfills bob's posts again
    # The purge of the unfollow checked "not following" before the re-follow and removes
    # bob's posts only now, after the backfill: the interleaving the worker must repair.
    await kit.stores.timelines.remove(viewer, [PostId(p) for p in bobs])
    await kit.settle()
    assert await read_all(kit, viewer) == bobs[::-1] + older
