"""The SQLite log: records live in the platform's database file.

Because the log shares the file and the writer with every embedded store, a store's write and
the records it publishes commit in one transaction (:meth:`SqliteLog.append` inside a write
job): the transactional outbox without an outbox. Consumers in this process are woken by an
after-commit callback instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
from collections.abc import Mapping, Sequence

from fanout.core.clock import Clock
from fanout.core.log import DLQ_SUFFIX, LogRecord
from fanout.core.partition import partition_for
from fanout.storage.embedded.engine import SqliteEngine, WriteTx

__all__ = ["SqliteLog"]

COMPACT_CHUNK = 100  # rows per delete job on the loop: about a millisecond each under load


class SqliteLog:
    """:class:`fanout.core.log.Log` on the embedded SQLite engine."""

    def __init__(self, engine: SqliteEngine, clock: Clock, *, partitions: int = 8) -> None:
        self._engine = engine
        self._clock = clock
        self._partitions = partitions
        self._events: dict[str, asyncio.Event] = {}
        self._cursors: set[tuple[str, str]] = set()  # (topic, group) whose cursor rows exist

    @property
    def partitions(self) -> int:
        return self._partitions

    # -- producing -----------------------------------------------------------------------------

    def append(
        self,
        tx: WriteTx,
        topic: str,
        key: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Append a record inside the caller's write job: it commits with the job or not at all."""
        tx.execute(
            "INSERT INTO log_records (topic, partition, key, payload, headers, created_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                topic,
                partition_for(key, self._partitions),
                key,
                payload,
                json.dumps(dict(headers)) if headers else None,
                self._clock.now_ms(),
            ),
        )
        tx.on_commit(lambda: self._wake(topic))

    async def publish(
        self, topic: str, key: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        await self._engine.write(lambda tx: self.append(tx, topic, key, payload, headers))

    async def publish_many(self, topic: str, entries: Sequence[tuple[str, bytes]]) -> None:
        def job(tx: WriteTx) -> None:
            for key, payload in entries:
                self.append(tx, topic, key, payload)

        if entries:
            await self._engine.write(job)

    def _wake(self, topic: str) -> None:
        event = self._events.pop(topic, None)
        if event is not None:
            event.set()

    async def wait(self, topic: str, timeout_s: float) -> None:
        event = self._events.get(topic)
        if event is None:
            event = self._events[topic] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)

    # -- membership and leases -----------------------------------------------------------------

    async def join(self, topic: str, group: str, consumer: str, ttl_ms: int) -> int:
        now = self._clock.now_ms()

        def job(tx: WriteTx) -> int:
            tx.execute(
                "INSERT INTO log_members (topic, grp, consumer, expires_ms) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (topic, grp, consumer)"
                " DO UPDATE SET expires_ms = excluded.expires_ms",
                (topic, group, consumer, now + ttl_ms),
            )
            tx.execute(
                "DELETE FROM log_members WHERE topic = ? AND grp = ? AND expires_ms <= ?",
                (topic, group, now),
            )
            self._ensure_cursors(tx, topic, group)
            row = tx.execute(
                "SELECT count(*) FROM log_members WHERE topic = ? AND grp = ?", (topic, group)
            ).fetchone()
            return int(row[0])

        return await self._engine.write(job)

    def _ensure_cursors(self, tx: WriteTx, topic: str, group: str) -> None:
        """Create the group's cursor rows (never deleted): once per process, not on every read
        (an idle partition reads four times a second; eight inserts each were most of the
        statements an idle process ran)."""
        if (topic, group) in self._cursors:
            return
        tx.on_commit(functools.partial(self._cursors.add, (topic, group)))
        tx.executemany(
            "INSERT OR IGNORE INTO log_cursors (topic, grp, partition, last_delivered)"
            " VALUES (?, ?, ?, 0)",
            [(topic, group, p) for p in range(self._partitions)],
        )

    async def acquire(
        self, topic: str, group: str, consumer: str, partition: int, ttl_ms: int
    ) -> bool:
        now = self._clock.now_ms()

        def job(tx: WriteTx) -> bool:
            cur = tx.execute(
                "INSERT INTO log_leases (topic, grp, partition, consumer, expires_ms)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (topic, grp, partition) DO UPDATE"
                " SET consumer = excluded.consumer, expires_ms = excluded.expires_ms"
                " WHERE log_leases.consumer = excluded.consumer OR log_leases.expires_ms <= ?",
                (topic, group, partition, consumer, now + ttl_ms, now),
            )
            return cur.rowcount == 1

        return await self._engine.write(job)

    async def release(self, topic: str, group: str, consumer: str, partition: int) -> None:
        await self._engine.write(
            lambda tx: tx.execute(
                "DELETE FROM log_leases WHERE topic = ? AND grp = ? AND partition = ?"
                " AND consumer = ?",
                (topic, group, partition, consumer),
            )
        )

    # -- consuming -----------------------------------------------------------------------------

    async def read(
        self, topic: str, group: str, consumer: str, partition: int, count: int
    ) -> list[LogRecord]:
        def job(tx: WriteTx) -> list[LogRecord]:
            self._ensure_cursors(tx, topic, group)
            key = (topic, group, partition)
            pending = tx.execute(
                "SELECT record_id FROM log_pending WHERE topic = ? AND grp = ? AND partition = ?"
                " ORDER BY record_id LIMIT ?",
                (*key, count),
            ).fetchall()
            ids = [row[0] for row in pending]
            if ids:
                tx.executemany(
                    "UPDATE log_pending SET deliveries = deliveries + 1, consumer = ?"
                    " WHERE topic = ? AND grp = ? AND partition = ? AND record_id = ?",
                    [(consumer, *key, rid) for rid in ids],
                )
            if len(ids) < count:
                (last,) = tx.execute(
                    "SELECT last_delivered FROM log_cursors"
                    " WHERE topic = ? AND grp = ? AND partition = ?",
                    key,
                ).fetchone()
                fresh = [
                    row[0]
                    for row in tx.execute(
                        "SELECT id FROM log_records WHERE topic = ? AND partition = ? AND id > ?"
                        " ORDER BY id LIMIT ?",
                        (topic, partition, last, count - len(ids)),
                    )
                ]
                if fresh:
                    tx.executemany(
                        "INSERT INTO log_pending"
                        " (topic, grp, partition, record_id, consumer, deliveries)"
                        " VALUES (?, ?, ?, ?, ?, 1)",
                        [(*key, rid, consumer) for rid in fresh],
                    )
                    tx.execute(
                        "UPDATE log_cursors SET last_delivered = ?"
                        " WHERE topic = ? AND grp = ? AND partition = ?",
                        (fresh[-1], *key),
                    )
                    ids.extend(fresh)
            return self._load(tx.conn, topic, group, partition, ids)

        return await self._engine.write(job)

    def _load(
        self, conn: sqlite3.Connection, topic: str, group: str, partition: int, ids: list[int]
    ) -> list[LogRecord]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = conn.execute(
            "SELECT r.id, r.key, r.payload, r.headers, p.deliveries FROM log_records r"
            " JOIN log_pending p ON p.record_id = r.id AND p.topic = r.topic"
            " AND p.partition = r.partition AND p.grp = ?"
            f" WHERE r.id IN ({marks}) ORDER BY r.id",
            (group, *ids),
        ).fetchall()
        return [
            LogRecord(
                topic=topic,
                partition=partition,
                offset=str(rid),
                key=key,
                payload=bytes(payload),
                deliveries=deliveries,
                headers=json.loads(headers) if headers else {},
            )
            for rid, key, payload, headers, deliveries in rows
        ]

    async def ack(self, group: str, records: Sequence[LogRecord]) -> None:
        if records:
            await self._engine.write(lambda tx: self._ack(tx, group, records))

    def _ack(self, tx: WriteTx, group: str, records: Sequence[LogRecord]) -> None:
        tx.executemany(
            "DELETE FROM log_pending WHERE topic = ? AND grp = ? AND partition = ?"
            " AND record_id = ?",
            [(r.topic, group, r.partition, int(r.offset)) for r in records],
        )

    async def unclaim(self, group: str, consumer: str, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        await self._engine.write(
            lambda tx: tx.executemany(
                "UPDATE log_pending SET deliveries = max(deliveries - 1, 0)"
                " WHERE topic = ? AND grp = ? AND partition = ? AND record_id = ?",
                [(r.topic, group, r.partition, int(r.offset)) for r in records],
            )
        )

    async def dead_letter(self, group: str, record: LogRecord, error: str) -> None:
        headers = {
            **record.headers,
            "error": error[:2000],
            "source_partition": str(record.partition),
            "source_offset": record.offset,
            "group": group,
            "deliveries": str(record.deliveries),
        }

        def job(tx: WriteTx) -> None:
            self.append(tx, record.topic + DLQ_SUFFIX, record.key, record.payload, headers)
            self._ack(tx, group, [record])

        await self._engine.write(job)

    # -- retention -----------------------------------------------------------------------------

    async def compact(self, chunk: int = COMPACT_CHUNK) -> int:
        """Delete records that every consumer group of their topic has acknowledged.

        A partition's low-water mark is, over its groups, the lowest pending record or the first
        undelivered one; everything below it is gone from every group's view. Topics no group
        reads (a ``.dlq`` nobody consumes) are kept. Deletes run in chunks of ``chunk`` rows,
        each its own short write job in the loop's batches, so compaction never holds the
        writer for long; a partition with nothing below its mark costs no write job.
        """
        # Not offloaded: a thread's job for every partition of every topic stalled a busy loop
        # at each hand-over (docs/benchmarks.md, chat, session 18).

        def marks(conn: sqlite3.Connection) -> list[tuple[str, int, int, int | None]]:
            return conn.execute(
                "SELECT m.topic, m.partition, m.low, (SELECT min(r.id) FROM log_records r"
                "  WHERE r.topic = m.topic AND r.partition = m.partition)"
                " FROM (SELECT c.topic, c.partition, min(coalesce("
                "  (SELECT min(p.record_id) FROM log_pending p WHERE p.topic = c.topic"
                "   AND p.grp = c.grp AND p.partition = c.partition),"
                "  c.last_delivered + 1)) AS low"
                "  FROM log_cursors c GROUP BY c.topic, c.partition) m"
            ).fetchall()

        deleted = 0
        for topic, partition, low, oldest in await self._engine.read(marks):
            if oldest is None or oldest >= low:
                continue  # nothing below the mark: no write job

            def delete_chunk(tx: WriteTx, t: str = topic, p: int = partition, lo: int = low) -> int:
                return tx.execute(
                    "DELETE FROM log_records WHERE id IN (SELECT id FROM log_records"
                    " WHERE topic = ? AND partition = ? AND id < ? ORDER BY id LIMIT ?)",
                    (t, p, lo, chunk),
                ).rowcount

            while True:
                removed = await self._engine.write(delete_chunk)
                deleted += removed
                if removed < chunk:
                    break
        return deleted

    # -- observing -----------------------------------------------------------------------------

    async def lag(self, topic: str, group: str) -> int:
        def query(conn: sqlite3.Connection) -> int:
            (pending,) = conn.execute(
                "SELECT count(*) FROM log_pending WHERE topic = ? AND grp = ?", (topic, group)
            ).fetchone()
            (undelivered,) = conn.execute(
                "SELECT count(*) FROM log_records r"
                " LEFT JOIN log_cursors c ON c.topic = r.topic AND c.partition = r.partition"
                " AND c.grp = ?"
                " WHERE r.topic = ? AND r.id > coalesce(c.last_delivered, 0)",
                (group, topic),
            ).fetchone()
            return int(pending) + int(undelivered)

        return await self._engine.read(query)

    async def groups(self) -> list[tuple[str, str]]:
        rows = await self._engine.read(
            lambda conn: conn.execute("SELECT DISTINCT topic, grp FROM log_cursors").fetchall()
        )
        return [(str(t), str(g)) for t, g in rows]

    async def ping(self) -> None:
        await self._engine.ping()
