"""The PostgreSQL transactional outbox and its relay to the Redis Streams log (scaled mode)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from bench.servers import free_port
from fanout.core.clock import SystemClock
from fanout.core.log import Publish
from fanout.storage.postgres.engine import PgConnection, PostgresEngine
from fanout.storage.postgres.outbox import (
    RELAY_LOCK_KEY,
    STOP_GRACE_S,
    OutboxRelay,
    PostgresOutbox,
)
from fanout.storage.redis.connection import connect
from fanout.storage.redis.log import RedisLog

PARTITIONS = 4
WAKE_S = 0.5  # an idle relay publishes a new event within this, by NOTIFY alone
SLOW_POLL_S = 30.0  # polling this rarely cannot explain a prompt delivery
DEADLINE_S = 10.0  # waits on something that should happen much sooner fail after this


@dataclass
class Env:
    url: str
    engine: PostgresEngine
    log: RedisLog
    outbox: PostgresOutbox


@pytest.fixture
async def env(fresh_database_url: str, clean_redis_url: str) -> AsyncIterator[Env]:
    engine = PostgresEngine(fresh_database_url)
    await engine.start()
    client = await connect(clean_redis_url)
    yield Env(fresh_database_url, engine, RedisLog(client, SystemClock(), partitions=PARTITIONS),
              PostgresOutbox())  # fmt: skip
    await client.aclose()
    await engine.close()


async def append(env: Env, events: Sequence[Publish], engine: PostgresEngine | None = None) -> None:
    async def write(conn: PgConnection) -> None:
        await env.outbox.append(conn, events)

    await (engine or env.engine).transaction(write)


async def read_all(log: RedisLog, topics: Sequence[str]) -> dict[tuple[str, str], list[bytes]]:
    """Every record of ``topics`` (read and acked by a fresh group), by (topic, key), in order."""
    seen: dict[tuple[str, str], list[bytes]] = collections.defaultdict(list)
    for topic in topics:
        for partition in range(PARTITIONS):
            while batch := await log.read(topic, "inspect", "c", partition, 1000):
                for record in batch:
                    seen[(topic, record.key)].append(record.payload)
                await log.ack("inspect", batch)
    return dict(seen)


async def outbox_rows(engine: PostgresEngine) -> int:
    rows: int = await engine.fetchval("SELECT count(*) FROM log_outbox")
    return rows


async def test_rolled_back_events_are_never_published(env: Env) -> None:
    async def write_then_fail(conn: PgConnection) -> None:
        await env.outbox.append(conn, [Publish("t.a", "k", b"lost")])
        raise RuntimeError("the write fails after its events were appended")

    with pytest.raises(RuntimeError):
        await env.engine.transaction(write_then_fail)
    await append(env, [])  # no events: nothing stored either
    relay = OutboxRelay(env.engine, env.log)
    assert await relay.run_once() == 0
    assert await outbox_rows(env.engine) == 0
    assert await read_all(env.log, ["t.a"]) == {}


async def test_committed_events_are_published_once_in_order(env: Env) -> None:
    expected: dict[tuple[str, str], list[bytes]] = collections.defaultdict(list)
    for tx in range(20):
        events = [Publish(f"t.{'ab'[i % 2]}", f"k{(tx + i) % 3}", f"{tx}:{i}".encode())
                  for i in range(tx % 4 + 1)]  # fmt: skip
        await append(env, events)
        for event in events:
            expected[(event.topic, event.key)].append(event.payload)
    relay = OutboxRelay(env.engine, env.log, batch=7)  # several passes, topics interleaved
    moved = []
    while n := await relay.run_once():
        moved.append(n)
    total = sum(len(v) for v in expected.values())
    assert sum(moved) == total and max(moved) == 7
    assert await outbox_rows(env.engine) == 0
    assert await read_all(env.log, ["t.a", "t.b"]) == expected
    assert await relay.run_once() == 0
    assert await read_all(env.log, ["t.a", "t.b"]) == {}  # nothing published twice


async def test_a_relay_moves_nothing_while_another_holds_the_lock(env: Env) -> None:
    await append(env, [Publish("t.a", "k", b"x")])
    held, release = asyncio.Event(), asyncio.Event()

    async def hold_relay_lock(conn: PgConnection) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", RELAY_LOCK_KEY)
        held.set()
        await release.wait()

    holder = asyncio.create_task(env.engine.transaction(hold_relay_lock))
    await asyncio.wait_for(held.wait(), DEADLINE_S)
    relay = OutboxRelay(env.engine, env.log)
    assert await relay.run_once() == 0
    release.set()
    await holder
    assert await relay.run_once() == 1


async def test_concurrent_relays_deliver_each_event_once_in_key_order(
    env: Env, clean_redis_url: str
) -> None:
    keys, per_key, chunk = [f"author-{n}" for n in range(5)], 400, 8  # 2 000 events
    other_engine = PostgresEngine(env.url)  # a second process, in effect
    await other_engine.start()
    other_client = await connect(clean_redis_url)
    other_log = RedisLog(other_client, SystemClock(), partitions=PARTITIONS)
    relays = [
        OutboxRelay(env.engine, env.log, batch=37),
        OutboxRelay(other_engine, other_log, batch=37),
    ]
    stop = asyncio.Event()
    running = [asyncio.create_task(relay.run_forever(stop)) for relay in relays]

    async def writer(key: str) -> None:  # one writer per key, as one author posts in order
        topic = "t.a" if key < "author-3" else "t.b"
        for start in range(0, per_key, chunk):
            await append(env, [Publish(topic, key, str(i).encode())
                               for i in range(start, start + chunk)])  # fmt: skip

    try:
        await asyncio.gather(*(writer(key) for key in keys))
        deadline = time.monotonic() + DEADLINE_S
        while await outbox_rows(env.engine) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await outbox_rows(env.engine) == 0
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*running), DEADLINE_S)
        await other_client.aclose()
        await other_engine.close()
    seen = await read_all(env.log, ["t.a", "t.b"])
    assert sorted(seen) == sorted(("t.a" if k < "author-3" else "t.b", k) for k in keys)
    for (_, key), payloads in seen.items():
        assert [int(p) for p in payloads] == list(range(per_key)), key


async def listening(engine: PostgresEngine) -> int:
    """Backends whose last statement was our LISTEN (the relay's listener connection)."""
    count: int = await engine.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
    )
    return count


