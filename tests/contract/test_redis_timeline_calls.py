"""Redis timelines written in cluster-shaped script calls (one hash tag per call) and in
single-server calls (any keys per call, several calls past 512 owners) end up the same. (Both
run on one server here: that a cluster-shaped call keeps to one tag is the unit test's.)"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from fanout.accounts.model import UserId
from fanout.feed.model import Entry, PostId
from fanout.storage.redis.connection import connect
from fanout.storage.redis.timelines import RedisTimelineStore


async def test_cluster_and_single_server_calls_write_the_same_timelines(
    clean_redis_url: str,
) -> None:
    client: aioredis.Redis = await connect(clean_redis_url)
    try:
        owners = [UserId(o) for o in range(1, 1_400)]  # every shard; past one call's 512
        one, cluster = (RedisTimelineStore(client, cap=5, shards=31, cluster=flag)
                        for flag in (False, True))  # fmt: skip
        for post in range(1, 9):  # past the cap: trims run in both shapes
            entry = Entry(PostId(post), 1_000 + post)
            await one.push(entry, owners[:700])
            await cluster.push(entry, owners[700:])
        await one.remove_everywhere(PostId(8), owners[700:])
        await cluster.remove_everywhere(PostId(7), owners[:700])
        first = [e.post_id for e in await one.page(owners[0], None, 10)]
        last = [e.post_id for e in await one.page(owners[-1], None, 10)]
        assert first[0] == 8 and last[0] == 7 and first[1:] == last[1:]
        assert first[1:3] == [6, 5] and len(first) < 7  # trimmed: 8 pushed, the cap is 5
        for owner in owners:
            page = [e.post_id for e in await one.page(owner, None, 10)]
            assert page == (first if owner < 701 else last)
    finally:
        await client.aclose()


async def test_push_many_split_by_keys_entries_and_round_trips_writes_every_entry(
    clean_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny limits: calls of at most 3 timelines and 5 entries, 2 calls a round trip; a
    timeline with more entries than a call holds gets a call of its own, never split."""
    from fanout.storage.redis import timelines

    monkeypatch.setattr(timelines, "MAX_KEYS_PER_CALL", 3)
    monkeypatch.setattr(timelines, "MAX_ENTRIES_PER_CALL", 5)
    monkeypatch.setattr(timelines, "CALLS_PER_ROUND_TRIP", 2)
    client: aioredis.Redis = await connect(clean_redis_url)
    try:
        store = RedisTimelineStore(client, cap=50)
        owners = [UserId(o) for o in range(1, 12)]
        # owner k gets the posts p with p % k == 0: 1 gets all 12, 11 gets one
        posts = [Entry(PostId(p), 1_000 + p) for p in range(1, 13)]
        await store.push_many([(e, [o for o in owners if e.post_id % o == 0]) for e in posts])
        for owner in owners:
            expected = [e for e in reversed(posts) if e.post_id % owner == 0]
            assert await store.page(owner, None, 20) == expected
            assert await store.size(owner) == len(expected)
    finally:
        await client.aclose()
