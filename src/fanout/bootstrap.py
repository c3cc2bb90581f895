"""Settings → stores → services → workers: the only code that wires adapters together.

``build(settings)`` picks the backends — the embedded SQLite file when no DSN is set, PostgreSQL
+ Redis when both are — and returns a started :class:`Platform`. Tests call it with their own
settings (and a cheap password hasher); ``cli.py`` and the ASGI lifespan call it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fanout.accounts.passwords import PasswordHasher
from fanout.accounts.ports import SecretStore, UserStore
from fanout.accounts.service import AccountService
from fanout.accounts.tokens import TokenService
from fanout.core.clock import Clock, SystemClock
from fanout.core.config import Settings
from fanout.core.consumer import ConsumerRunner, Subscription
from fanout.core.ids import IdGenerator
from fanout.core.log import Log
from fanout.core.ratelimit import InMemoryRateLimiter, RateLimiter
from fanout.metrics import Metrics

if TYPE_CHECKING:
    from fanout.storage.embedded.log import SqliteLog
    from fanout.storage.redis.ids import WorkerIdLease

__all__ = ["ROLES", "Platform", "build"]

log = logging.getLogger(__name__)

ROLES = ("feed", "chat", "notify", "links")  # consumer roles a worker process may take
SECRET_KEY_NAME = "secret_key"
SHUTDOWN_GRACE_S = 5.0
COMPACT_EVERY_S = 30.0  # acknowledged records linger at most this long in embedded mode

Closer = Callable[[], Awaitable[None]]
Ping = Callable[[], Awaitable[None]]


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
    runner: ConsumerRunner
    _checks: dict[str, Ping] = field(default_factory=dict)
    _closers: list[Closer] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

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
        await self.runner.stop(grace_s)
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
    """Wire and start a platform for ``settings``; ``consume=False`` starts no consumers."""
    clock = clock or SystemClock()
    closers: list[Closer] = []
    try:
        if settings.scaled:
            wiring = await _scaled(settings, clock, closers)
        else:
            wiring = await _embedded(settings, clock, closers)
        log_, users, secret_store, limiter, ids, checks, tasks = wiring
        secret = settings.secret_key or await secret_store.get_or_create(
            SECRET_KEY_NAME, secrets.token_urlsafe(48)
        )
        tokens = TokenService(
            secret, clock, ttl_s=settings.token_ttl_s, service_keys=settings.service_keys
        )
        accounts = AccountService(users, tokens, hasher or PasswordHasher(), clock, ids.next_id)
        runner = ConsumerRunner(
            log_,
            _subscriptions(roles),
            consumer=f"{os.uname().nodename}:{os.getpid()}:{ids.worker_id}",
            max_attempts=settings.log_max_attempts,
        )
        platform = Platform(
            settings=settings, clock=clock, ids=ids, log=log_, users=users, tokens=tokens,
            accounts=accounts, rate_limiter=limiter, metrics=Metrics(), runner=runner,
            _checks=checks, _closers=closers, _tasks=tasks,
        )  # fmt: skip
        if consume:
            await runner.start()
        return platform
    except BaseException:
        for close in reversed(closers):
            with contextlib.suppress(Exception):  # already failing; report the first error
                await close()
        raise


def _subscriptions(roles: Sequence[str]) -> list[Subscription]:
    """The consumers of the products in ``roles`` (each product adds its own here)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown worker roles: {sorted(unknown)}")
    return []


_Wiring = tuple[
    Log,
    UserStore,
    SecretStore,
    RateLimiter,
    IdGenerator,
    dict[str, Ping],
    list["asyncio.Task[None]"],
]


async def _embedded(settings: Settings, clock: Clock, closers: list[Closer]) -> _Wiring:
    from fanout.storage.embedded.accounts import FileSecretStore, SqliteUserStore
    from fanout.storage.embedded.engine import SqliteEngine
    from fanout.storage.embedded.log import SqliteLog

    engine = SqliteEngine(settings.sqlite_path)
    await engine.start()
    closers.append(engine.close)
    log_ = SqliteLog(engine, clock, partitions=settings.log_partitions)
    compaction = asyncio.create_task(_compact_forever(log_), name="log-compaction")
    return (
        log_,
        SqliteUserStore(engine),
        FileSecretStore(settings.data_dir),
        InMemoryRateLimiter(clock),
        IdGenerator(settings.worker_id, clock),
        {"sqlite": engine.ping},
        [compaction],
    )


async def _scaled(settings: Settings, clock: Clock, closers: list[Closer]) -> _Wiring:
    from fanout.storage.postgres.accounts import PostgresSecretStore, PostgresUserStore
    from fanout.storage.postgres.engine import PostgresEngine
    from fanout.storage.redis.connection import connect, ping
    from fanout.storage.redis.ids import WorkerIdLease
    from fanout.storage.redis.log import RedisLog
    from fanout.storage.redis.ratelimit import RedisRateLimiter

    assert settings.database_url is not None and settings.redis_url is not None
    engine = PostgresEngine(settings.database_url)
    await engine.start()
    closers.append(engine.close)
    client = await connect(settings.redis_url)
    closers.append(client.aclose)
    lease = WorkerIdLease(client)
    worker_id = await lease.acquire()
    closers.append(lease.release)
    ids = IdGenerator(worker_id, clock)
    renewal = asyncio.create_task(_keep_worker_id(lease, ids), name="worker-id-lease")
    return (
        RedisLog(client, clock, partitions=settings.log_partitions),
        PostgresUserStore(engine),
        PostgresSecretStore(engine),
        RedisRateLimiter(client),
        ids,
        {"postgres": engine.ping, "redis": functools.partial(ping, client)},
        [renewal],
    )


async def _compact_forever(log_: SqliteLog) -> None:
    """Drop acknowledged log records every ``COMPACT_EVERY_S`` (Redis trims with MAXLEN)."""
    while True:
        await asyncio.sleep(COMPACT_EVERY_S)
        try:
            await log_.compact()
        except Exception:  # compaction is housekeeping: retry next round rather than stop
            log.exception("log compaction failed")


async def _keep_worker_id(lease: WorkerIdLease, ids: IdGenerator) -> None:
    """Renew the worker-id lease; if it was lost, lease another id before issuing more."""
    while True:
        await asyncio.sleep(lease.ttl_ms / 3000)
        try:
            if not await lease.renew():
                ids.worker_id = await lease.acquire()
                log.warning("worker id lease was lost; now using worker id %d", ids.worker_id)
        except Exception:  # Redis briefly unreachable: the lease outlives a few failed renewals
            log.exception("renewing the worker id lease failed")