async def test_an_idle_relay_wakes_on_notify_and_stops_promptly(env: Env) -> None:
    relay = OutboxRelay(env.engine, env.log, poll_s=SLOW_POLL_S)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run_forever(stop))
    deadline = time.monotonic() + DEADLINE_S
    while not await listening(env.engine):
        assert time.monotonic() < deadline, "the relay never listened"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # the relay's first pass (empty) is over: it idles now
    for n in range(2):  # twice: the wake-up is re-armed after a pass
        appended = time.monotonic()
        await append(env, [Publish("t.a", "k", f"ping-{n}".encode())])
        while not (seen := await read_all(env.log, ["t.a"])):
            assert time.monotonic() - appended < WAKE_S, "NOTIFY did not wake the relay"
            await asyncio.sleep(0.01)
        assert seen == {("t.a", "k"): [f"ping-{n}".encode()]}
    stopped = time.monotonic()
    stop.set()
    await asyncio.wait_for(running, DEADLINE_S)
    assert time.monotonic() - stopped < WAKE_S
    deadline = time.monotonic() + DEADLINE_S
    while await listening(env.engine):  # the listener connection was closed
        assert time.monotonic() < deadline, "the listener connection was left open"
        await asyncio.sleep(0.02)


async def test_the_relay_survives_a_postgres_outage(env: Env) -> None:
    await append(env, [Publish("t.a", "k", b"before")])
    await env.engine.close()  # to the relay, PostgreSQL is now unreachable
    stop = asyncio.Event()
    running = asyncio.create_task(OutboxRelay(env.engine, env.log, poll_s=0.05).run_forever(stop))
    try:
        await asyncio.sleep(0.5)
        assert not running.done()
        await env.engine.start()
        deadline = time.monotonic() + DEADLINE_S
        while not (seen := await read_all(env.log, ["t.a"])):
            assert time.monotonic() < deadline, "the relay did not resume"
            await asyncio.sleep(0.05)
        assert seen == {("t.a", "k"): [b"before"]}
    finally:
        stop.set()
        await asyncio.wait_for(running, DEADLINE_S)


async def test_the_relay_survives_a_redis_outage_and_keeps_the_rows(env: Env) -> None:
    await append(env, [Publish("t.a", f"k{n}", b"kept") for n in range(3)])
    nowhere = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5)  # nothing listens
    down = RedisLog(nowhere, SystemClock(), partitions=PARTITIONS)
    stop = asyncio.Event()
    running = asyncio.create_task(OutboxRelay(env.engine, down, poll_s=0.05).run_forever(stop))
    try:
        await asyncio.sleep(1.0)
        assert not running.done()
        assert await outbox_rows(env.engine) == 3
    finally:
        stopped = time.monotonic()
        stop.set()
        await asyncio.wait_for(running, DEADLINE_S)
        await nowhere.aclose()
    assert time.monotonic() - stopped < STOP_GRACE_S + WAKE_S  # a stuck pass is cut short
    assert await OutboxRelay(env.engine, env.log).run_once() == 3
    assert await read_all(env.log, ["t.a"]) == {("t.a", f"k{n}"): [b"kept"] for n in range(3)}


async def test_a_quiet_append_wakes_nobody_and_is_relayed_by_the_next_poll(env: Env) -> None:
    poll_s = 1.0
    relay = OutboxRelay(env.engine, env.log, poll_s=poll_s)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run_forever(stop))
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not await listening(env.engine):
            assert time.monotonic() < deadline, "the relay never listened"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # the relay's first pass (empty) is over: it idles now

        async def write(conn: PgConnection) -> None:
            await env.outbox.append(conn, [Publish("t.q", "k", b"quiet")], wake=False)

        await env.engine.transaction(write)
        appended = time.monotonic()
        await asyncio.sleep(0.2)
        assert await read_all(env.log, ["t.q"]) == {}  # not woken: waits for the poll
        while not (seen := await read_all(env.log, ["t.q"])):
            assert time.monotonic() - appended < poll_s + WAKE_S, "the poll did not relay it"
            await asyncio.sleep(0.02)
        assert seen == {("t.q", "k"): [b"quiet"]}
    finally:
        stop.set()
        await asyncio.wait_for(running, DEADLINE_S)
