"""The fan-out worker's batch handling, against recording fake stores: the order in which a
read batch's records reach the stores, the per-record fallback, and a failed pass."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from fanout.accounts.model import UserId
from fanout.core.clock import ManualClock
from fanout.core.log import LogRecord, Topics
from fanout.feed import events
from fanout.feed.model import Entry, Post, PostId
from fanout.feed.policy import FanoutPolicy, Lane
from fanout.feed.ports import FeedStores
from fanout.feed.worker import FanoutWorker

AUTHOR, OTHER = UserId(1), UserId(2)
FANS = [UserId(10), UserId(11), UserId(12)]


class Fakes:
    """Posts 100..199 exist (authored by AUTHOR, or OTHER for even ids); everyone's followers
    are FANS. ``calls`` records what reached the timelines, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_push_of: set[int] = set()

    async def get_many(self, ids: Sequence[PostId]) -> dict[PostId, Post]:
        return {i: Post(i, OTHER if i % 2 == 0 else AUTHOR, "x", (), 1000 + i, 0, 0)
                for i in ids if 100 <= i < 200}  # fmt: skip

    async def fanout_targets_many(
        self, starts: Sequence[tuple[UserId, UserId | None]], limit: int, since: int
    ) -> list[list[UserId]]:
        return [[f for f in FANS if after is None or f > after][:limit] for _, after in starts]

    async def fanout_targets(
        self, author: UserId, after: UserId | None, limit: int, since: int
    ) -> list[UserId]:
        (targets,) = await self.fanout_targets_many([(author, after)], limit, since)
        return targets

    async def follower_count(self, user: UserId) -> int:
        return len(FANS)

    async def push_many(self, pushes: Sequence[tuple[Entry, Sequence[UserId]]]) -> None:
        posts = sorted(entry.post_id for entry, _ in pushes)
        if self.fail_push_of & set(posts):
            self.calls.append(("failed", posts))
            raise RuntimeError(f"cannot push {posts}")
        self.calls.append(("push", posts))

    async def remove_everywhere(self, post_id: PostId, owners: Sequence[UserId]) -> None:
        self.calls.append(("purge", post_id))


def worker(fakes: Fakes) -> FanoutWorker:
    stores = FeedStores(posts=cast(Any, fakes), follows=cast(Any, fakes),
                        timelines=cast(Any, fakes), snapshots=cast(Any, None))  # fmt: skip
    return FanoutWorker(stores, FanoutPolicy("hybrid", 10**6, 10**7), ManualClock(0))


def record(offset: int, event: events.FeedEvent) -> LogRecord:
    return LogRecord(Topics.FEED_POSTS, 0, str(offset), "1", events.encode(event), 1)


def created(post_id: int) -> events.PostCreated:
    return events.PostCreated(post_id, AUTHOR, 1000 + post_id, Lane.NOW)


async def test_a_batch_fans_out_the_posts_before_a_delete_and_after_it_in_that_order() -> None:
    fakes = Fakes()
    batch = [record(1, created(101)), record(2, created(103)),
             record(3, events.PostDeleted(101, AUTHOR)), record(4, created(105))]  # fmt: skip
    await worker(fakes).handle_batch(batch)
    assert fakes.calls == [("push", [101, 103]), ("purge", 101), ("push", [105])]


async def test_one_record_at_a_time_still_fans_out_and_purges() -> None:
    fakes = Fakes()
    fan_out = worker(fakes)
    await fan_out.handle(record(1, created(101)))
    await fan_out.handle(record(2, events.PostDeleted(101, AUTHOR)))
    await fan_out.handle(record(3, created(999)))  # no such post: nothing to push
    assert fakes.calls == [("push", [101]), ("purge", 101)]


async def test_a_failed_pass_is_retried_with_each_callers_posts_alone() -> None:
    fakes = Fakes()
    fan_out = worker(fakes)
    fakes.fail_push_of = {103}
    ok, bad = [record(1, created(101))], [record(2, created(103))]
    results = await asyncio.gather(fan_out.handle_batch(ok), fan_out.handle_batch(bad),
                                   return_exceptions=True)  # fmt: skip
    assert results[0] is None and isinstance(results[1], RuntimeError)
    assert fakes.calls[0] == ("failed", [101, 103])  # the two batches shared a pass
    assert ("push", [101]) in fakes.calls[1:]  # the good caller's post went out on its own
