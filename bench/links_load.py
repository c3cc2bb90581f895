"""State for ``fanout bench links``: the backend's servers, the benchmark user, one million
links loaded in bulk straight into the store's table, and the aggregated click totals.

Bench codes are ``zb`` + 6 base62 digits: 8 characters, so they never collide with the codes
fanout generates (at most 7) and, zero-padded, they sort in creation order, which keeps the bulk
insert appending to the primary key. Counting and cleaning stay inside the ``[zb, zc)`` range,
so a shared database (``FANOUT_DATABASE_URL``) keeps its own links and counts.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx

from bench.servers import postgres_server, redis_server
from fanout.core import base62

__all__ = [
    "CODE_PREFIX",
    "ClickCounter",
    "backend_env",
    "bench_user",
    "clear_link_cache",
    "code_of",
    "load_links",
    "open_counter",
    "target_url",
]

CODE_PREFIX = "zb"
_CODE_END = "zc"  # the first string past every bench code
_CODE_DIGITS = 6  # 62**6 ≈ 5.7e10 links
USERNAME = "bench_links"
PASSWORD = "bench-links-password"
LIFETIME_MS = 10 * 365 * 86_400_000  # far beyond any run
PG_COPY_CHUNK = 100_000  # records per COPY: bounded memory for the record tuples


def code_of(i: int) -> str:
    return CODE_PREFIX + base62.encode(i, width=_CODE_DIGITS)


def target_url(i: int) -> str:
    """Every target has the length of ``bench.links_ceiling.LOCATION``."""
    return f"https://example.com/landing/{i % 10_000_000:07d}"


@contextlib.contextmanager
def backend_env(backend: str, workdir: Path) -> Iterator[dict[str, str]]:
    """``FANOUT_*`` settings of every process of one backend; scaled starts throwaway Redis and
    PostgreSQL servers unless ``FANOUT_REDIS_URL`` / ``FANOUT_DATABASE_URL`` name existing ones."""
    base = {"FANOUT_RATE_LIMIT_PER_S": "0", "FANOUT_LOG_LEVEL": "warning"}
    if backend == "embedded":
        data_dir = workdir / "embedded"
        data_dir.mkdir(parents=True, exist_ok=True)
        yield {**base, "FANOUT_DATA_DIR": str(data_dir)}
    elif backend == "scaled":
        with contextlib.ExitStack() as stack:
            redis_url = os.environ.get("FANOUT_REDIS_URL") or stack.enter_context(redis_server())
            database_url = os.environ.get("FANOUT_DATABASE_URL") or stack.enter_context(
                postgres_server()
            )
            yield {
                **base,
                "FANOUT_DATA_DIR": str(workdir / "scaled"),
                "FANOUT_REDIS_URL": redis_url,
                "FANOUT_DATABASE_URL": database_url,
            }
    else:
        raise ValueError(f"unknown backend {backend!r}")


async def bench_user(url: str) -> tuple[int, str]:
    """Register the benchmark's user through the API (or log in if it exists): (id, token)."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        body = {"username": USERNAME, "password": PASSWORD}
        created = await client.post("/v1/users", json=body)
        if created.status_code not in (201, 409):
            created.raise_for_status()
        session = await client.post("/v1/sessions", json=body)
        session.raise_for_status()
        payload = session.json()
        return int(payload["user_id"]), str(payload["token"])


def _rows(count: int, owner: int, now_ms: int) -> Iterator[tuple[Any, ...]]:
    expires = now_ms + LIFETIME_MS
    for i in range(count):
        yield (code_of(i), owner, target_url(i), 302, now_ms - count + i, expires)


