"""The feed wired on one backend for ``fanout bench feed``, as ``bootstrap.build`` wires it.

The differences are what a benchmark needs: the stores stay reachable (for bulk loading and for
measuring storage), the policy changes per strategy (:meth:`Backend.feed`), the worker counts the
timelines it writes (:class:`CountingWorker`), and nothing runs until asked: the consumer runners
are made by :meth:`Backend.runners` with bootstrap's lanes and concurrency. The outbox relay runs
for the whole life of a scaled backend, as in a ``fanout serve`` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.feed_load import Loader, ScaledLoader, SqliteLoader
from bench.servers import postgres_server, redis_server
from fanout.accounts.ports import UserStore
from fanout.bootstrap import LOW_LANE_CONCURRENCY
from fanout.core.clock import SystemClock
from fanout.core.config import Settings
from fanout.core.consumer import ConsumerRunner
from fanout.core.ids import IdGenerator
from fanout.core.log import Log, LogRecord, Topics
from fanout.feed import events
from fanout.feed.policy import FanoutPolicy
from fanout.feed.ports import FeedStores
from fanout.feed.reader import FeedReader
from fanout.feed.service import FeedService
from fanout.feed.worker import FanoutWorker

__all__ = ["BACKENDS", "Backend", "CountingWorker", "Feed", "open_backend"]

BACKENDS = ("scaled", "sqlite")
FIRST_LANE_CONCURRENCY = 16  # as bootstrap.build: handlers at once on the first lane
CONSUMER = "bench-feed"  # one consumer name for every runner of the run: one group member
EMBEDDED_WORKER_ID = 1  # `fanout serve` on the same file issues ids as worker 0


class CountingWorker(FanoutWorker):
    """The real worker, counting timelines written and post records handled."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.written = 0  # timelines written since expect()
        self.handled = 0  # post records handled since expect()
        self._target = 0
        self._done = asyncio.Event()

    def expect(self, posts: int) -> asyncio.Event:
        """Zero the counters; the event is set once ``posts`` post records are handled."""
        self.written, self.handled, self._target = 0, 0, posts
        self._done = asyncio.Event()
        if posts <= 0:
            self._done.set()
        return self._done

    async def fan_out_many(self, created: Sequence[events.PostCreated]) -> int:
        written = await super().fan_out_many(created)
        self.written += written
        return written

    async def handle(self, record: LogRecord) -> None:
        await super().handle(record)
        self._count([record])

    async def handle_batch(self, records: Sequence[LogRecord]) -> None:
        await super().handle_batch(records)
        self._count(records)

    def _count(self, records: Sequence[LogRecord]) -> None:
        self.handled += sum(record.topic != Topics.FEED_FOLLOWS for record in records)
        if self.handled >= self._target:
            self._done.set()


@dataclass
class Feed:
    service: FeedService
    reader: FeedReader
    worker: CountingWorker


@dataclass
class Backend:
    name: str
    log: Log
    stores: FeedStores
    users: UserStore
    ids: IdGenerator
    loader: Loader
    serve_env: dict[str, str]  # FANOUT_* that point `fanout serve` at this state
    serve_consumes: bool  # `fanout serve` on this state runs the feed consumers too
    redis_url: str | None = None
    settings: Settings = field(default_factory=Settings)

    def feed(self, policy: FanoutPolicy) -> Feed:
        clock, cap = SystemClock(), self.settings.feed_timeline_cap
        idle, next_id = self.settings.feed_inactive_days, self.ids.next_id
        service = FeedService(self.stores, policy, clock, next_id, timeline_cap=cap)
        reader = FeedReader(self.stores, clock, next_id, timeline_cap=cap, inactive_days=idle)
        worker = CountingWorker(self.stores, policy, clock, timeline_cap=cap, inactive_days=idle)
        return Feed(service, reader, worker)

    def runners(self, worker: FanoutWorker) -> list[ConsumerRunner]:
        """The first lane and the low lane, as ``bootstrap.build`` makes them."""
        first, low = worker.subscriptions()
        return [
            ConsumerRunner(
                self.log,
                subs,
                CONSUMER,
                max_concurrency=concurrency,
                max_attempts=self.settings.log_max_attempts,
            )
            for subs, concurrency in ((first, FIRST_LANE_CONCURRENCY), (low, LOW_LANE_CONCURRENCY))
        ]


