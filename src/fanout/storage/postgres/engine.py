"""The PostgreSQL engine: a connection pool, numbered migrations, and the driver-error boundary.

Adapters run each transaction as a named function, ``await engine.transaction(fn)`` where
``fn(conn)`` is an ``async def`` whose ``__name__`` names the transaction in errors, or use the
single-statement pass-throughs (``fetch``, ``fetchrow``, ``fetchval``, ``execute``).

Error boundary: every way of not reaching the server (refused, reset, DNS, timeouts, pool
closed, server shutting down or starting, connection limit, bad credentials, missing database)
is raised as ``fanout.core.errors.Unavailable`` ``from`` the driver error. Everything else,
constraint violations included, propagates unchanged for the adapter to translate
(``UniqueViolationError`` → ``Conflict``).

Migrations are the ``NNNN_name.sql`` files of ``fanout.storage.postgres.migrations``, applied in
order, each in its own transaction, recorded in ``schema_migrations``. Each transaction takes a
transaction-scoped advisory lock and re-checks the record, so processes starting together apply
every version exactly once and a crashed migrator leaves no lock behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import asyncpg

from fanout.core.errors import Invalid, Unavailable
from fanout.storage.migrations import Migration, discover
from fanout.storage.postgres.pool import Connection, ConnectionPool

__all__ = ["PgConnection", "PostgresEngine"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a transaction function receives: a pooled connection, or a one-off one (ping, migrate).
PgConnection: TypeAlias = Connection

MIGRATIONS_PACKAGE = "fanout.storage.postgres.migrations"
MIN_SIZE = 1  # connections kept open when idle
MAX_SIZE = 10  # connections per process; N processes need N times this under max_connections
CONNECT_TIMEOUT_S = 10.0  # one connection, TLS and auth included; longer means unreachable
COMMAND_TIMEOUT_S = 30.0  # one statement; longer is a stuck server, answered 503 not a hang
ACQUIRE_TIMEOUT_S = 10.0  # waiting for a free pooled connection; longer means saturation
CLOSE_TIMEOUT_S = 10.0  # in-flight queries get this long at shutdown before connections drop
MIGRATION_TIMEOUT_S = 3600.0  # one migration (or waiting for another process's): DDL is slow
MIGRATION_LOCK_KEY = 0x66616E6F7574  # "fanout" in ASCII; advisory locks are per database

_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable, DNS failure
    TimeoutError,  # connect, acquire or command timeout
    asyncpg.PostgresConnectionError,  # connection lost or rejected by the protocol
    asyncpg.InterfaceError,  # connection closed, pool closing
    asyncpg.CannotConnectNowError,  # server starting up or in recovery
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.DatabaseDroppedError,
    asyncpg.IdleSessionTimeoutError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InvalidAuthorizationSpecificationError,  # bad user or password
    asyncpg.InvalidCatalogNameError,  # the database does not exist
)


def _is_unavailable(exc: Exception) -> bool:
    # asyncpg's client-side DataError (arguments that do not fit the query) is an InterfaceError
    # and a ValueError: a bug in the caller, not an outage, so it propagates unchanged.
    return isinstance(exc, _UNAVAILABLE) and not isinstance(exc, ValueError)


class PostgresEngine:
    """One asyncpg pool per process. ``start()`` before use, ``close()`` at shutdown."""

    dialect = "postgresql"
    supports_returning = True

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = MIN_SIZE,
        max_size: int = MAX_SIZE,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        acquire_timeout_s: float = ACQUIRE_TIMEOUT_S,
    ) -> None:
        self._dsn = dsn  # may hold a password: never logged or put in a message
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._acquire_timeout_s = acquire_timeout_s
        self._pool: ConnectionPool | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool and apply pending migrations.

        ``Unavailable`` if the server cannot be reached (each connection attempt is bounded by
        ``connect_timeout_s``); the engine is then left stopped and ``start()`` may be retried.
        A failing migration propagates as is, also leaving the engine stopped.
        """
        if self._pool is not None:
            raise RuntimeError("the PostgreSQL engine is already started")
        pool = ConnectionPool(self._connect, min_size=self._min_size, max_size=self._max_size)
        try:
            await pool.start()
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            raise _unavailable("connecting", exc) from exc
        self._pool = pool
        try:
            applied = await self.migrate()
        except BaseException:
            self._pool = None
            pool.terminate()
            raise
        if applied:
            log.info("applied PostgreSQL migrations %s", applied)

    async def close(self) -> None:
        """Close the pool; in-flight queries get ``CLOSE_TIMEOUT_S`` to finish. Idempotent."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await pool.close()
        except TimeoutError:
            log.warning("PostgreSQL pool did not close in %s s; terminating it", CLOSE_TIMEOUT_S)
            pool.terminate()
        except BaseException:  # cancelled while closing: no connection may outlive the engine
            pool.terminate()
            raise

    async def migrate(self) -> list[int]:
        """Apply pending migrations in version order; return the versions this call applied.

        Safe from many processes at once: each version is applied exactly once, in its own
        transaction, by whichever process gets the advisory lock first; the others see it
        recorded and skip it. Works on a stopped engine too, over a one-off connection
        (``fanout migrate``). ``Unavailable`` if the server cannot be reached.
        """
        applied: list[int] = []
        async with self._connection("migrate", one_off=True) as conn:
            async with conn.transaction():
                await _lock_migrations(conn)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL, applied_ms bigint NOT NULL)"
                )
            done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in discover(MIGRATIONS_PACKAGE):
                if migration.version not in done and await _apply(conn, migration):
                    applied.append(migration.version)
        return applied

    async def ping(self) -> None:
        """One round trip to the server; ``Unavailable`` if it cannot be reached in time.

        Uses the pool when started and a one-off connection otherwise, so a readiness check or
        the CLI can probe the server before ``start()``.
        """
        async with self._connection("ping", one_off=True) as conn:
            await conn.fetchval("SELECT 1")

    # -- for adapters --------------------------------------------------------------------------

    async def transaction(
        self, fn: Callable[[PgConnection], Awaitable[T]], *, snapshot: bool = False
    ) -> T:
        """Run ``fn(conn)`` in one READ COMMITTED transaction and return its result; with
        ``snapshot`` a read-only REPEATABLE READ one, whose statements all see the same moment.

        Commits when ``fn`` returns, rolls back when it raises. ``fn.__name__`` names the
        transaction in ``Unavailable`` messages. Driver errors other than connection failures
        (constraint violations, serialization failures) propagate for the adapter to translate.
        """
        async with (
            self._connection(fn.__name__) as conn,
            conn.transaction(
                isolation="repeatable_read" if snapshot else "read_committed", readonly=snapshot
            ),
        ):
            return await fn(conn)

    async def execute(self, sql: str, *args: object) -> str:
        """Run one statement in its own transaction; the server's status tag (``INSERT 0 1``)."""
        async with self._connection("execute") as conn:
            return await conn.execute(sql, *args)

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        async with self._connection("fetch") as conn:
            return await conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: object) -> asyncpg.Record | None:
        async with self._connection("fetchrow") as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: object) -> Any:  # Any: the column's own type
        async with self._connection("fetchval") as conn:
            return await conn.fetchval(sql, *args)

    async def dedicated_connection(
        self, connect_timeout_s: float, command_timeout_s: float
    ) -> asyncpg.Connection[asyncpg.Record]:
        """A connection of its own, outside the pool, for a long-lived use such as LISTEN; the
        caller closes it. ``Unavailable`` if the server cannot be reached."""
        try:
            return await asyncpg.connect(
                self._dsn, timeout=connect_timeout_s, command_timeout=command_timeout_s
            )
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            raise _unavailable("a dedicated connection", exc) from exc

    # -- internals -----------------------------------------------------------------------------

    async def _connect(self) -> Connection:
        return await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout_s,
            command_timeout=self._command_timeout_s,
            # JIT compiles a plan in ~5 ms once its estimated cost is high; no query here runs
            # long enough to win that back (measured: a fan-out's follower query for 128
            # authors took 36 ms with JIT, 25 without).
            server_settings={"jit": "off"},
        )

    @contextlib.asynccontextmanager
    async def _connection(self, what: str, *, one_off: bool = False) -> AsyncIterator[PgConnection]:
        """A connection, with driver connection errors in the block raised as ``Unavailable``.

        Pooled when started; a one-off connection when stopped and ``one_off``; otherwise
        ``Unavailable`` (using a stopped engine is an outage to callers, as on SQLite).
        """
        try:
            pool = self._pool
            if pool is not None:
                conn = await pool.acquire(self._acquire_timeout_s)
                try:
                    yield conn
                except BaseException as exc:
                    pool.release(conn, reusable=_reusable(exc))
                    raise
                pool.release(conn)
            elif one_off:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._connect_timeout_s,
                    command_timeout=self._command_timeout_s,
                )
                try:
                    yield conn
                finally:
                    await _close_one_off(conn)
            else:
                raise Unavailable("the PostgreSQL engine is not started")
        except (
            asyncpg.CharacterNotInRepertoireError,
            asyncpg.UntranslatableCharacterError,
        ) as exc:
            # Text PostgreSQL cannot store (a NUL character): the client's input, not an outage.
            raise Invalid("the text contains a character that cannot be stored") from exc
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            raise _unavailable(what, exc) from exc


