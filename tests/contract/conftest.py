"""Backend parametrization for the contract suite: every port, every adapter, one test file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fanout.core.clock import SystemClock
from fanout.core.log import Log

LogFactory = Callable[[], Awaitable[Log]]

LOG_BACKENDS = ["sqlite", "redis"]
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
