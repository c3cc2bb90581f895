"""Backend parametrization for the contract suite: every port, every adapter, one test file."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fanout.accounts.model import UserId
from fanout.accounts.ports import SecretStore, UserStore
from fanout.chat.model import (
    Channel,
    ChannelId,
    ChannelKind,
    Event,
    Message,
    MessageId,
    NewMessage,
    UploadId,
)
from fanout.core.clock import SystemClock
from fanout.core.log import Log

LogFactory = Callable[[], Awaitable[Log]]

LOG_BACKENDS = ["sqlite", "redis"]
SQL_BACKENDS = ["sqlite", "postgres"]  # the stores that live in SQLite or PostgreSQL
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


@pytest.fixture(params=SQL_BACKENDS)
def sql_backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The backend name and, for PostgreSQL, a fresh database's URL.

    Sync on purpose: an async fixture cannot ``getfixturevalue`` another async fixture (the
    event loop is already running), and only the postgres case may need the server.
    """
    if request.param == "postgres":
        return "postgres", request.getfixturevalue("fresh_database_url")
    return request.param, None


@pytest.fixture
async def accounts(
    sql_backend: tuple[str, str | None], tmp_path: Path
) -> AsyncIterator[AccountStores]:
    """The accounts stores of one backend, on a fresh database."""
    backend, database_url = sql_backend
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
    redis: Any = None  # the cache's client


@pytest.fixture(params=LINK_BACKENDS)
def links_backend(request: pytest.FixtureRequest) -> dict[str, str]:
    return _backend(request)


@pytest.fixture
async def links(links_backend: dict[str, str], tmp_path: Path) -> AsyncIterator[LinksUnderTest]:
    if links_backend["kind"] == "sqlite":
        from fanout.storage.embedded.clicks import SqliteClickStore
        from fanout.storage.embedded.engine import SqliteEngine
        from fanout.storage.embedded.links import SqliteLinkStore

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
    yield LinksUnderTest(PostgresLinkStore(pg), PostgresClickStore(pg), RedisLinkCache(client),
                         client)  # fmt: skip
    await client.aclose()
    await pg.close()


# -- chat ----------------------------------------------------------------------------------------

CHAT_BASE_ID = 2**60  # ids above 2**53 catch any float or JS-number round trip
CHAT_START_MS = 1_767_225_600_000


@dataclass
class ChatUnderTest:
    """Chat's stores on one backend, with id and time sources and a view of the log."""

    channels: Any
    messages: Any
    uploads: Any
    # The ``chat.events`` payloads keyed by one channel, in log order, everything committed.
    logged: Callable[[int], Awaitable[list[bytes]]]
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(CHAT_BASE_ID + 1))
    _ms: Iterator[int] = field(default_factory=lambda: itertools.count(CHAT_START_MS, 7))

    def next_id(self) -> int:
        """Increasing, like Snowflakes: a later message has a larger id."""
        return next(self._ids)

    def now_ms(self) -> int:
        return next(self._ms)

    async def group(self, *members: int, kind: ChannelKind = "group") -> Channel:
        """A new channel created by the first member, holding all of them."""
        draft = Channel(ChannelId(self.next_id()), kind, f"{kind} {len(members)}",
                        UserId(members[0]), self.now_ms(), 0, 0, len(members))  # fmt: skip
        channel, created = await self.channels.create(
            draft, [UserId(m) for m in members], dm_pair=None
        )
        assert created
        return channel  # type: ignore[no-any-return]  # ``channels`` is an adapter typed Any

    def draft(
        self, channel_id: int, sender: int, text: str, *, cmid: str | None = None,
        attachments: tuple[int, ...] = (),
    ) -> NewMessage:  # fmt: skip
        """A message to send, with a fresh id (as a retry would have) and ``cmid`` if given."""
        message_id = self.next_id()
        return NewMessage(MessageId(message_id), ChannelId(channel_id), UserId(sender),
                          cmid or f"c{message_id}", text,
                          tuple(UploadId(a) for a in attachments), self.now_ms())  # fmt: skip

    async def send(self, channel_id: int, sender: int, text: str, **kw: Any) -> Message:
        """Send a new message; the stored message (its event must be new)."""
        message, event = await self.messages.send(self.draft(channel_id, sender, text, **kw))
        assert isinstance(event, Event) and event.kind == "message"
        return message  # type: ignore[no-any-return]


