"""Contract of the log port (fanout.core.log), on every backend."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from fanout.core.consumer import ConsumerRunner, Subscription
from fanout.core.log import DLQ_SUFFIX, Log, LogRecord
from fanout.core.partition import partition_for
from tests.contract.conftest import PARTITIONS, LogFactory

TOPIC = "test.events"
GROUP = "g1"


async def drain(log, partition: int, consumer: str = "c1", group: str = GROUP) -> list[LogRecord]:
    """Read and ack everything in one partition."""
    seen: list[LogRecord] = []
    while batch := await log.read(TOPIC, group, consumer, partition, 50):
        seen.extend(batch)
        await log.ack(group, batch)
    return seen


async def test_records_keep_their_order_within_a_partition(make_log: LogFactory) -> None:
    log = await make_log()
    keys = [f"k{i % 7}" for i in range(210)]
    for i, key in enumerate(keys):
        await log.publish(TOPIC, key, f"{key}:{i}".encode())
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    total = 0
    for partition in range(PARTITIONS):
        records = await drain(log, partition)
        offsets = [r.offset for r in records]
        assert len(set(offsets)) == len(offsets)
        for record in records:
            assert record.partition == partition == partition_for(record.key, PARTITIONS)
            key, index = record.payload.decode().split(":")
            assert key == record.key
            by_key[key].append(int(index))
        total += len(records)
    assert total == len(keys)
    for key, indexes in by_key.items():
        assert indexes == sorted(indexes), key
        assert len(indexes) == keys.count(key)


async def test_publish_many_keeps_order_and_headers_round_trip(make_log: LogFactory) -> None:
    log = await make_log()
    await log.publish_many(TOPIC, [("same", str(i).encode()) for i in range(30)])
    await log.publish(TOPIC, "same", b"last", {"trace": "abc"})
    records = await drain(log, partition_for("same", PARTITIONS))
    assert [r.payload for r in records] == [str(i).encode() for i in range(30)] + [b"last"]
    assert records[-1].headers == {"trace": "abc"}
    assert all(r.deliveries == 1 for r in records)


async def test_a_new_group_sees_earlier_records(make_log: LogFactory) -> None:
    log = await make_log()
    await log.publish(TOPIC, "a", b"1")
    assert [r.payload for r in await drain(log, partition_for("a", PARTITIONS), group="late")] == [
        b"1"
    ]


async def test_unacked_records_are_redelivered_after_the_consumer_dies(
    make_log: LogFactory,
) -> None:
    first, second = await make_log(), await make_log()
    partition = partition_for("k", PARTITIONS)
    for i in range(5):
        await first.publish(TOPIC, "k", str(i).encode())
    assert await first.acquire(TOPIC, GROUP, "dying", partition, 300)
    got = await first.read(TOPIC, GROUP, "dying", partition, 3)
    await first.ack(GROUP, got[:1])  # handled one, then "crashed" holding two
    assert not await second.acquire(TOPIC, GROUP, "heir", partition, 300)
    await asyncio.sleep(0.45)  # the dead consumer's lease runs out
    assert await second.acquire(TOPIC, GROUP, "heir", partition, 300)
    again = await second.read(TOPIC, GROUP, "heir", partition, 10)
    assert [r.payload for r in again] == [b"1", b"2", b"3", b"4"]
    assert [r.deliveries for r in again] == [2, 2, 1, 1]
    assert [r.offset for r in again[:2]] == [r.offset for r in got[1:]]
    await second.ack(GROUP, again)
    assert await second.read(TOPIC, GROUP, "heir", partition, 10) == []


async def test_leases_are_exclusive_and_renewable(make_log: LogFactory) -> None:
    a, b = await make_log(), await make_log()
    assert await a.acquire(TOPIC, GROUP, "a", 0, 5_000)
    assert await a.acquire(TOPIC, GROUP, "a", 0, 5_000)  # renewal by the holder
    assert not await b.acquire(TOPIC, GROUP, "b", 0, 5_000)
    assert await b.acquire(TOPIC, "other-group", "b", 0, 5_000)  # leases are per group
    await b.release(TOPIC, GROUP, "b", 0)  # not the holder: no effect
    assert not await b.acquire(TOPIC, GROUP, "b", 0, 5_000)
    await a.release(TOPIC, GROUP, "a", 0)
    assert await b.acquire(TOPIC, GROUP, "b", 0, 5_000)


async def test_membership_counts_live_consumers(make_log: LogFactory) -> None:
    log = await make_log()
    assert await log.join(TOPIC, GROUP, "a", 300) == 1
    assert await log.join(TOPIC, GROUP, "b", 5_000) == 2
    await asyncio.sleep(0.45)
    assert await log.join(TOPIC, GROUP, "b", 5_000) == 1  # a stopped heartbeating


async def test_lag_counts_undelivered_and_unacked(make_log: LogFactory) -> None:
    log = await make_log()
    await log.join(TOPIC, GROUP, "c", 5_000)
    assert await log.lag(TOPIC, GROUP) == 0
    for i in range(10):
        await log.publish(TOPIC, "k", str(i).encode())
    assert await log.lag(TOPIC, GROUP) == 10
    partition = partition_for("k", PARTITIONS)
    batch = await log.read(TOPIC, GROUP, "c", partition, 4)
    assert await log.lag(TOPIC, GROUP) == 10  # delivered but not acknowledged
    await log.ack(GROUP, batch)
    await log.ack(GROUP, batch)  # twice is harmless
    assert await log.lag(TOPIC, GROUP) == 6
    assert (TOPIC, GROUP) in await log.groups()


async def test_dead_letter_moves_the_record_with_its_error(make_log: LogFactory) -> None:
    log = await make_log()
    await log.publish(TOPIC, "k", b"poison", {"trace": "t1"})
    partition = partition_for("k", PARTITIONS)
    (record,) = await log.read(TOPIC, GROUP, "c", partition, 10)
    await log.dead_letter(GROUP, record, "ValueError('bad')")
    assert await log.read(TOPIC, GROUP, "c", partition, 10) == []
    assert await log.lag(TOPIC, GROUP) == 0
    (dead,) = await log.read(TOPIC + DLQ_SUFFIX, "inspect", "c", partition, 10)
    assert dead.payload == b"poison" and dead.key == "k"
    assert dead.headers["error"] == "ValueError('bad')"
    assert dead.headers["trace"] == "t1"
    assert dead.headers["source_offset"] == record.offset


async def test_runner_sends_a_failing_record_to_the_dlq_after_max_attempts(
    make_log: LogFactory,
) -> None:
    log = await make_log()
    attempts: collections.Counter[bytes] = collections.Counter()
    handled: list[bytes] = []

    async def handler(record: LogRecord) -> None:
        attempts[record.payload] += 1
        if record.payload == b"poison":
            raise ValueError("cannot handle poison")
        handled.append(record.payload)

    for payload in (b"before", b"poison", b"after"):
        await log.publish(TOPIC, "k", payload)
    runner = ConsumerRunner(
        log, [Subscription(TOPIC, GROUP, handler)], "c1", max_attempts=3, retry_backoff_s=0.001
    )
    await runner.start()
    try:
        await wait_until(lambda: len(handled) == 2)
    finally:
        await runner.stop()
    assert handled == [b"before", b"after"]  # order kept around the poison record
    assert attempts[b"poison"] == 3
    dead = await log.read(TOPIC + DLQ_SUFFIX, "x", "c", partition_for("k", PARTITIONS), 10)
    assert [r.payload for r in dead] == [b"poison"]
    assert "cannot handle poison" in dead[0].headers["error"]
    assert await log.lag(TOPIC, GROUP) == 0


async def test_runner_redelivers_to_the_dlq_a_record_that_keeps_killing_consumers(
    make_log: LogFactory,
) -> None:
    log = await make_log()
    await log.publish(TOPIC, "k", b"crasher")
    partition = partition_for("k", PARTITIONS)
    for attempt in range(3):  # three consumers each die while handling it
        assert await log.acquire(TOPIC, GROUP, f"dead{attempt}", partition, 100)
        assert len(await log.read(TOPIC, GROUP, f"dead{attempt}", partition, 10)) == 1
        await asyncio.sleep(0.15)
    seen: list[bytes] = []

    async def handler(record: LogRecord) -> None:
        seen.append(record.payload)

    runner = ConsumerRunner(log, [Subscription(TOPIC, GROUP, handler)], "c", max_attempts=3)
    await runner.start()
    try:
        await wait_until(lambda: False, timeout_s=0.5, fail=False)
    finally:
        await runner.stop()
    assert seen == []
    dead = await log.read(TOPIC + DLQ_SUFFIX, "x", "c", partition, 10)
    assert [r.payload for r in dead] == [b"crasher"]


async def test_two_consumers_share_a_group_without_processing_a_record_twice(
    make_log: LogFactory,
) -> None:
    log_a, log_b = await make_log(), await make_log()
    in_flight: set[str] = set()
    processed: collections.Counter[str] = collections.Counter()
    order: dict[str, list[int]] = collections.defaultdict(list)
    overlaps: list[str] = []
    consumers_used: dict[str, set[str]] = collections.defaultdict(set)

    def handler_for(name: str):  # type: ignore[no-untyped-def]
        async def handler(record: LogRecord) -> None:
            ident = f"{record.partition}/{record.offset}"
            if ident in in_flight:
                overlaps.append(ident)
            in_flight.add(ident)
            try:
                await asyncio.sleep(0.001)
            finally:  # a handler cancelled by a lease hand-over is no longer running
                in_flight.discard(ident)
            processed[ident] += 1
            key, index = record.payload.decode().split(":")
            order[key].append(int(index))
            consumers_used[name].add(key)

        return handler

    runners = [
        ConsumerRunner(
            log_, [Subscription(TOPIC, GROUP, handler_for(name), batch=10)], name, lease_ms=1_500
        )
        for log_, name in ((log_a, "a"), (log_b, "b"))
    ]
    for runner in runners:
        await runner.start()
    total = 400
    try:
        for i in range(total):
            key = f"k{i % 16}"
            await log_a.publish(TOPIC, key, f"{key}:{i}".encode())
        await wait_until(lambda: sum(processed.values()) >= total, timeout_s=20)
    finally:
        for runner in runners:
            await runner.stop()
    assert overlaps == []
    assert len(processed) == total and set(processed.values()) == {1}
    for key, indexes in order.items():
        assert indexes == sorted(indexes), key
    assert await log_a.lag(TOPIC, GROUP) == 0


async def wait_until(condition, timeout_s: float = 10.0, fail: bool = True) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            assert not fail, "condition not reached in time"
            return
        await asyncio.sleep(0.01)


async def test_unclaimed_records_are_not_counted_as_deliveries(make_log: LogFactory) -> None:
    log = await make_log()
    for i in range(4):
        await log.publish(TOPIC, "k", str(i).encode())
    partition = partition_for("k", PARTITIONS)
    for _ in range(5):  # five graceful stops before anything was attempted
        batch = await log.read(TOPIC, GROUP, "c", partition, 10)
        assert [r.deliveries for r in batch] == [1, 1, 1, 1]
        await log.unclaim(GROUP, "c", batch[1:])
        await log.unclaim(GROUP, "c", batch[:1])
    assert await log.lag(TOPIC, GROUP) == 4  # still pending


async def test_graceful_restarts_never_dead_letter_healthy_records(make_log: LogFactory) -> None:
    log = await make_log()
    for i in range(10):
        await log.publish(TOPIC, "k", str(i).encode())
    handled: list[bytes] = []

    async def slow(record: LogRecord) -> None:
        await asyncio.sleep(0.05)
        handled.append(record.payload)

    for _ in range(4):  # each runner is stopped (gracefully) in the middle of the batch
        runner = ConsumerRunner(log, [Subscription(TOPIC, GROUP, slow)], "c", max_attempts=3)
        await runner.start()
        await asyncio.sleep(0.08)
        await runner.stop(grace_s=0.01)
    runner = ConsumerRunner(log, [Subscription(TOPIC, GROUP, slow)], "c", max_attempts=3)
    await runner.start()
    try:
        await wait_until(lambda: {str(i).encode() for i in range(10)} <= set(handled))
    finally:
        await runner.stop()
    dead = await log.read(TOPIC + DLQ_SUFFIX, "x", "c", partition_for("k", PARTITIONS), 10)
    assert dead == []


async def test_two_groups_on_one_topic_are_tracked_apart(make_log: LogFactory) -> None:
    log = await make_log()
    seen: dict[str, list[bytes]] = {"g-a": [], "g-b": []}

    def handler(group: str):  # type: ignore[no-untyped-def]
        async def handle(record: LogRecord) -> None:
            await asyncio.sleep(0.01)
            seen[group].append(record.payload)

        return handle

    runner = ConsumerRunner(
        log, [Subscription(TOPIC, g, handler(g)) for g in ("g-a", "g-b")], "c", max_attempts=3
    )
    await runner.start()
    for i in range(20):
        await log.publish(TOPIC, f"k{i % 5}", str(i).encode())
    await wait_until(lambda: len(seen["g-a"]) == 20 and len(seen["g-b"]) == 20)
    await runner.stop()
    after = (len(seen["g-a"]), len(seen["g-b"]))
    await log.publish(TOPIC, "k1", b"after stop")
    await asyncio.sleep(0.3)
    assert (len(seen["g-a"]), len(seen["g-b"])) == after  # nothing runs after stop()


async def test_batch_handlers_fall_back_to_single_records_around_poison(
    make_log: LogFactory,
) -> None:
    log = await make_log()
    batches: list[int] = []
    singles: list[bytes] = []

    async def batch_handler(records: list[LogRecord]) -> None:
        if any(r.payload == b"poison" for r in records):
            raise ValueError("poison in batch")
        batches.append(len(records))

    async def handler(record: LogRecord) -> None:
        if record.payload == b"poison":
            raise ValueError("poison alone")
        singles.append(record.payload)

    for i in range(10):
        await log.publish(TOPIC, "k", str(i).encode())
    await log.publish(TOPIC, "k", b"poison")
    sub = Subscription(TOPIC, GROUP, handler, batch=20, batch_handler=batch_handler)
    runner = ConsumerRunner(log, [sub], "c", max_attempts=2, retry_backoff_s=0.001)
    await runner.start()
    try:
        await wait_until(lambda: len(singles) == 10)
        await log.publish_many(TOPIC, [("k", str(i).encode()) for i in range(10, 15)])  # atomic
        await wait_until(lambda: sum(batches) + len(singles) >= 15)
    finally:
        await runner.stop()
    assert singles == [str(i).encode() for i in range(10)]  # the poisoned batch, one by one
    assert sum(batches) == 5  # later batches go whole again
    dead = await log.read(TOPIC + DLQ_SUFFIX, "x", "c", partition_for("k", PARTITIONS), 10)
    assert [r.payload for r in dead] == [b"poison"]


class _CountingReads:
    """A log whose reads are counted (the rest passes through)."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    async def read(self, *args: Any) -> list[LogRecord]:
        self.reads += 1
        return await self._log.read(*args)


