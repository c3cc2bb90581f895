"""Suite-wide fixtures: the backend servers, and a fresh database per test on each of them.

A backend that cannot be started is skipped on a laptop, and fails the run when ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator

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


@pytest.fixture
async def clean_redis_url(redis_url: str) -> AsyncIterator[str]:
    """The test Redis, emptied before the test."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    yield redis_url


@pytest.fixture
async def fresh_database_url(postgres_url: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for this test; dropped afterwards."""
    import asyncpg

    name = "t_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = postgres_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