@pytest.fixture
async def chat(sql_backend: tuple[str, str | None], tmp_path: Path) -> AsyncIterator[ChatUnderTest]:
    from fanout.core.log import Topics

    backend, database_url = sql_backend
    if backend == "sqlite":
        from fanout.core.partition import partition_for
        from fanout.storage.embedded.chat import SqliteChannelStore
        from fanout.storage.embedded.chat_messages import SqliteMessageStore, SqliteUploadStore
        from fanout.storage.embedded.engine import SqliteEngine
        from fanout.storage.embedded.log import SqliteLog

        engine = SqliteEngine(tmp_path / "chat.sqlite3")
        await engine.start()
        log = SqliteLog(engine, SystemClock(), partitions=PARTITIONS)
        groups = itertools.count()

        async def logged_sqlite(channel_id: int) -> list[bytes]:
            key, group = str(channel_id), f"inspect-{next(groups)}"  # a new group reads it all
            partition = partition_for(key, PARTITIONS)
            payloads: list[bytes] = []
            while records := await log.read(Topics.CHAT_EVENTS, group, "c", partition, 500):
                payloads += [r.payload for r in records if r.key == key]
                await log.ack(group, records)
            return payloads

        yield ChatUnderTest(SqliteChannelStore(engine, log), SqliteMessageStore(engine, log),
                            SqliteUploadStore(engine), logged_sqlite)  # fmt: skip
        await engine.close()
        return

    from fanout.storage.postgres.chat import PostgresChannelStore
    from fanout.storage.postgres.chat_messages import PostgresMessageStore, PostgresUploadStore
    from fanout.storage.postgres.engine import PostgresEngine
    from fanout.storage.postgres.outbox import PostgresOutbox

    assert database_url is not None
    pg = PostgresEngine(database_url)
    await pg.start()
    outbox = PostgresOutbox()

    async def logged_postgres(channel_id: int) -> list[bytes]:
        rows = await pg.fetch(
            "SELECT payload FROM log_outbox WHERE topic = $1 AND key = $2 ORDER BY id",
            Topics.CHAT_EVENTS,
            str(channel_id),
        )
        return [bytes(r["payload"]) for r in rows]

    yield ChatUnderTest(PostgresChannelStore(pg, outbox), PostgresMessageStore(pg, outbox),
                        PostgresUploadStore(pg), logged_postgres)  # fmt: skip
    await pg.close()


PRESENCE_BACKENDS = ["memory", "redis"]


@dataclass
class PresenceUnderTest:
    """Two handles on one presence state (two gateway processes on Redis; embedded mode has one
    process, so both are the same store) and a way to let presence time pass."""

    stores: tuple[Any, Any]
    wait_ms: Callable[[int], Awaitable[None]]


@pytest.fixture(params=PRESENCE_BACKENDS)
async def presence(request: pytest.FixtureRequest) -> AsyncIterator[PresenceUnderTest]:
    if request.param == "memory":
        from fanout.core.clock import ManualClock
        from fanout.storage.embedded.presence import MemoryPresenceStore

        clock = ManualClock()
        store = MemoryPresenceStore(clock)

        async def advance(ms: int) -> None:
            clock.advance(ms / 1000)

        yield PresenceUnderTest((store, store), advance)
        return

    from fanout.storage.redis.connection import connect
    from fanout.storage.redis.presence import RedisPresenceStore

    url = request.getfixturevalue("clean_redis_url")
    clients = [await connect(url), await connect(url)]

    async def sleep(ms: int) -> None:
        await asyncio.sleep(ms / 1000)

    # Few shards and tiny sweep batches, so sweeping takes several passes per shard.
    stores = tuple(RedisPresenceStore(c, shards=5, sweep_batch=4) for c in clients)
    yield PresenceUnderTest((stores[0], stores[1]), sleep)
    for client in clients:
        await client.aclose()
