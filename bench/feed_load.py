"""Bulk loading and measuring the feed's tables for ``fanout bench feed``.

Building millions of follows through the service would take hours, so the graph and the
background posts go straight into the adapters' tables (``storage/embedded/migrations/
0002_feed.sql``, ``storage/postgres/migrations/0003_feed.sql``): ``follows`` sorted by its
primary key with the secondary indexes dropped meanwhile and rebuilt from their own definitions,
``user_stats`` with the counts the edges imply, ``posts``, and ``pull_sources`` /
``pull_authors`` as the strategy under test would have left them. Everything measured afterwards
goes through the real service, worker and reader.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import numpy as np
import redis.asyncio as aioredis

from bench.graph import IntArray, Posts
from fanout.storage.embedded.engine import SqliteEngine, WriteTx
from fanout.storage.redis import keys

__all__ = ["Loader", "ScaledLoader", "SqliteLoader", "Storage"]

Advance = Callable[[int], None]
Chunks = Iterable[tuple[IntArray, IntArray]]

YEAR_MS = 365 * 86_400_000
POST_TEXT = "A synthetic post of about a hundred characters, the length of a typical short post. #"
MEMORY_SAMPLE = 500  # timelines whose MEMORY USAGE is measured; the mean stands for all
REDIS_BATCH = 5_000  # commands per pipeline when measuring or deleting timelines


@dataclass(frozen=True, slots=True)
class Storage:
    timelines: int  # timelines holding at least one entry
    entries: int  # timeline entries, floor markers not counted
    bytes: int  # what the timelines take in the store


def follow_times(followees: IntArray, followers: IntArray, now_ms: int) -> IntArray:
    """Deterministic edge times within the year before ``now_ms``."""
    spread: IntArray = (followees * 7_919 + followers * 104_729) % YEAR_MS
    return now_ms - YEAR_MS + spread


def _rows(*columns: IntArray) -> list[tuple[int, ...]]:
    return list(zip(*(c.tolist() for c in columns), strict=True))


def _post_rows(posts: Posts, start: int, stop: int) -> list[tuple[int, int, str, int]]:
    ids = posts.ids[start:stop].tolist()
    return list(
        zip(
            ids,
            posts.authors[start:stop].tolist(),
            [f"{POST_TEXT}{i}" for i in ids],
            posts.created_ms[start:stop].tolist(),
            strict=True,
        )
    )


class Loader(Protocol):
    async def load_graph(self, chunks: Chunks, users: int, now_ms: int, advance: Advance) -> None:
        """Insert every edge of ``chunks`` and the ``user_stats`` they imply."""
        ...

    async def load_posts(self, posts: Posts, advance: Advance) -> None: ...

    async def follow(self, follower: int, followees: Sequence[int], at_ms: int) -> None:
        """Add edges (and counts) for one user: the benchmark's reader."""
        ...

    async def reset(self, first_measured_id: int, pull_authors: Sequence[int]) -> None:
        """Back to the state after loading, as ``strategy`` leaves it: no timelines, no posts
        from ``first_measured_id`` on, exactly ``pull_authors`` as pull sources."""
        ...

    async def storage(self) -> Storage: ...

    async def settled(self) -> bool:
        """True when every record written has reached the log (PostgreSQL: outbox empty)."""
        ...

    async def close(self) -> None: ...