@contextlib.asynccontextmanager
async def open_backend(name: str, workdir: Path) -> AsyncIterator[Backend]:
    """``sqlite``: a fresh file in ``workdir``. ``scaled``: ``FANOUT_DATABASE_URL`` (an empty
    database) and ``FANOUT_REDIS_URL`` (flushed) if set, else throwaway servers."""
    if name == "sqlite":
        async with _sqlite(workdir) as backend:
            yield backend
    elif name == "scaled":
        async with _scaled() as backend:
            yield backend
    else:
        raise ValueError(f"unknown backend {name!r} (one of {', '.join(BACKENDS)})")


@contextlib.asynccontextmanager
async def _sqlite(workdir: Path) -> AsyncIterator[Backend]:
    from fanout.storage.embedded.accounts import SqliteUserStore
    from fanout.storage.embedded.engine import SqliteEngine
    from fanout.storage.embedded.feed import SqliteFollowStore, SqlitePostStore
    from fanout.storage.embedded.log import SqliteLog
    from fanout.storage.embedded.timelines import MemorySnapshotStore, SqliteTimelineStore

    settings = Settings(data_dir=workdir)
    clock = SystemClock()
    engine = SqliteEngine(settings.sqlite_path)
    await engine.start()
    try:
        log = SqliteLog(engine, clock, partitions=settings.log_partitions)
        yield Backend(
            "sqlite",
            log,
            FeedStores(
                SqlitePostStore(engine, log),
                SqliteFollowStore(engine, log),
                SqliteTimelineStore(engine, cap=settings.feed_timeline_cap),
                MemorySnapshotStore(clock),
            ),
            SqliteUserStore(engine),
            IdGenerator(EMBEDDED_WORKER_ID, clock),
            SqliteLoader(engine),
            {"FANOUT_DATA_DIR": str(workdir)},
            serve_consumes=True,
            settings=settings,
        )
    finally:
        await engine.close()


@contextlib.asynccontextmanager
async def _scaled() -> AsyncIterator[Backend]:
    from fanout.storage.postgres.accounts import PostgresUserStore
    from fanout.storage.postgres.engine import PostgresEngine
    from fanout.storage.postgres.feed import PostgresFollowStore, PostgresPostStore
    from fanout.storage.postgres.outbox import OutboxRelay, PostgresOutbox
    from fanout.storage.redis.connection import connect
    from fanout.storage.redis.ids import WorkerIdLease
    from fanout.storage.redis.log import RedisLog
    from fanout.storage.redis.snapshots import RedisSnapshotStore
    from fanout.storage.redis.timelines import RedisTimelineStore

    with contextlib.ExitStack() as servers:
        redis_url = os.environ.get("FANOUT_REDIS_URL") or servers.enter_context(redis_server())
        dsn = os.environ.get("FANOUT_DATABASE_URL") or servers.enter_context(postgres_server())
        settings = Settings(database_url=dsn, redis_url=redis_url)
        clock = SystemClock()
        async with contextlib.AsyncExitStack() as stack:
            engine = PostgresEngine(dsn)
            await engine.start()
            stack.push_async_callback(engine.close)
            if await engine.fetchval("SELECT EXISTS (SELECT 1 FROM follows)"):
                raise RuntimeError("FANOUT_DATABASE_URL must name an empty database")
            client = await connect(redis_url)
            stack.push_async_callback(client.aclose)
            await client.flushdb()
            # Leased like any process's, so `fanout serve` on the same Redis gets another id.
            # Not renewed: the server started later only reads, so a lapse cannot collide.
            ids = IdGenerator(await WorkerIdLease(client).acquire(), clock)
            log = RedisLog(client, clock, partitions=settings.log_partitions)
            outbox = PostgresOutbox()
            stop = asyncio.Event()
            relay = asyncio.create_task(OutboxRelay(engine, log).run_forever(stop))

            async def stop_relay() -> None:
                stop.set()
                await relay

            stack.push_async_callback(stop_relay)
            loader = ScaledLoader(dsn, client)
            stack.push_async_callback(loader.close)
            yield Backend(
                "scaled",
                log,
                FeedStores(
                    PostgresPostStore(engine, outbox),
                    PostgresFollowStore(engine, outbox),
                    RedisTimelineStore(client, cap=settings.feed_timeline_cap),
                    RedisSnapshotStore(client),
                ),
                PostgresUserStore(engine),
                ids,
                loader,
                {"FANOUT_DATABASE_URL": dsn, "FANOUT_REDIS_URL": redis_url},
                serve_consumes=False,
                redis_url=redis_url,
                settings=settings,
            )
