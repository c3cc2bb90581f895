"""Suite-wide fixtures: the backend servers, and a fresh database per test on each of them.

A backend that cannot be started is skipped on a laptop, and fails the run when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from bench.servers import BackendUnavailable, postgres_server, redis_server


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} unavailable: {exc}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    given = os.environ.get("FANOUT_TEST_REDIS_URL")
    if given:
        yield given
        return
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(redis_server())
        except BackendUnavailable as exc:
            _unavailable("redis", exc)
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    given = os.environ.get("FANOUT_TEST_DATABASE_URL")
    if given:
        yield given
        return
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_server())
        except BackendUnavailable as exc:
            _unavailable("postgres", exc)
        yield url


def _in_own_loop(coro: Coroutine[Any, Any, None]) -> None:
    """Run setup I/O on a private loop in a thread: callable from sync and async fixtures."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture
def clean_redis_url(redis_url: str) -> str:
    """The test Redis, emptied before the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_url


@pytest.fixture
def fresh_database_url(postgres_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for this test; dropped afterwards."""
    import asyncpg

    name = "t_" + uuid.uuid4().hex[:12]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _in_own_loop(admin(f'CREATE DATABASE "{name}"'))
    base = postgres_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    _in_own_loop(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
