"""Connecting to Redis: settings from a DSN, one client factory, driver errors at the boundary.

Every adapter in this package talks to Redis inside :func:`guard`, which puts a deadline on the
call and turns "cannot reach Redis" (connection refused or lost, socket timeout, our deadline)
into :class:`fanout.core.errors.Unavailable` raised ``from`` the driver's error. Other driver
errors (a wrong command, a script bug) are programming errors and propagate unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, KeyT

from fanout.core.errors import Unavailable

__all__ = ["OP_TIMEOUT_S", "RedisSettings", "ScriptCall", "connect", "guard", "ping", "run_scripts"]

CONNECT_TIMEOUT_S = 5.0  # a reachable Redis accepts a TCP/TLS connection well within this
SOCKET_TIMEOUT_S = 5.0  # every command we send is O(batch); a slower reply means trouble
HEALTH_CHECK_INTERVAL_S = 30  # PING an idle pooled connection before reuse after this long
OP_TIMEOUT_S = 10.0  # deadline of one adapter call: connect + a few round trips, with margin
RETRIES = 3  # a dropped pooled connection or a failover blip is retried this often, then
RETRY_BASE_S, RETRY_CAP_S = 0.05, 0.5  # ... Unavailable within ~1.5 s (redis-py's default: ~5 s)
DEFAULT_PORT = 6379


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where and how to connect; built from ``redis://``, ``rediss://`` or ``unix://`` DSNs."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    unix_socket_path: str | None = None
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    socket_timeout_s: float = SOCKET_TIMEOUT_S
    health_check_interval_s: int = HEALTH_CHECK_INTERVAL_S

    @classmethod
    def from_dsn(cls, url: str) -> RedisSettings:
        """Parse ``redis://[user:password@]host[:port][/db]`` (``rediss`` = TLS) or
        ``unix:///path/to/socket?db=N``. Raises ``ValueError`` for anything else."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("a unix:// Redis URL needs a socket path")
            return cls(
                db=int(query.get("db", ["0"])[0]),
                username=username,
                password=password,
                unix_socket_path=parts.path,
            )
        if parts.scheme not in {"redis", "rediss"}:
            raise ValueError(f"not a Redis URL (redis://, rediss:// or unix://): {parts.scheme}")
        path = parts.path.lstrip("/")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or DEFAULT_PORT,
            db=int(path or query.get("db", ["0"])[0]),
            username=username,
            password=password,
            ssl=parts.scheme == "rediss",
        )


POOL_SIZE = 64  # connections per process; callers beyond wait up to POOL_WAIT_S
POOL_WAIT_S = 5.0


async def connect(url: str) -> aioredis.Redis:
    """A pooled client for ``url``, checked with a PING; raises ``Unavailable`` if unreachable.

    Replies are bytes (``decode_responses=False``): payloads are binary. Commands are retried
    ``RETRIES`` times on connection errors — a retried XADD may append twice, which the log's
    at-least-once contract already allows. The caller closes the client with
    ``await client.aclose()``.
    """
    settings = RedisSettings.from_dsn(url)
    client = aioredis.Redis(
        host=settings.host,
        port=settings.port,
        db=settings.db,
        username=settings.username,
        password=settings.password,
        ssl=settings.ssl,
        unix_socket_path=settings.unix_socket_path,
        socket_connect_timeout=settings.connect_timeout_s,
        socket_timeout=settings.socket_timeout_s,
        health_check_interval=settings.health_check_interval_s,
        retry=Retry(ExponentialWithJitterBackoff(base=RETRY_BASE_S, cap=RETRY_CAP_S), RETRIES),
        decode_responses=False,
    )
    # A bounded pool that makes callers wait for a free connection: redis-py's default pool
    # raises at once when its connections are all busy (10 000 WebSockets closing together
    # each release a presence lease).
    default = client.connection_pool
    client.connection_pool = aioredis.BlockingConnectionPool(
        connection_class=_hiredis_packing(default.connection_class),
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT_S,
        **default.connection_kwargs,
    )
    try:
        async with guard("connect", settings.connect_timeout_s + settings.socket_timeout_s):
            await client.ping()
    except BaseException:
        await client.aclose()
        raise
    return client


class _HiredisPacking:
    """Commands packed by hiredis in C. redis-py's asyncio connections pack every argument in
    Python, which measured as the largest cost of a fan-out push (script calls of hundreds of
    keys): 424k -> 577k owners/s for an empty script."""

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0]
        # Multi-word command names ("CONFIG GET") go out as separate arguments, as in redis-py.
        if (isinstance(head, str) and " " in head) or (isinstance(head, bytes) and b" " in head):
            args = (*head.split(), *args[1:])
        return [hiredis.pack_command(args)]


_PACKING_CLASSES: dict[type[Any], type[Any]] = {}


def _hiredis_packing(cls: type[Any]) -> type[Any]:
    """``cls`` with hiredis packing mixed in (one subclass per connection class)."""
    if issubclass(cls, _HiredisPacking):
        return cls
    if cls not in _PACKING_CLASSES:
        _PACKING_CLASSES[cls] = type(f"Hiredis{cls.__name__}", (_HiredisPacking, cls), {})
    return _PACKING_CLASSES[cls]


@contextlib.asynccontextmanager
async def guard(what: str, timeout_s: float = OP_TIMEOUT_S) -> AsyncIterator[None]:
    """Run the body under a deadline; unreachable Redis becomes ``Unavailable(...) from exc``."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
        raise Unavailable(f"redis unavailable ({what}): {type(exc).__name__}: {exc}") from exc


async def ping(client: aioredis.Redis) -> None:
    """Raise ``Unavailable`` unless ``client``'s server answers a PING in time (readiness)."""
    async with guard("ping"):
        await client.ping()


ScriptCall = tuple[AsyncScript, Sequence[KeyT], Sequence[EncodableT]]


async def run_scripts(client: aioredis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """The replies of script calls (script, KEYS, ARGV), pipelined in one round trip.

    A pipeline given redis-py's registered scripts asks the server whether it holds them
    first (SCRIPT EXISTS: a round trip more per pipeline); here the calls go as EVALSHA, and
    those that a server which lost its scripts (restart, SCRIPT FLUSH) answered NOSCRIPT —
    they did not run — are made again once their scripts are loaded: only those, so a script
    that is not idempotent still runs once. Any other error of a call is raised.
    """
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for i in todo:
            script, call_keys, args = calls[i]
            pipe.evalsha(script.sha, len(call_keys), *call_keys, *args)
        lost = []
        for i, reply in zip(todo, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, NoScriptError) and attempt == 0:
                lost.append(i)
            elif isinstance(reply, Exception):
                raise reply
            else:
                replies[i] = reply
        if not lost:
            break
        for script in {id(calls[i][0]): calls[i][0] for i in lost}.values():
            script.sha = await client.script_load(script.script)
        todo = lost
    return replies