# Errors after which a connection's session may still be busy or is unknown: a cancelled or
# timed-out query may still run on it, a driver failure left the protocol in doubt. After the
# server's own errors (a constraint, a rollback) and the caller's, the session is idle.
# asyncpg's client-side argument errors (DataError: an InterfaceError and a ValueError) are
# raised before anything is sent: the session is idle.
_SESSION_IN_DOUBT = (
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    OSError,
)


def _reusable(exc: BaseException) -> bool:
    """Whether a pooled connection may serve again after its block raised ``exc``
    (a cancellation is a ``BaseException``: never)."""
    if not isinstance(exc, Exception):
        return False
    return isinstance(exc, ValueError) or not isinstance(exc, _SESSION_IN_DOUBT)


async def _lock_migrations(conn: PgConnection) -> None:
    """Serialize migrators until the end of the current transaction."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY, timeout=MIGRATION_TIMEOUT_S
    )


async def _apply(conn: PgConnection, migration: Migration) -> bool:
    """Apply one migration unless another process already has; True if this call applied it."""
    async with conn.transaction():
        await _lock_migrations(conn)
        recorded = await conn.fetchval(
            "SELECT count(*) FROM schema_migrations WHERE version = $1", migration.version
        )
        if recorded:
            return False
        log.info("applying PostgreSQL migration %04d_%s", migration.version, migration.name)
        # No arguments: the simple query protocol, which runs a multi-statement script.
        await conn.execute(migration.sql, timeout=MIGRATION_TIMEOUT_S)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_ms)"
            " VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
            migration.version,
            migration.name,
        )
        return True


async def _close_one_off(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    try:
        await conn.close(timeout=CLOSE_TIMEOUT_S)
    except Exception:  # a connection that cannot close cleanly is dropped: nothing is lost
        conn.terminate()


def _unavailable(what: str, exc: Exception) -> Unavailable:
    # The driver's message names the host and port but never the password.
    detail = str(exc) or "no detail"
    return Unavailable(f"PostgreSQL unavailable during {what}: {type(exc).__name__}: {detail}")
