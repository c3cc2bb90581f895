"""Backend parametrization for the contract suite: every port, every adapter, one test file."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fanout.accounts.ports import SecretStore, UserStore
from fanout.core.clock import SystemClock
from fanout.core.log import Log

LogFactory = Callable[[], Awaitable[Log]]

LOG_BACKENDS = ["sqlite", "redis"]
ACCOUNT_BACKENDS = ["sqlite", "postgres"]
PARTITIONS = 4


@pytest.fixture(params=LOG_BACKENDS)
async def make_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogFactory]:
    """A factory of log handles that all see the same fresh log (like separate processes)."""
    closers: list[Callable[[], Awaitable[None]]] = []
    clock = SystemClock()
    if request.param == "sqlite":
        from fanout.storage.embedded.engine import SqliteEngine
        from fanout.storage.embedded.log import SqliteLog

        engine = SqliteEngine(tmp_path / "log.sqlite3")
        await engine.start()
        closers.append(engine.close)

        async def make() -> Log:
            return SqliteLog(engine, clock, partitions=PARTITIONS)

    else:
        from fanout.storage.redis.connection import connect
        from fanout.storage.redis.log import RedisLog

        url = request.getfixturevalue("clean_redis_url")

        async def make() -> Log:
            client = await connect(url)
            closers.append(client.aclose)
            return RedisLog(client, clock, partitions=PARTITIONS)

    yield make
    for close in reversed(closers):
        await close()


@dataclass(frozen=True, slots=True)
class AccountStores:
    users: UserStore
    secrets: SecretStore


@pytest.fixture(params=ACCOUNT_BACKENDS)
def account_backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The backend name and, for PostgreSQL, a fresh database's URL.

    Sync on purpose: an async fixture cannot ``getfixturevalue`` another async fixture (the
    event loop is already running), and only the postgres case may need the server.
    """
    if request.param == "postgres":
        return "postgres", request.getfixturevalue("fresh_database_url")
    return request.param, None


@pytest.fixture
async def accounts(
    account_backend: tuple[str, str | None], tmp_path: Path
) -> AsyncIterator[AccountStores]:
    """The accounts stores of one backend, on a fresh database."""
    backend, database_url = account_backend
    if backend == "sqlite":
        from fanout.storage.embedded.accounts import FileSecretStore, SqliteUserStore
        from fanout.storage.embedded.engine import SqliteEngine

        sqlite = SqliteEngine(tmp_path / "x.sqlite3")
        await sqlite.start()
        yield AccountStores(SqliteUserStore(sqlite), FileSecretStore(tmp_path))
        await sqlite.close()
    else:
        from fanout.storage.postgres.accounts import PostgresSecretStore, PostgresUserStore
        from fanout.storage.postgres.engine import PostgresEngine

        assert database_url is not None
        postgres = PostgresEngine(database_url)
        await postgres.start()
        yield AccountStores(PostgresUserStore(postgres), PostgresSecretStore(postgres))
        await postgres.close()


@dataclass
class FeedUnderTest:
    """The feed's stores on one backend, plus a way to see the events they committed."""

    posts: Any
    follows: Any
    timelines: Any
    snapshots: Any
    log: Any
    flush_events: Callable[[], Awaitable[None]]  # make committed events visible in ``log``


FEED_BACKENDS = ["sqlite", "scaled"]
TIMELINE_CAP = 10  # tiny, so trimming is exercised


def _backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """The backend a parametrized fixture names; sync, so it may request the server fixtures."""
    if request.param == "sqlite":
        return {"kind": "sqlite"}
    return {
        "kind": "scaled",
        "redis": request.getfixturevalue("clean_redis_url"),
        "postgres": request.getfixturevalue("fresh_database_url"),
    }


@pytest.fixture(params=FEED_BACKENDS)
def feed_backend(request: pytest.FixtureRequest) -> dict[str, str]:
    return _backend(request)


@pytest.fixture
async def feed(feed_backend: dict[str, str], tmp_path: Path) -> AsyncIterator[FeedUnderTest]:
    from tests.feedkit import open_feed_stores

    async with contextlib.AsyncExitStack() as stack:
        stores, log, flush = await open_feed_stores(
            feed_backend, tmp_path, SystemClock(), TIMELINE_CAP, stack
        )
        yield FeedUnderTest(stores.posts, stores.follows, stores.timelines, stores.snapshots,
                            log, flush)  # fmt: skip


LINK_BACKENDS = ["sqlite", "scaled"]


@dataclass
class LinksUnderTest:
    links: Any
    clicks: Any
    cache: Any  # None on the embedded backend, which has no shared cache


@pytest.fixture(params=LINK_BACKENDS)
def links_backend(request: pytest.FixtureRequest) -> dict[str, str]:
    return _backend(request)


@pytest.fixture
async def links(links_backend: dict[str, str], tmp_path: Path) -> AsyncIterator[LinksUnderTest]:
    if links_backend["kind"] == "sqlite":
        from fanout.storage.embedded.engine import SqliteEngine
        from fanout.storage.embedded.links import SqliteClickStore, SqliteLinkStore

        engine = SqliteEngine(tmp_path / "links.sqlite3")
        await engine.start()
        yield LinksUnderTest(SqliteLinkStore(engine), SqliteClickStore(engine), None)
        await engine.close()
        return
    from fanout.storage.postgres.engine import PostgresEngine
    from fanout.storage.postgres.links import PostgresClickStore, PostgresLinkStore
    from fanout.storage.redis.connection import connect
    from fanout.storage.redis.links import RedisLinkCache

    pg = PostgresEngine(links_backend["postgres"])
    await pg.start()
    client = await connect(links_backend["redis"])
    yield LinksUnderTest(PostgresLinkStore(pg), PostgresClickStore(pg), RedisLinkCache(client))
    await client.aclose()
    await pg.close()
