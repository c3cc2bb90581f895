"""SQLite timelines and in-process ranked snapshots (ports in ``fanout.feed.ports``).

A timeline is rows (owner, score, post) plus a meta row (size, floor, built marker). Pushes
count rows into ``size``; only when it passes ``cap + slack`` are the oldest rows deleted, down
to ``cap``, raising the floor to the newest one removed: one trim per ``slack`` inserts instead
of one per insert. Entries at or below the floor are refused (they would be holes in the
"complete above the floor" guarantee the reader relies on).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from fanout.accounts.model import UserId
from fanout.core.clock import Clock
from fanout.feed.model import Entry, Position, PostId, trim_slack
from fanout.storage.embedded.engine import SqliteEngine, WriteTx

__all__ = ["MemorySnapshotStore", "SqliteTimelineStore"]

_TOP = Position(2**63 - 1, 2**63 - 1)
# Timelines one write job may touch on the event loop; a fan-out to more runs off it (~50 µs each).
OFFLOAD_FROM = 64
# Timelines per write job of a push: a job is one transaction holding the writer (~50 µs a
# timeline, so ~0.25 s), and other writes queue behind it.
TIMELINES_PER_JOB = 5_000
_INSERT = (
    "INSERT OR IGNORE INTO timelines (owner_id, score_ms, post_id)"
    " SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM timeline_meta"
    " WHERE owner_id = ?1 AND (floor_score, floor_id) >= (?2, ?3))"
)


class SqliteTimelineStore:
    def __init__(self, engine: SqliteEngine, *, cap: int = 800) -> None:
        self._engine = engine
        self._cap = cap
        self._slack = trim_slack(cap)

    def _add_rows(self, tx: WriteTx, owner: int, entries: Sequence[Entry]) -> None:
        added = 0
        for entry in entries:
            added += tx.execute(_INSERT, (owner, entry.score_ms, entry.post_id)).rowcount
        if not added:
            return
        (size,) = tx.execute(
            "INSERT INTO timeline_meta (owner_id, size) VALUES (?, ?) ON CONFLICT (owner_id)"
            " DO UPDATE SET size = size + excluded.size RETURNING size",
            (owner, added),
        ).fetchone()
        if size > self._cap + self._slack:
            self._trim(tx, owner, size)

    def _trim(self, tx: WriteTx, owner: int, size: int) -> None:
        newest_removed = tx.execute(
            "SELECT score_ms, post_id FROM timelines WHERE owner_id = ?"
            " ORDER BY score_ms, post_id LIMIT 1 OFFSET ?",
            (owner, size - self._cap - 1),
        ).fetchone()
        self._raise_floor(tx, owner, Position(*newest_removed))

    def _raise_floor(self, tx: WriteTx, owner: int, floor: Position) -> None:
        """Delete entries at or below ``floor``, lift the floor to it (never lower it)."""
        removed = tx.execute(
            "DELETE FROM timelines WHERE owner_id = ? AND (score_ms, post_id) <= (?, ?)",
            (owner, floor.score_ms, floor.post_id),
        ).rowcount
        tx.execute(
            "INSERT INTO timeline_meta (owner_id, size, floor_score, floor_id) VALUES (?, 0, ?, ?)"
            " ON CONFLICT (owner_id) DO UPDATE SET size = size - ?,"
            " floor_score = CASE WHEN floor_score IS NULL"
            "  OR (floor_score, floor_id) < (excluded.floor_score, excluded.floor_id)"
            "  THEN excluded.floor_score ELSE floor_score END,"
            " floor_id = CASE WHEN floor_score IS NULL"
            "  OR (floor_score, floor_id) < (excluded.floor_score, excluded.floor_id)"
            "  THEN excluded.floor_id ELSE floor_id END",
            (owner, floor.score_ms, floor.post_id, removed),
        )

    async def push(self, entry: Entry, owners: Sequence[UserId]) -> None:
        await self.push_many([(entry, owners)])

    async def push_many(self, pushes: Sequence[tuple[Entry, Sequence[UserId]]]) -> None:
        by_owner: dict[int, list[Entry]] = {}
        for entry, owners in pushes:
            for owner in owners:
                by_owner.setdefault(owner, []).append(entry)

        written = list(by_owner)
        for start in range(0, len(written), TIMELINES_PER_JOB):
            part = written[start : start + TIMELINES_PER_JOB]

            def job(tx: WriteTx, part: Sequence[int] = part) -> None:
                for owner in part:
                    self._add_rows(tx, owner, by_owner[owner])

            await self._engine.write(job, offload=len(part) > OFFLOAD_FROM)

    async def add(
        self, owner: UserId, entries: Sequence[Entry], floor: Position | None = None
    ) -> None:
        def job(tx: WriteTx) -> None:
            if floor is not None:
                self._raise_floor(tx, owner, floor)
            self._add_rows(tx, owner, entries)

        await self._engine.write(job)

    async def page(self, owner: UserId, before: Position | None, limit: int) -> list[Entry]:
        at = before or _TOP
        rows = await self._engine.read(
            lambda c: c.execute(
                "SELECT t.score_ms, t.post_id FROM timelines t"
                " LEFT JOIN timeline_meta m ON m.owner_id = t.owner_id"
                " WHERE t.owner_id = ? AND (t.score_ms, t.post_id) < (?, ?)"
                " AND (m.floor_score IS NULL"
                " OR (t.score_ms, t.post_id) > (m.floor_score, m.floor_id))"
                " ORDER BY t.score_ms DESC, t.post_id DESC LIMIT ?",
                (owner, at.score_ms, at.post_id, limit),
            ).fetchall()
        )
        return [Entry(PostId(r[1]), r[0]) for r in rows]

    async def floor(self, owner: UserId) -> Position | None:
        row = await self._engine.read(
            lambda c: c.execute(
                "SELECT floor_score, floor_id FROM timeline_meta WHERE owner_id = ?", (owner,)
            ).fetchone()
        )
        return None if row is None or row[0] is None else Position(row[0], row[1])

    async def remove(self, owner: UserId, post_ids: Sequence[PostId]) -> None:
        def job(tx: WriteTx) -> None:
            removed = sum(
                tx.execute(
                    "DELETE FROM timelines WHERE owner_id = ? AND post_id = ?", (owner, pid)
                ).rowcount
                for pid in set(post_ids)
            )
            if removed:
                tx.execute(
                    "UPDATE timeline_meta SET size = size - ? WHERE owner_id = ?", (removed, owner)
                )

        if post_ids:
            await self._engine.write(job)

    async def remove_everywhere(self, post_id: PostId, owners: Sequence[UserId]) -> None:
        def job(tx: WriteTx) -> None:
            for owner in owners:
                if tx.execute(
                    "DELETE FROM timelines WHERE owner_id = ? AND post_id = ?", (owner, post_id)
                ).rowcount:
                    tx.execute(
                        "UPDATE timeline_meta SET size = size - 1 WHERE owner_id = ?", (owner,)
                    )

        if owners:
            await self._engine.write(job, offload=len(owners) > OFFLOAD_FROM)

    async def built_at(self, owner: UserId) -> int | None:
        row = await self._engine.read(
            lambda c: c.execute(
                "SELECT built_ms FROM timeline_meta WHERE owner_id = ?", (owner,)
            ).fetchone()
        )
        return None if row is None or row[0] is None else int(row[0])

    async def mark_built(self, owner: UserId, at_ms: int | None) -> None:
        await self._engine.write(
            lambda tx: tx.execute(
                "INSERT INTO timeline_meta (owner_id, built_ms) VALUES (?, ?)"
                " ON CONFLICT (owner_id) DO UPDATE SET built_ms = excluded.built_ms",
                (owner, at_ms),
            )
        )

    async def size(self, owner: UserId) -> int:
        row = await self._engine.read(
            lambda c: c.execute(
                "SELECT count(*) FROM timelines WHERE owner_id = ?", (owner,)
            ).fetchone()
        )
        return int(row[0])


MAX_SNAPSHOTS = 10_000  # ranked snapshots kept in memory; the oldest are forgotten first


class MemorySnapshotStore:
    """Ranked snapshots in this process (embedded mode has one process)."""

    def __init__(self, clock: Clock, *, max_entries: int = MAX_SNAPSHOTS) -> None:
        self._clock = clock
        self._max = max_entries
        self._items: OrderedDict[str, tuple[float, list[PostId]]] = OrderedDict()

    async def put(self, key: str, post_ids: Sequence[PostId], ttl_s: int) -> None:
        self._items[key] = (self._clock.monotonic() + ttl_s, list(post_ids))
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    async def get(self, key: str) -> list[PostId] | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, ids = item
        if self._clock.monotonic() >= expires:
            del self._items[key]
            return None
        return list(ids)
