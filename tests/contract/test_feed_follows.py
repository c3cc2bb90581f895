"""Contract of FollowStore on every backend."""

from __future__ import annotations

from fanout.accounts.model import UserId
from fanout.core.log import Publish
from fanout.core.partition import partition_for
from fanout.feed.model import Position
from tests.contract.conftest import PARTITIONS, FeedUnderTest

BASE = 2**60
STAR = UserId(BASE)


def user(n: int) -> UserId:
    return UserId(BASE + n)


async def test_follow_is_idempotent_counted_and_evented_once(feed: FeedUnderTest) -> None:
    event = Publish("feed.follows", str(user(1)), b"followed")
    assert await feed.follows.follow(user(1), STAR, 1000, [event])
    assert not await feed.follows.follow(user(1), STAR, 2000, [event])
    assert await feed.follows.is_following(user(1), STAR)
    assert not await feed.follows.is_following(STAR, user(1))
    assert await feed.follows.follower_count(STAR) == 1
    assert await feed.follows.following_count(user(1)) == 1
    assert await feed.follows.unfollow(user(1), STAR, [Publish("feed.follows", str(user(1)),
                                                                b"unfollowed")])  # fmt: skip
    assert not await feed.follows.unfollow(user(1), STAR, [])
    assert await feed.follows.follower_count(STAR) == 0
    assert await feed.follows.following_count(user(1)) == 0
    await feed.flush_events()
    records = await feed.log.read("feed.follows", "x", "c",
                                  partition_for(str(user(1)), PARTITIONS), 10)  # fmt: skip
    assert [r.payload for r in records] == [b"followed", b"unfollowed"]


async def test_lists_page_most_recent_first(feed: FeedUnderTest) -> None:
    for n in range(1, 8):
        await feed.follows.follow(user(n), STAR, 1000 * (n % 4), [])  # ties on time
        await feed.follows.follow(STAR, user(n), 5000 + n, [])
    seen = []
    before: Position | None = None
    while page := await feed.follows.followers(STAR, before, 3):
        seen += page
        before = Position(page[-1].at_ms, page[-1].user_id)
    assert [(f.at_ms, f.user_id) for f in seen] == sorted(
        ((1000 * (n % 4), user(n)) for n in range(1, 8)), reverse=True
    )
    following = await feed.follows.following(STAR, None, 100)
    assert [f.user_id for f in following] == [user(n) for n in range(7, 0, -1)]
    assert await feed.follows.following_ids(STAR) == {user(n) for n in range(1, 8)}
    assert await feed.follows.following_ids(user(99)) == set()


async def test_fanout_targets_page_by_id_and_skip_idle_followers(feed: FeedUnderTest) -> None:
    for n in range(1, 11):
        await feed.follows.follow(user(n), STAR, n, [])
    for n in range(1, 11):
        if n % 3 == 0:
            await feed.follows.touch(user(n), 10_000)  # idle: last seen long ago
        elif n % 3 == 1:
            await feed.follows.touch(user(n), 90_000)
        # n % 3 == 2: never seen, counts as active
    targets = []
    after = None
    while chunk := await feed.follows.fanout_targets(STAR, after, 4, 50_000):
        assert chunk == sorted(chunk)
        targets += chunk
        after = chunk[-1]
    assert targets == [user(n) for n in range(1, 11) if n % 3 != 0]
    everyone = await feed.follows.fanout_targets(STAR, None, 100, 0)
    assert everyone == [user(n) for n in range(1, 11)]


async def test_fanout_targets_many_answers_each_start_as_fanout_targets(
    feed: FeedUnderTest,
) -> None:
    other, nobody = user(50), user(51)
    for n in range(1, 11):
        await feed.follows.follow(user(n), STAR, n, [])
        if n % 2:
            await feed.follows.follow(user(n), other, n, [])
        if n % 3 == 0:
            await feed.follows.touch(user(n), 10_000)  # idle at 50 000
    starts = [(STAR, None), (other, user(3)), (nobody, None), (STAR, user(4)), (STAR, user(10))]

    def users(*ns: int) -> list[UserId]:
        return [user(n) for n in ns]

    expected = {
        (3, 50_000): [users(1, 2, 4), users(5, 7), [], users(5, 7, 8), []],
        (100, 50_000): [users(1, 2, 4, 5, 7, 8, 10), users(5, 7), [], users(5, 7, 8, 10), []],
        (100, 0): [users(*range(1, 11)), users(5, 7, 9), [], users(*range(5, 11)), []],
    }
    for (limit, since), answer in expected.items():
        assert await feed.follows.fanout_targets_many(starts, limit, since) == answer
    assert await feed.follows.fanout_targets_many([], 10, 0) == []


async def test_touch_never_moves_backwards(feed: FeedUnderTest) -> None:
    assert await feed.follows.last_active(user(1)) is None
    await feed.follows.touch(user(1), 5000)
    await feed.follows.touch(user(1), 3000)
    assert await feed.follows.last_active(user(1)) == 5000
    await feed.follows.touch(user(1), 7000)
    assert await feed.follows.last_active(user(1)) == 7000