async def _handled_and_reads(log: Log, topic: str, linger_s: float) -> tuple[list[bytes], int]:
    """Publish 40 records one by one under a running consumer of ``topic``: what it handled,
    and how many reads that took beyond its idle polling."""
    seen: list[bytes] = []
    counting = _CountingReads(log)

    async def handler(record: LogRecord) -> None:
        seen.append(record.payload)

    sub = Subscription(topic, GROUP, handler, linger_s=linger_s)
    runner = ConsumerRunner(counting, [sub], "c")  # type: ignore[arg-type]  # a Log by delegation
    await runner.start()
    try:
        await wait_until(lambda: len(runner.owned_partitions(sub)) == PARTITIONS)
        idle = counting.reads
        for i in range(40):
            await log.publish(topic, "k", b"%d" % i)
            await asyncio.sleep(0.01)
        await wait_until(lambda: len(seen) == 40)
        return seen, counting.reads - idle
    finally:
        await runner.stop()


async def test_a_lingering_subscription_reads_records_that_trickle_in_batches(
    make_log: LogFactory,
) -> None:
    """Records published one by one are each handled once and in order either way; with
    ``linger_s`` a partition is read again only after that pause, so they come in far fewer
    reads (each a claim and an acknowledgement) than records, and the partitions they do not
    go to do not read in vain on each one."""
    log = await make_log()
    at_once, at_once_reads = await _handled_and_reads(log, f"{TOPIC}.at-once", 0.0)
    lingering, lingering_reads = await _handled_and_reads(log, f"{TOPIC}.lingering", 0.2)
    assert at_once == lingering == [b"%d" % i for i in range(40)]
    assert (
        await log.lag(f"{TOPIC}.at-once", GROUP) == await log.lag(f"{TOPIC}.lingering", GROUP) == 0
    )
    assert lingering_reads * 3 < at_once_reads, (lingering_reads, at_once_reads)