class SqliteLoader:
    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def _indexes(self, table: str) -> list[tuple[str, str]]:
        rows = await self._engine.read(
            lambda c: c.execute(
                "SELECT name, sql FROM sqlite_master"
                " WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                (table,),
            ).fetchall()
        )
        return [(str(name), str(sql)) for name, sql in rows]

    async def _without_indexes(self, table: str, load: Callable[[], Any]) -> None:
        """Run ``load`` with ``table``'s secondary indexes dropped, then build them again."""
        indexes = await self._indexes(table)

        def drop(tx: WriteTx) -> None:
            for name, _ in indexes:
                tx.execute(f'DROP INDEX "{name}"')

        def create(tx: WriteTx) -> None:
            for _, sql in indexes:
                tx.execute(sql)

        await self._engine.write(drop)
        await load()
        await self._engine.write(create)

    async def load_graph(self, chunks: Chunks, users: int, now_ms: int, advance: Advance) -> None:
        following = np.zeros(users + 1, dtype=np.int64)
        followers = np.zeros(users + 1, dtype=np.int64)

        def insert(rows: list[tuple[int, ...]], tx: WriteTx) -> None:
            tx.executemany(
                "INSERT INTO follows (followee_id, follower_id, at_ms) VALUES (?, ?, ?)", rows
            )

        async def load() -> None:
            for followees, fans in chunks:
                rows = _rows(followees, fans, follow_times(followees, fans, now_ms))
                await self._engine.write(functools.partial(insert, rows))
                following[:] += np.bincount(fans, minlength=users + 1)
                followers[:] += np.bincount(followees, minlength=users + 1)
                advance(len(rows))

        await self._without_indexes("follows", load)
        ids = np.arange(users + 1, dtype=np.int64)
        stats = _rows(ids[1:], followers[1:], following[1:])
        await self._engine.write(
            lambda tx: tx.executemany(
                "INSERT INTO user_stats (user_id, followers, following) VALUES (?, ?, ?)", stats
            )
        )

    async def load_posts(self, posts: Posts, advance: Advance, chunk: int = 100_000) -> None:
        def insert(rows: list[tuple[int, int, str, int]], tx: WriteTx) -> None:
            tx.executemany(
                "INSERT INTO posts (id, author_id, text, media_urls, created_ms)"
                " VALUES (?, ?, ?, '[]', ?)",
                rows,
            )

        async def load() -> None:
            for start in range(0, len(posts), chunk):
                rows = _post_rows(posts, start, start + chunk)
                await self._engine.write(functools.partial(insert, rows))
                advance(len(rows))

        await self._without_indexes("posts", load)

    async def follow(self, follower: int, followees: Sequence[int], at_ms: int) -> None:
        def job(tx: WriteTx) -> None:
            tx.executemany(
                "INSERT INTO follows (followee_id, follower_id, at_ms) VALUES (?, ?, ?)",
                [(f, follower, at_ms) for f in followees],
            )
            tx.executemany(
                "UPDATE user_stats SET followers = followers + 1 WHERE user_id = ?",
                [(f,) for f in followees],
            )
            tx.execute(
                "INSERT INTO user_stats (user_id, following) VALUES (?, ?)",
                (follower, len(followees)),
            )

        await self._engine.write(job)

    async def reset(self, first_measured_id: int, pull_authors: Sequence[int]) -> None:
        def job(tx: WriteTx) -> None:
            tx.execute("DELETE FROM timelines")
            tx.execute("DELETE FROM timeline_meta")
            tx.execute("DELETE FROM posts WHERE id >= ?", (first_measured_id,))
            tx.execute("DELETE FROM pull_sources")
            tx.executemany(
                "INSERT INTO pull_sources (author_id, last_unpushed_ms) VALUES (?, 0)",
                [(a,) for a in pull_authors],
            )

        await self._engine.write(job)

    async def storage(self) -> Storage:
        def measure(conn: Any) -> tuple[int, int, int]:
            entries, owners = conn.execute(
                "SELECT count(*), count(DISTINCT owner_id) FROM timelines"
            ).fetchone()
            (size,) = conn.execute(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat"
                " WHERE name IN ('timelines', 'timeline_meta')"
            ).fetchone()
            return int(owners), int(entries), int(size)

        return Storage(*await self._engine.read(measure))

    async def settled(self) -> bool:
        return True  # the SQLite log commits with the write that produced it

    async def close(self) -> None:
        return None  # the engine belongs to the caller


