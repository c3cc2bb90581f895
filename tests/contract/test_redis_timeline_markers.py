"""Redis timeline markers: 65 bytes, so a timeline is a skiplist from its first entry; markers
written before (``b""`` for no floor, ``id + b"\\x00"`` for a floor) are still understood."""

from __future__ import annotations

import struct

import redis.asyncio as aioredis

from fanout.accounts.model import UserId
from fanout.feed.model import Entry, Position, PostId
from fanout.storage.redis import keys
from fanout.storage.redis.connection import connect
from fanout.storage.redis.timelines import RedisTimelineStore

ID = struct.Struct(">Q")
T0 = 1_767_225_600_000


def entry(n: int) -> Entry:
    return Entry(PostId(1000 + n), T0 + n)


async def test_a_pushed_timeline_is_a_skiplist_from_its_first_entry(clean_redis_url: str) -> None:
    client: aioredis.Redis = await connect(clean_redis_url)
    try:
        store = RedisTimelineStore(client, cap=800)
        await store.push(entry(1), [UserId(7)])
        key = keys.timeline(7)
        assert await client.object("encoding", key) == b"skiplist"
        assert await client.zcard(key) == 2  # the entry and the "no floor yet" marker
        await store.add(UserId(8), [entry(1)], floor=entry(0).position)
        assert await client.object("encoding", keys.timeline(8)) == b"skiplist"
    finally:
        await client.aclose()


async def test_markers_written_before_are_still_read(clean_redis_url: str) -> None:
    client: aioredis.Redis = await connect(clean_redis_url)
    try:
        store = RedisTimelineStore(client, cap=3)
        old_new, old_floored = UserId(1), UserId(2)
        members = {ID.pack(e.post_id): e.score_ms for e in map(entry, (1, 2))}
        await client.zadd(keys.timeline(old_new), {b"": float("-inf"), **members})
        floor = entry(5)
        stray = entry(4)  # pushed at or below the floor after it was raised: never shown
        await client.zadd(keys.timeline(old_floored), {
            ID.pack(floor.post_id) + b"\x00": floor.score_ms,
            ID.pack(stray.post_id): stray.score_ms,
            **{ID.pack(e.post_id): e.score_ms for e in map(entry, (6, 7))},
        })  # fmt: skip
        assert await store.floor(old_new) is None
        assert await store.page(old_new, None, 10) == [entry(2), entry(1)]
        assert await store.size(old_new) == 2
        assert await store.floor(old_floored) == floor.position
        assert await store.page(old_floored, None, 10) == [entry(7), entry(6)]
        assert await store.size(old_floored) == 2
        for n in range(8, 13):  # past cap + slack: trims, and the floor moves up
            await store.push_many([(entry(n), [old_new, old_floored])])
        for owner in (old_new, old_floored):
            kept = await store.page(owner, None, 10)
            assert kept[:3] == [entry(12), entry(11), entry(10)] and len(kept) <= 4
            floor_now = await store.floor(owner)
            assert floor_now is not None and floor_now < kept[-1].position
        await store.add(old_new, [], floor=Position(T0 + 11, 1011))  # raise past old format
        assert await store.page(old_new, None, 10) == [entry(12)]
    finally:
        await client.aclose()
