"""Settings → stores → services → workers: the only code that wires adapters together.

``build(settings)`` picks the backend — the embedded SQLite file when no DSN is set, PostgreSQL
+ Redis when both are — wires every service on it and starts the background work this process
takes: the consumers of ``roles`` (two runners: the first lane and the low-priority lane, so the
low lane never takes the first one's slots), timeline rebuilds, and in scaled mode the outbox
relay. Tests call it with their own settings (and a cheap password hasher); ``cli.py`` and the
ASGI lifespan call it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from fanout.accounts.passwords import PasswordHasher
from fanout.accounts.ports import SecretStore, UserStore
from fanout.accounts.service import AccountService
from fanout.accounts.tokens import TokenService
from fanout.chat.hub import Hub
from fanout.chat.notifier import OfflineNotifier
from fanout.chat.ports import ChatStores, Router
from fanout.chat.service import ChatService
from fanout.core.clock import Clock, SystemClock
from fanout.core.config import Settings
from fanout.core.consumer import ConsumerRunner, Subscription
from fanout.core.ids import IdGenerator
from fanout.core.log import Log, Topics
from fanout.core.ratelimit import InMemoryRateLimiter, RateLimiter
from fanout.feed.policy import FanoutPolicy
from fanout.feed.ports import FeedStores
from fanout.feed.reader import FeedReader
from fanout.feed.service import FeedService
from fanout.feed.worker import FanoutWorker
from fanout.gateway import GatewayFeed
from fanout.links.clicks import AGGREGATE_RECORDS, ClickAggregator, ClickSink
from fanout.links.clicks import GROUP as CLICKS_GROUP
from fanout.links.codes import CodePermutation
from fanout.links.model import Link
from fanout.links.ports import ClickStore, DeleteFeed, LinkCache, LinkStore
from fanout.links.resolver import BROADCAST_TTL_S, SOLE_PROCESS_TTL_S, Resolver
from fanout.links.service import LinkService
from fanout.metrics import Metrics
from fanout.storage.blobs import FileBlobStore

__all__ = ["ROLES", "Backend", "Platform", "build"]

log = logging.getLogger(__name__)

ROLES = ("feed", "chat", "notify", "links")  # consumer roles a process may take
SECRET_KEY_NAME = "secret_key"
CODE_KEY_NAME = "links_code_key"
SHUTDOWN_GRACE_S = 5.0
LOW_LANE_CONCURRENCY = 2  # handlers at once on the low-priority lane
STOP_WAIT_S = 2.0  # how long loops asked to stop may take before they are cancelled

Closer = Callable[[], Awaitable[None]]
Ping = Callable[[], Awaitable[None]]


@dataclass
class Backend:
    """Every store of one backend, and what the process must run and close for it."""

    log: Log
    users: UserStore
    secrets: SecretStore
    rate_limiter: RateLimiter
    ids: IdGenerator
    feed: FeedStores
    links: LinkStore
    clicks: ClickStore
    link_cache: LinkCache | None
    delete_feed: DeleteFeed | None
    link_now: Callable[[str], Link | None] | None  # links.get answered without a wait, if it can
    chat: ChatStores
    router: Router
    checks: dict[str, Ping]
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # Loops that end cleanly when told to: (job, stop); shutdown calls stop, then waits.
    graceful: list[tuple[Callable[[], Coroutine[Any, Any, None]], Callable[[], None]]] = field(
        default_factory=list
    )


@dataclass
class Platform:
    """Everything a process runs, wired. Built by :func:`build`, closed with :meth:`close`."""

    settings: Settings
    clock: Clock
    ids: IdGenerator
    log: Log
    users: UserStore
    tokens: TokenService
    accounts: AccountService
    rate_limiter: RateLimiter
    metrics: Metrics
    feed: FeedService
    feed_reader: FeedReader
    feed_worker: FanoutWorker
    links: LinkService
    chat: ChatService
    hub: Hub
    resolver: Resolver
    click_sink: ClickSink
    visitor_secret: bytes
    runners: list[ConsumerRunner]
    _checks: dict[str, Ping] = field(default_factory=dict)
    _closers: list[Closer] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _graceful: list[tuple[asyncio.Task[None], Callable[[], None]]] = field(default_factory=list)

    def health_checks(self) -> dict[str, Ping]:
        return dict(self._checks)

    def user_of_token(self, token: str) -> int | None:
        """The user a valid token belongs to, None otherwise (for rate limiting)."""
        try:
            return self.tokens.verify(token)
        except Exception:  # any bad token simply has no user bucket; the route answers 401
            return None

    async def close(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop consumers (draining to ``grace_s``), background tasks, then the stores."""
        await asyncio.gather(*(runner.stop(grace_s) for runner in self.runners))
        await self.feed_worker.close(min(grace_s, STOP_WAIT_S))  # its passes outlive handlers
        for _, stop in self._graceful:
            stop()
        if self._graceful:  # let them finish their pass (the relay: no batch moved twice)
            await asyncio.wait([t for t, _ in self._graceful], timeout=min(grace_s, STOP_WAIT_S))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:  # closing the rest matters more than one failed close
                log.exception("closing %r failed", close)


