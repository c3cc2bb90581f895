"""A feed wired on one backend for tests that drive the service, reader and worker directly.

``settle()`` makes everything asynchronous happen now: the PostgreSQL outbox is relayed, the
feed topics are consumed to the end by the real handlers, and requested rebuilds finish.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from fanout.core.clock import Clock, ManualClock
from fanout.core.consumer import Subscription
from fanout.core.ids import IdGenerator
from fanout.core.log import Log, Topics
from fanout.feed.events import FEED_POSTS_LOW
from fanout.feed.policy import FanoutPolicy
from fanout.feed.ports import FeedStores
from fanout.feed.reader import FeedReader
from fanout.feed.service import FeedService
from fanout.feed.worker import GROUP, FanoutWorker

FEED_TOPICS = (Topics.FEED_POSTS, FEED_POSTS_LOW, Topics.FEED_FOLLOWS)


@dataclass
class FeedKit:
    service: FeedService
    reader: FeedReader
    worker: FanoutWorker
    log: Log
    stores: FeedStores
    relay: Callable[[], Awaitable[None]]
    clock: ManualClock

    async def drain(self) -> int:
        """Hand every pending feed record to the worker as its consumer runners would: each
        partition's records in order, in read batches, through the subscription's batch handler
        where it has one; the partitions of a topic at once, so that posts of several
        partitions share the worker's passes. The number of records handled."""
        first, low = self.worker.subscriptions()
        subs = sorted(first + low, key=lambda sub: FEED_TOPICS.index(sub.topic))

        async def partition(sub: Subscription, number: int) -> int:
            handled = 0
            await self.log.acquire(sub.topic, GROUP, "kit", number, 60_000)
            while records := await self.log.read(sub.topic, GROUP, "kit", number, sub.batch):
                if sub.batch_handler is not None:
                    await sub.batch_handler(records)
                else:
                    for record in records:
                        await sub.handler(record)
                await self.log.ack(GROUP, records)
                handled += len(records)
            return handled

        handled = 0
        for sub in subs:
            counts = await asyncio.gather(
                *(partition(sub, number) for number in range(self.log.partitions))
            )
            handled += sum(counts)
        return handled

    async def settle(self) -> None:
        while True:
            await self.relay()
            handled = await self.drain()
            handled += await self.reader.process_rebuilds()
            if not handled:
                return


@contextlib.asynccontextmanager
async def feed_kit(
    backend: dict[str, str], tmp_path: Path, policy: FanoutPolicy, clock: ManualClock, *,
    cap: int = 800, inactive_days: int = 30, worker_id: int = 1,
) -> AsyncIterator[FeedKit]:  # fmt: skip
    ids = IdGenerator(worker_id, clock)
    async with contextlib.AsyncExitStack() as stack:
        stores, log, relay = await open_feed_stores(backend, tmp_path, clock, cap, stack)
        service = FeedService(stores, policy, clock, ids.next_id, timeline_cap=cap)
        reader = FeedReader(stores, clock, ids.next_id, timeline_cap=cap,
                            inactive_days=inactive_days)  # fmt: skip
        worker = FanoutWorker(stores, policy, clock, timeline_cap=cap,
                              inactive_days=inactive_days)  # fmt: skip
        # Rebuilds run only in settle(), so a test sees every read made before one finishes.
        yield FeedKit(service, reader, worker, log, stores, relay, clock)


async def _nothing() -> None:
    return None


async def open_feed_stores(
    backend: dict[str, str], tmp_path: Path, clock: Clock, cap: int,
    stack: contextlib.AsyncExitStack,
) -> tuple[FeedStores, Log, Callable[[], Awaitable[None]]]:  # fmt: skip
    """The feed's stores on ``backend`` (closed by ``stack``), its log, and a function that
    makes committed events visible in the log (the PostgreSQL outbox relay; a no-op on
    SQLite, whose events commit straight into its log)."""
    if backend["kind"] == "sqlite":
        from fanout.storage.embedded.engine import SqliteEngine
        from fanout.storage.embedded.feed import SqliteFollowStore, SqlitePostStore
        from fanout.storage.embedded.log import SqliteLog
        from fanout.storage.embedded.timelines import MemorySnapshotStore, SqliteTimelineStore

        engine = SqliteEngine(tmp_path / f"feed-{id(stack)}.sqlite3")
        await engine.start()
        stack.push_async_callback(engine.close)
        log = SqliteLog(engine, clock, partitions=4)
        stores = FeedStores(
            posts=SqlitePostStore(engine, log),
            follows=SqliteFollowStore(engine, log),
            timelines=SqliteTimelineStore(engine, cap=cap),
            snapshots=MemorySnapshotStore(clock),
        )
        return stores, log, _nothing

    from fanout.storage.postgres.engine import PostgresEngine
    from fanout.storage.postgres.feed import PostgresFollowStore, PostgresPostStore
    from fanout.storage.postgres.outbox import OutboxRelay, PostgresOutbox
    from fanout.storage.redis.connection import connect
    from fanout.storage.redis.log import RedisLog
    from fanout.storage.redis.snapshots import RedisSnapshotStore
    from fanout.storage.redis.timelines import RedisTimelineStore

    pg = PostgresEngine(backend["postgres"])
    await pg.start()
    stack.push_async_callback(pg.close)
    client = await connect(backend["redis"])
    stack.push_async_callback(client.aclose)
    log = RedisLog(client, clock, partitions=4)
    outbox = PostgresOutbox()
    relay = OutboxRelay(pg, log)

    async def flush() -> None:
        while await relay.run_once():
            pass

    stores = FeedStores(
        posts=PostgresPostStore(pg, outbox),
        follows=PostgresFollowStore(pg, outbox),
        timelines=RedisTimelineStore(client, cap=cap),
        snapshots=RedisSnapshotStore(client),
    )
    return stores, log, flush