class ScaledLoader:
    """PostgreSQL tables (one bulk connection, no statement timeout) + Redis timelines."""

    def __init__(self, dsn: str, client: aioredis.Redis) -> None:
        self._dsn = dsn
        self._client = client
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        if self._conn is None:
            self._conn = await asyncpg.connect(self._dsn)
            await self._conn.execute("SET maintenance_work_mem = '512MB'")  # index builds sort
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _without_indexes(
        self, conn: asyncpg.Connection[asyncpg.Record], table: str, load: Callable[[], Any]
    ) -> None:
        """Run ``load`` with ``table``'s indexes other than constraints' dropped, then build
        them again from their definitions and ANALYZE (autovacuum would, a bit later)."""
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint)",
            table,
        )
        for row in indexes:
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        await load()
        for row in indexes:
            await conn.execute(row["indexdef"])
        await conn.execute(f"ANALYZE {table}")

    async def load_graph(self, chunks: Chunks, users: int, now_ms: int, advance: Advance) -> None:
        following = np.zeros(users + 1, dtype=np.int64)
        followers = np.zeros(users + 1, dtype=np.int64)
        conn = await self._connect()

        async def load() -> None:
            for followees, fans in chunks:
                rows = _rows(followees, fans, follow_times(followees, fans, now_ms))
                await conn.copy_records_to_table(
                    "follows", records=rows, columns=("followee_id", "follower_id", "at_ms")
                )
                following[:] += np.bincount(fans, minlength=users + 1)
                followers[:] += np.bincount(followees, minlength=users + 1)
                advance(len(rows))

        await self._without_indexes(conn, "follows", load)
        # As autovacuum does soon after a bulk insert: sets the visibility map, so the fan-out's
        # follower ranges are index-only scans without a heap fetch per row.
        await conn.execute("VACUUM follows")
        ids = np.arange(users + 1, dtype=np.int64)
        await conn.copy_records_to_table(
            "user_stats",
            records=_rows(ids[1:], followers[1:], following[1:]),
            columns=("user_id", "followers", "following"),
        )
        await conn.execute("ANALYZE user_stats")

    async def load_posts(self, posts: Posts, advance: Advance, chunk: int = 100_000) -> None:
        conn = await self._connect()

        async def load() -> None:
            for start in range(0, len(posts), chunk):
                rows = _post_rows(posts, start, start + chunk)
                await conn.copy_records_to_table(
                    "posts", records=rows, columns=("id", "author_id", "text", "created_ms")
                )
                advance(len(rows))

        await self._without_indexes(conn, "posts", load)

    async def follow(self, follower: int, followees: Sequence[int], at_ms: int) -> None:
        conn = await self._connect()
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO follows (followee_id, follower_id, at_ms)"
                " SELECT f, $2, $3 FROM unnest($1::bigint[]) AS f",
                list(followees),
                follower,
                at_ms,
            )
            await conn.execute(
                "UPDATE user_stats SET followers = followers + 1 WHERE user_id = ANY($1::bigint[])",
                list(followees),
            )
            await conn.execute(
                "INSERT INTO user_stats (user_id, following) VALUES ($1, $2)",
                follower,
                len(followees),
            )

    async def reset(self, first_measured_id: int, pull_authors: Sequence[int]) -> None:
        conn = await self._connect()
        async with conn.transaction():
            await conn.execute("DELETE FROM posts WHERE id >= $1", first_measured_id)
            await conn.execute("DELETE FROM pull_authors")
            await conn.execute(
                "INSERT INTO pull_authors (author_id, since_ms)"
                " SELECT a, 0 FROM unnest($1::bigint[]) AS a",
                list(pull_authors),
            )
        await conn.execute("VACUUM ANALYZE posts")
        for pattern in _timeline_patterns():
            batch: list[bytes] = []
            async for key in self._client.scan_iter(match=pattern, count=REDIS_BATCH):
                batch.append(key)
                if len(batch) >= REDIS_BATCH:
                    await self._client.unlink(*batch)
                    batch = []
            if batch:
                await self._client.unlink(*batch)

    async def storage(self) -> Storage:
        pattern = _timeline_patterns()[0]
        found = [key async for key in self._client.scan_iter(match=pattern, count=REDIS_BATCH)]
        members = 0
        for start in range(0, len(found), REDIS_BATCH):
            pipe = self._client.pipeline(transaction=False)
            for key in found[start : start + REDIS_BATCH]:
                pipe.zcard(key)
            members += sum(await pipe.execute())
        sample = found[:: max(1, len(found) // MEMORY_SAMPLE)]
        pipe = self._client.pipeline(transaction=False)
        for key in sample:
            pipe.memory_usage(key, samples=0)
        sizes = [int(size or 0) for size in await pipe.execute()]
        total = round(sum(sizes) / len(sizes) * len(found)) if sizes else 0
        return Storage(len(found), members - len(found), total)  # one floor marker per set

    async def settled(self) -> bool:
        conn = await self._connect()
        return not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM log_outbox)")


def _timeline_patterns() -> tuple[bytes, bytes]:
    """SCAN patterns of every timeline and every built marker, derived from ``keys`` (the one
    place that knows key formats): what precedes the hash tag, then anything."""

    def pattern(key: bytes) -> bytes:
        return key.split(b"{", 1)[0] + b"*"

    return pattern(keys.timeline(0)), pattern(keys.timeline_built(0))