async def build(
    settings: Settings,
    *,
    roles: Sequence[str] = ROLES,
    hasher: PasswordHasher | None = None,
    clock: Clock | None = None,
    consume: bool = True,
) -> Platform:
    """Wire and start a platform; ``consume=False`` (or no ``roles``) starts no consumers."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown worker roles: {sorted(unknown)}")
    clock = clock or SystemClock()
    closers: list[Closer] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        backend = await (_scaled if settings.scaled else _embedded)(settings, clock, closers)
        secret = settings.secret_key or await backend.secrets.get_or_create(
            SECRET_KEY_NAME, secrets.token_urlsafe(48)
        )
        tokens = TokenService(
            secret, clock, ttl_s=settings.token_ttl_s, service_keys=settings.service_keys
        )
        ids = backend.ids
        accounts = AccountService(backend.users, tokens, hasher or PasswordHasher(), clock,
                                  ids.next_id)  # fmt: skip
        policy = FanoutPolicy(
            settings.feed_strategy, settings.feed_low_priority_from, settings.feed_pull_from
        )
        cap, idle = settings.feed_timeline_cap, settings.feed_inactive_days
        feed = FeedService(backend.feed, policy, clock, ids.next_id, timeline_cap=cap)
        reader = FeedReader(backend.feed, clock, ids.next_id, timeline_cap=cap,
                            inactive_days=idle)  # fmt: skip
        worker = FanoutWorker(backend.feed, policy, clock, timeline_cap=cap,
                              inactive_days=idle)  # fmt: skip
        code_key = settings.links_code_key or await backend.secrets.get_or_create(
            CODE_KEY_NAME, secrets.token_hex(32)
        )
        # Embedded is one process: every delete passes through it, so found links may stay
        # cached long. Scaled processes hear of each other's deletes through the delete feed.
        ttl = BROADCAST_TTL_S if backend.delete_feed else SOLE_PROCESS_TTL_S
        resolver = Resolver(backend.links, backend.link_cache, clock, positive_ttl_s=ttl,
                            feed=backend.delete_feed, get_now=backend.link_now)  # fmt: skip
        if backend.delete_feed is not None:
            await backend.delete_feed.start(resolver.invalidate, resolver.invalidate_all)
            closers.append(backend.delete_feed.close)
        links = LinkService(
            backend.links, backend.clicks, resolver, CodePermutation(code_key.encode()), clock,
            ttl_days=settings.links_ttl_days, blocklist=settings.links_blocklist,
        )  # fmt: skip
        chat = ChatService(
            backend.chat, FileBlobStore(settings.data_dir / "blobs"), clock, ids.next_id,
            group_cap=settings.chat_group_cap, large_cap=settings.chat_large_cap,
            upload_max_bytes=settings.chat_upload_max_bytes,
        )  # fmt: skip
        hub = Hub(
            chat, backend.router, clock, f"{os.uname().nodename}:{os.getpid()}:{ids.worker_id}",
            presence_ttl_s=settings.presence_ttl_s, queue_frames=settings.chat_queue_frames,
            replay_cap=settings.chat_replay_cap, small_up_to=settings.chat_small_up_to,
            frame_rate=settings.rate_limit_per_s,
        )  # fmt: skip
        chat.live = hub
        worker.live = GatewayFeed(hub, backend.chat.presence)
        await hub.start()
        closers.append(hub.close)
        sink = ClickSink(backend.log)
        aggregator = ClickAggregator(backend.clicks, clock)
        first, low = _subscriptions(roles if consume else (), worker, aggregator)
        if consume and "chat" in roles:
            first.append(OfflineNotifier(backend.chat, backend.log).subscription())
        name = f"{os.uname().nodename}:{os.getpid()}:{ids.worker_id}"
        runners = [
            ConsumerRunner(backend.log, subs, name, max_attempts=settings.log_max_attempts,
                           max_concurrency=concurrency)
            for subs, concurrency in ((first, 16), (low, LOW_LANE_CONCURRENCY))
            if subs
        ]  # fmt: skip
        jobs = [*backend.background, reader.run_rebuilds, sink.run, resolver.refresh_forever]
        if consume and "links" in roles:
            jobs.append(aggregator.prune_forever)
        for job in jobs:
            tasks.append(asyncio.create_task(job(), name=job.__qualname__))
        graceful = []
        for job, stop in backend.graceful:
            task = asyncio.create_task(job(), name=job.__qualname__)
            tasks.append(task)
            graceful.append((task, stop))
        platform = Platform(
            settings=settings, clock=clock, ids=ids, log=backend.log, users=backend.users,
            tokens=tokens, accounts=accounts, rate_limiter=backend.rate_limiter,
            metrics=Metrics(), feed=feed, feed_reader=reader, feed_worker=worker, links=links,
            chat=chat, hub=hub, resolver=resolver, click_sink=sink,
            visitor_secret=hmac.digest(secret.encode(), b"fanout-visitors", "sha256"),
            runners=runners, _checks=backend.checks, _closers=closers, _tasks=tasks,
            _graceful=graceful,
        )  # fmt: skip
        hub.on_delivery = platform.metrics.chat_delivery.observe
        for runner in runners:
            await runner.start()
        return platform
    except BaseException:
        for task in tasks:
            task.cancel()
        for close in reversed(closers):
            with contextlib.suppress(Exception):  # already failing; report the first error
                await close()
        raise


def _subscriptions(
    roles: Sequence[str], feed: FanoutWorker, clicks: ClickAggregator
) -> tuple[list[Subscription], list[Subscription]]:
    """(first lane, low lane) consumers of the products in ``roles``."""
    first: list[Subscription] = []
    low: list[Subscription] = []
    if "feed" in roles:
        feed_first, feed_low = feed.subscriptions()
        first += feed_first
        low += feed_low
    if "links" in roles:
        first.append(
            Subscription(
                Topics.LINKS_CLICKS,
                CLICKS_GROUP,
                clicks.handle,
                batch=AGGREGATE_RECORDS,
                batch_handler=clicks.handle_batch,
            )
        )
    return first, low


async def _embedded(settings: Settings, clock: Clock, closers: list[Closer]) -> Backend:
    from fanout.chat.routing import LocalRouter
    from fanout.storage.embedded.accounts import FileSecretStore, SqliteUserStore
    from fanout.storage.embedded.chat import SqliteChannelStore
    from fanout.storage.embedded.chat_messages import SqliteMessageStore, SqliteUploadStore
    from fanout.storage.embedded.clicks import SqliteClickStore
    from fanout.storage.embedded.engine import SqliteEngine
    from fanout.storage.embedded.feed import SqliteFollowStore, SqlitePostStore
    from fanout.storage.embedded.links import SqliteLinkStore
    from fanout.storage.embedded.log import SqliteLog
    from fanout.storage.embedded.presence import MemoryPresenceStore
    from fanout.storage.embedded.timelines import MemorySnapshotStore, SqliteTimelineStore

    engine = SqliteEngine(settings.sqlite_path)
    await engine.start()
    closers.append(engine.close)
    log_ = SqliteLog(engine, clock, partitions=settings.log_partitions)
    links = SqliteLinkStore(engine)

    async def compact_forever() -> None:
        """Drop acknowledged log records every ``log_compact_every_s`` (Redis trims with
        MAXLEN). Often, so that each round is small: a round deletes in short chunks, but a
        backlog of a whole minute still took the writer away from the loop for a second."""
        while True:
            await asyncio.sleep(settings.log_compact_every_s)
            try:
                await log_.compact()
            except Exception:  # housekeeping: retry next round rather than stop
                log.exception("log compaction failed")

    return Backend(
        log=log_, users=SqliteUserStore(engine), secrets=FileSecretStore(settings.data_dir),
        rate_limiter=InMemoryRateLimiter(clock), ids=IdGenerator(settings.worker_id, clock),
        feed=FeedStores(
            posts=SqlitePostStore(engine, log_), follows=SqliteFollowStore(engine, log_),
            timelines=SqliteTimelineStore(engine, cap=settings.feed_timeline_cap),
            snapshots=MemorySnapshotStore(clock),
        ),
        links=links, clicks=SqliteClickStore(engine), link_cache=None, delete_feed=None,
        link_now=links.get_now,
        chat=ChatStores(
            channels=SqliteChannelStore(engine, log_), messages=SqliteMessageStore(engine, log_),
            uploads=SqliteUploadStore(engine), presence=MemoryPresenceStore(clock),
        ),
        router=LocalRouter(),
        checks={"sqlite": engine.ping},
        background=[compact_forever],
    )  # fmt: skip


async def _scaled(settings: Settings, clock: Clock, closers: list[Closer]) -> Backend:
    from fanout.storage.postgres.accounts import PostgresSecretStore, PostgresUserStore
    from fanout.storage.postgres.chat import PostgresChannelStore
    from fanout.storage.postgres.chat_messages import PostgresMessageStore, PostgresUploadStore
    from fanout.storage.postgres.engine import PostgresEngine
    from fanout.storage.postgres.feed import PostgresFollowStore, PostgresPostStore
    from fanout.storage.postgres.links import PostgresClickStore, PostgresLinkStore
    from fanout.storage.postgres.outbox import OutboxRelay, PostgresOutbox
    from fanout.storage.redis.connection import connect, ping
    from fanout.storage.redis.ids import WorkerIdLease
    from fanout.storage.redis.links import RedisDeleteFeed, RedisLinkCache
    from fanout.storage.redis.log import RedisLog
    from fanout.storage.redis.presence import RedisPresenceStore
    from fanout.storage.redis.ratelimit import RedisRateLimiter
    from fanout.storage.redis.routing import RedisRouter
    from fanout.storage.redis.snapshots import RedisSnapshotStore
    from fanout.storage.redis.timelines import RedisTimelineStore

    assert settings.database_url is not None and settings.redis_url is not None
    engine = PostgresEngine(settings.database_url)
    await engine.start()
    closers.append(engine.close)
    client = await connect(settings.redis_url)
    closers.append(client.aclose)
    lease = WorkerIdLease(client)
    ids = IdGenerator(await lease.acquire(), clock)
    closers.append(lease.release)
    log_ = RedisLog(client, clock, partitions=settings.log_partitions)
    outbox = PostgresOutbox()
    relay = OutboxRelay(engine, log_)
    stop_relay = asyncio.Event()

    async def relay_forever() -> None:
        await relay.run_forever(stop_relay)

    async def keep_worker_id() -> None:
        """Renew the worker-id lease; if it was lost, lease another id before issuing more."""
        while True:
            await asyncio.sleep(lease.ttl_ms / 3000)
            try:
                if not await lease.renew():
                    ids.worker_id = await lease.acquire()
                    log.warning("worker id lease was lost; now worker id %d", ids.worker_id)
            except Exception:  # Redis briefly unreachable: the lease outlives a few failures
                log.exception("renewing the worker id lease failed")

    async def ping_redis() -> None:
        await ping(client)

    return Backend(
        log=log_, users=PostgresUserStore(engine), secrets=PostgresSecretStore(engine),
        rate_limiter=RedisRateLimiter(client), ids=ids,
        feed=FeedStores(
            posts=PostgresPostStore(engine, outbox), follows=PostgresFollowStore(engine, outbox),
            timelines=RedisTimelineStore(client, cap=settings.feed_timeline_cap),
            snapshots=RedisSnapshotStore(client),
        ),
        links=PostgresLinkStore(engine), clicks=PostgresClickStore(engine),
        link_cache=RedisLinkCache(client), delete_feed=RedisDeleteFeed(client), link_now=None,
        chat=ChatStores(
            channels=PostgresChannelStore(engine, outbox),
            messages=PostgresMessageStore(engine, outbox), uploads=PostgresUploadStore(engine),
            presence=RedisPresenceStore(client),
        ),
        router=RedisRouter(client),
        checks={"postgres": engine.ping, "redis": ping_redis},
        background=[keep_worker_id],
        graceful=[(relay_forever, stop_relay.set)],
    )  # fmt: skip
