"""Snowflake worker-id leases in Redis (fanout.storage.redis.ids); Redis only by nature."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from fanout.core.errors import Unavailable
from fanout.core.ids import MAX_WORKER_ID
from fanout.storage.redis import keys
from fanout.storage.redis.connection import connect
from fanout.storage.redis.ids import WorkerIdLease


@pytest.fixture
async def client(clean_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = await connect(clean_redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.parametrize("prefer", [None, 0], ids=["spread", "all-start-at-0"])
async def test_concurrent_leases_get_distinct_ids(
    client: aioredis.Redis, prefer: int | None
) -> None:
    leases = [WorkerIdLease(client, prefer=prefer) for _ in range(50)]
    ids = await asyncio.gather(*(lease.acquire() for lease in leases))
    assert len(set(ids)) == 50
    assert all(0 <= i <= MAX_WORKER_ID for i in ids)
    if prefer == 0:
        assert sorted(ids) == list(range(50))  # every contender moved on to the next free id
    for lease, worker in zip(leases, ids, strict=True):
        assert lease.worker_id == worker
        assert await client.get(keys.worker_id(worker)) == lease.owner.encode()


async def test_a_released_id_can_be_leased_again(client: aioredis.Redis) -> None:
    first = WorkerIdLease(client, prefer=7)
    assert await first.acquire() == 7
    assert await WorkerIdLease(client, prefer=7).acquire() == 8  # 7 is taken
    await first.release()
    assert first.worker_id is None
    assert await WorkerIdLease(client, prefer=7).acquire() == 7


async def test_renew_fails_once_another_process_took_the_expired_id(
    client: aioredis.Redis,
) -> None:
    paused = WorkerIdLease(client, ttl_ms=100, prefer=5)
    assert await paused.acquire() == 5
    assert await paused.renew()
    await asyncio.sleep(0.15)  # "paused" past its TTL
    heir = WorkerIdLease(client, prefer=5)
    assert await heir.acquire() == 5
    assert not await paused.renew()
    assert paused.worker_id is None
    await paused.release()  # must not free the heir's id
    assert await heir.renew()
    assert await client.get(keys.worker_id(5)) == heir.owner.encode()
    assert await paused.acquire() != 5


async def test_acquire_raises_unavailable_when_every_id_is_taken(client: aioredis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    for worker in range(MAX_WORKER_ID + 1):
        pipe.set(keys.worker_id(worker), "someone-else", px=60_000)
    await pipe.execute()
    with pytest.raises(Unavailable):
        await WorkerIdLease(client).acquire()
