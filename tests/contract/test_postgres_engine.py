"""The PostgreSQL engine: migrations, concurrent starts, the connection-error boundary."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from bench.servers import free_port
from fanout.core.errors import Unavailable
from fanout.storage.migrations import discover
from fanout.storage.postgres.engine import MIGRATIONS_PACKAGE, PgConnection, PostgresEngine

VERSIONS = [m.version for m in discover(MIGRATIONS_PACKAGE)]
NAMES = [m.name for m in discover(MIGRATIONS_PACKAGE)]
QUICK_S = 5.0  # a refused connection must fail well before any default timeout


async def recorded(engine: PostgresEngine) -> list[tuple[int, str]]:
    rows = await engine.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    return [(row["version"], row["name"]) for row in rows]


async def test_migrations_are_applied_once_and_recorded(fresh_database_url: str) -> None:
    engine = PostgresEngine(fresh_database_url)
    await engine.start()
    try:
        assert VERSIONS and VERSIONS[0] == 1
        assert await recorded(engine) == list(zip(VERSIONS, NAMES, strict=True))
        assert await engine.fetchval("SELECT min(applied_ms) FROM schema_migrations") > 0
        for table in ("meta", "users"):
            assert await engine.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
        assert await engine.migrate() == []
        assert await recorded(engine) == list(zip(VERSIONS, NAMES, strict=True))
    finally:
        await engine.close()


async def test_a_restart_applies_nothing(fresh_database_url: str) -> None:
    first = PostgresEngine(fresh_database_url)
    await first.start()
    await first.close()
    second = PostgresEngine(fresh_database_url)
    await second.start()
    try:
        assert await second.migrate() == []
        assert await second.fetchval("SELECT count(*) FROM schema_migrations") == len(VERSIONS)
    finally:
        await second.close()


async def test_migrate_works_on_a_stopped_engine(fresh_database_url: str) -> None:
    engine = PostgresEngine(fresh_database_url)
    assert await engine.migrate() == VERSIONS
    assert await engine.migrate() == []


async def test_engines_starting_together_migrate_exactly_once(fresh_database_url: str) -> None:
    engines = [PostgresEngine(fresh_database_url, max_size=2) for _ in range(4)]
    try:
        await asyncio.gather(*(engine.start() for engine in engines))
        rows = await engines[0].fetch(
            "SELECT version, count(*) AS n FROM schema_migrations GROUP BY version ORDER BY 1"
        )
        assert [(row["version"], row["n"]) for row in rows] == [(v, 1) for v in VERSIONS]
    finally:
        await asyncio.gather(*(engine.close() for engine in engines))


async def test_a_transaction_commits_on_return_and_rolls_back_on_error(
    fresh_database_url: str,
) -> None:
    engine = PostgresEngine(fresh_database_url)
    await engine.start()
    try:

        async def insert_then_fail(conn: PgConnection) -> None:
            await conn.execute("INSERT INTO meta (name, value) VALUES ('a', '1')")
            raise RuntimeError("boom")

        async def insert(conn: PgConnection) -> str:
            await conn.execute("INSERT INTO meta (name, value) VALUES ('b', '2')")
            return "done"

        with pytest.raises(RuntimeError, match="boom"):
            await engine.transaction(insert_then_fail)
        assert await engine.transaction(insert) == "done"
        assert await engine.fetchval("SELECT string_agg(name, ',') FROM meta") == "b"
        # Constraint violations are the adapters' to translate: they pass the boundary as is.
        with pytest.raises(asyncpg.UniqueViolationError):
            await engine.transaction(insert)
    finally:
        await engine.close()


async def test_a_closed_port_is_unavailable_quickly() -> None:
    engine = PostgresEngine(
        f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", connect_timeout_s=1.0
    )
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await engine.ping()
    assert isinstance(caught.value.__cause__, OSError | asyncpg.PostgresConnectionError)
    with pytest.raises(Unavailable):
        await engine.start()
    assert time.monotonic() - started < QUICK_S


async def test_a_stopped_engine_refuses_queries(fresh_database_url: str) -> None:
    engine = PostgresEngine(fresh_database_url)
    with pytest.raises(Unavailable):
        await engine.fetchval("SELECT 1")
    await engine.start()
    await engine.ping()
    await engine.close()
    await engine.close()  # idempotent
    with pytest.raises(Unavailable):
        await engine.execute("SELECT 1")


async def test_a_cancelled_query_leaves_the_engine_usable(fresh_database_url: str) -> None:
    """The abandoned query's session is dropped, not queued behind; a server error keeps it."""
    engine = PostgresEngine(fresh_database_url, max_size=1)
    await engine.start()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await engine.fetchval("SELECT pg_sleep(5)")
        began = time.monotonic()
        assert await engine.fetchval("SELECT 1") == 1
        assert time.monotonic() - began < QUICK_S - 1  # not behind the abandoned sleep
        assert not await engine.fetchval(  # cancelled on the server, not left running
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
            " AND state = 'active' AND pid <> pg_backend_pid()"
        )
        pid = await engine.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await engine.fetchval("SELECT 1 / 0")
        with pytest.raises(asyncpg.DataError):  # refused client-side: the session is idle
            await engine.fetchval("SELECT $1::int", "not a number")

        async def fails_inside(conn: PgConnection) -> None:
            await conn.execute("SELECT 1")
            raise LookupError("the caller's own error")

        with pytest.raises(LookupError):
            await engine.transaction(fails_inside)
        assert await engine.fetchval("SELECT pg_backend_pid()") == pid
    finally:
        await engine.close()
