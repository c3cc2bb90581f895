"""Redis timeline markers: short while a timeline is small (Redis keeps it compact), long (65
bytes) past ``SKIPLIST_FROM`` members, which makes it a skiplist; both forms read the same."""

from __future__ import annotations

import struct

import redis.asyncio as aioredis

from fanout.accounts.model import UserId
from fanout.feed.model import Entry, Position, PostId
from fanout.storage.redis import keys
from fanout.storage.redis.connection import connect
from fanout.storage.redis.timeline_scripts import SKIPLIST_FROM
from fanout.storage.redis.timelines import RedisTimelineStore

ID = struct.Struct(">Q")
T0 = 1_767_225_600_000


def entry(n: int) -> Entry:
    return Entry(PostId(1000 + n), T0 + n)


async def test_a_timeline_is_compact_while_small_and_a_skiplist_past_the_threshold(
    clean_redis_url: str,
) -> None:
    client: aioredis.Redis = await connect(clean_redis_url)
    try:
        store = RedisTimelineStore(client, cap=800)
        pushed, added = UserId(7), UserId(8)
        key = keys.timeline(pushed)
        await store.push(entry(0), [pushed])
        assert await client.object("encoding", key) == b"listpack"
        assert await client.zrange(key, 0, 0) == [b""]  # the short "no floor yet" marker
        for n in range(1, SKIPLIST_FROM - 1):
            await store.push(entry(n), [pushed])
        assert await client.zcard(key) == SKIPLIST_FROM  # entries and the marker
        assert await client.object("encoding", key) == b"listpack"
        await store.push(entry(SKIPLIST_FROM - 1), [pushed])  # one member more: the switch
        assert await client.object("encoding", key) == b"skiplist"
        await store.push_many([(entry(n), [pushed]) for n in range(SKIPLIST_FROM, 80)])
        assert await client.object("encoding", key) == b"skiplist"
        assert await client.zrange(key, 0, 0) == [b"\x00" * 65]  # the same marker, long
        assert await client.zcard(key) == 81
        assert await store.size(pushed) == 80 and await store.floor(pushed) is None
        assert await store.page(pushed, None, 2) == [entry(79), entry(78)]
        await store.add(added, [entry(n) for n in range(SKIPLIST_FROM + 1)])
        assert await client.object("encoding", keys.timeline(added)) == b"skiplist"
        assert await store.size(added) == SKIPLIST_FROM + 1
    finally:
        await client.aclose()


async def test_short_markers_raise_trim_and_page_like_long_ones(clean_redis_url: str) -> None:
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
        # add() raising a floor given in the old form: the same floor (long form now), then
        # a higher one; the stray below it goes.
        await store.add(old_floored, [], floor=floor.position)
        assert await store.floor(old_floored) == floor.position
        await store.add(old_floored, [], floor=entry(6).position)
        assert await store.floor(old_floored) == entry(6).position
        assert await store.page(old_floored, None, 10) == [entry(7)]
        assert await client.zcard(keys.timeline(old_floored)) == 2  # entry 7 and the marker
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


async def test_a_big_timeline_with_an_old_floor_marker_keeps_its_floor_when_lengthened(
    clean_redis_url: str,
) -> None:
    client: aioredis.Redis = await connect(clean_redis_url)
    try:
        store = RedisTimelineStore(client, cap=800)
        owner, floor = UserId(3), entry(0)
        await client.zadd(keys.timeline(owner), {
            ID.pack(floor.post_id) + b"\x00": floor.score_ms,  # a floor marker, 9 bytes
            **{ID.pack(e.post_id): e.score_ms for e in map(entry, range(1, SKIPLIST_FROM))},
        })  # fmt: skip
        assert await client.object("encoding", keys.timeline(owner)) == b"listpack"
        await store.push(entry(SKIPLIST_FROM), [owner])  # crosses the threshold
        assert await client.object("encoding", keys.timeline(owner)) == b"skiplist"
        assert await client.zrange(keys.timeline(owner), 0, 0) == [
            ID.pack(floor.post_id) + b"\x00" * 57
        ]
        assert await store.floor(owner) == floor.position
        assert await store.size(owner) == SKIPLIST_FROM
    finally:
        await client.aclose()