async def load_links(env: dict[str, str], count: int, owner: int) -> float:
    """Insert ``count`` links owned by ``owner`` (after removing earlier bench links); seconds."""
    began = time.perf_counter()
    now_ms = int(time.time() * 1000)
    if "FANOUT_DATABASE_URL" in env:
        import asyncpg

        conn = await asyncpg.connect(env["FANOUT_DATABASE_URL"])
        try:
            await conn.execute("DELETE FROM links WHERE code >= $1 AND code < $2",
                               CODE_PREFIX, _CODE_END)  # fmt: skip
            rows = _rows(count, owner, now_ms)
            for _ in range(0, count, PG_COPY_CHUNK):
                chunk = [r for _, r in zip(range(PG_COPY_CHUNK), rows, strict=False)]
                await conn.copy_records_to_table(
                    "links", records=chunk,
                    columns=["code", "owner_id", "url", "redirect", "created_ms", "expires_ms"],
                )  # fmt: skip
            await conn.execute("ANALYZE links")
        finally:
            await conn.close()
    else:
        conn_ = sqlite3.connect(Path(env["FANOUT_DATA_DIR"]) / "fanout.sqlite3", timeout=30)
        try:
            with conn_:
                conn_.execute("DELETE FROM links WHERE code >= ? AND code < ?",
                              (CODE_PREFIX, _CODE_END))  # fmt: skip
                conn_.executemany(
                    "INSERT INTO links (code, owner_id, url, redirect, created_ms, expires_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    _rows(count, owner, now_ms),
                )
            conn_.execute("ANALYZE")
        finally:
            conn_.close()
    return time.perf_counter() - began


class ClickCounter(Protocol):
    async def totals(self) -> tuple[int, int]:
        """(human clicks, bot clicks) aggregated over every bench code."""
        ...

    async def clicks(self, code: str) -> int: ...


class _SqliteCounter:
    def __init__(self, path: Path) -> None:
        # Read-only, autocommit: every query sees the latest committed aggregation (WAL).
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

    async def totals(self) -> tuple[int, int]:
        row = self._conn.execute(
            "SELECT coalesce(sum(clicks), 0), coalesce(sum(bots), 0) FROM click_totals"
            " WHERE code >= ? AND code < ?",
            (CODE_PREFIX, _CODE_END),
        ).fetchone()
        return int(row[0]), int(row[1])

    async def clicks(self, code: str) -> int:
        row = self._conn.execute("SELECT clicks FROM click_totals WHERE code = ?", (code,))
        found = row.fetchone()
        return int(found[0]) if found else 0

    def close(self) -> None:
        self._conn.close()


class _PostgresCounter:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def totals(self) -> tuple[int, int]:
        row = await self._conn.fetchrow(
            "SELECT coalesce(sum(clicks), 0) AS c, coalesce(sum(bots), 0) AS b"
            " FROM click_totals WHERE code >= $1 AND code < $2",
            CODE_PREFIX,
            _CODE_END,
        )
        return int(row["c"]), int(row["b"])

    async def clicks(self, code: str) -> int:
        found = await self._conn.fetchval("SELECT clicks FROM click_totals WHERE code = $1", code)
        return int(found or 0)


@contextlib.asynccontextmanager
async def open_counter(env: dict[str, str]) -> AsyncIterator[ClickCounter]:
    if "FANOUT_DATABASE_URL" in env:
        import asyncpg

        conn = await asyncpg.connect(env["FANOUT_DATABASE_URL"])
        try:
            yield _PostgresCounter(conn)
        finally:
            await conn.close()
    else:
        counter = _SqliteCounter(Path(env["FANOUT_DATA_DIR"]) / "fanout.sqlite3")
        try:
            yield counter
        finally:
            counter.close()


async def clear_link_cache(env: dict[str, str]) -> int:
    """Drop Redis's cached links (scaled), so every server starts as cold as the first."""
    if "FANOUT_REDIS_URL" not in env:
        return 0
    from fanout.storage.redis import keys
    from fanout.storage.redis.connection import connect

    client = await connect(env["FANOUT_REDIS_URL"])
    try:
        batch: list[bytes] = []
        dropped = 0
        async for key in client.scan_iter(match=keys.link_cache("*"), count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                dropped += await client.delete(*batch)
                batch.clear()
        if batch:
            dropped += await client.delete(*batch)
        return dropped
    finally:
        await client.aclose()
