"""SQLite adapters of the links ports (``fanout.links.ports``)."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from fanout.accounts.model import UserId
from fanout.core.errors import Conflict
from fanout.links.aggregate import DAY_MS, GRAINS, build_stats, deltas, past, visits
from fanout.links.model import Click, Link, LinkStats
from fanout.storage.embedded.engine import SqliteEngine, WriteTx

__all__ = ["SqliteClickStore", "SqliteLinkStore"]

_COLUMNS = "code, owner_id, url, redirect, created_ms, expires_ms, max_visits, deleted"
_TOP = (2**63 - 1, "\U0010ffff")
PRUNE_CHUNK_ROWS = 1_000  # rows one prune transaction walks (a few ms of the writer)

# An aggregation batch is a few statements, each taking its rows as one JSON array: SQLite walks
# them in C, and the batch's thread gives up the GIL once per statement, not once per row (an
# offloaded batch of ~70 000 rows a second that did so made the event loop wait for the GIL
# back that often).
_ROWS = "SELECT {} FROM json_each(?1) WHERE true"  # WHERE: an upsert's SELECT needs one


def _rows(width: int) -> str:
    """A SELECT of the rows of a JSON array of ``width``-element arrays."""
    return _ROWS.format(", ".join(f"json_extract(value, '$[{i}]')" for i in range(width)))


_ADD_COUNTS = (
    "INSERT INTO click_counts (code, grain, bucket_ms, clicks, uniques) "
    + _rows(5)
    + " ON CONFLICT (code, grain, bucket_ms) DO UPDATE SET"
    " clicks = clicks + excluded.clicks, uniques = uniques + excluded.uniques"
)
_ADD_DIMS = (
    "INSERT INTO click_dims (code, day_ms, dim, value, clicks) "
    + _rows(5)
    + " ON CONFLICT (code, day_ms, dim, value) DO UPDATE SET clicks = clicks + excluded.clicks"
)
_ADD_TOTALS = (
    "INSERT INTO click_totals (code, clicks, bots) "
    + _rows(3)
    + " ON CONFLICT (code) DO UPDATE SET"
    " clicks = clicks + excluded.clicks, bots = bots + excluded.bots"
)
# The positions, in the array given, of the (code, hour, visitor) triples not yet recorded.
_UNSEEN_VISITORS = (
    "SELECT json_group_array(key) FROM json_each(?1) WHERE NOT EXISTS"
    " (SELECT 1 FROM click_visitors WHERE code = json_extract(value, '$[0]')"
    " AND hour_ms = json_extract(value, '$[1]') AND visitor = json_extract(value, '$[2]'))"
)
_ADD_VISITORS = "INSERT INTO click_visitors (code, hour_ms, visitor) " + _rows(3)
_json = msgspec.json.encode


def _each(tx: WriteTx, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    if rows:
        tx.execute(sql, (_json(rows),))


def _new_visitors(tx: WriteTx, clicks: Sequence[Click]) -> set[tuple[str, int, str]]:
    """Record the visits of ``clicks`` (see ``visits``); those new in their hour."""
    triples = visits(clicks)
    if not triples:
        return set()
    (unseen,) = tx.execute(_UNSEEN_VISITORS, (_json(triples),)).fetchone()
    new = [triples[i] for i in msgspec.json.decode(unseen)]
    _each(tx, _ADD_VISITORS, new)
    return set(new)


def _by_code(code: str, conn: sqlite3.Connection) -> Any:
    return conn.execute(f"SELECT {_COLUMNS} FROM links WHERE code = ?", (code,)).fetchone()


def _prune_chunk(
    table: str, old: str, before: int, after: str | None, tx: WriteTx
) -> tuple[int, str | None]:
    """Delete ``table``'s rows matching ``old`` among the codes past ``after`` (None: from the
    first) up to the code ``PRUNE_CHUNK_ROWS`` rows on, whole codes: (rows deleted, the last
    code covered, or None once the table's end is reached)."""
    start, mark = ("code >= ?", "") if after is None else ("code > ?", after)
    row = tx.execute(
        f"SELECT code FROM {table} WHERE {start} ORDER BY code LIMIT 1 OFFSET ?",
        (mark, PRUNE_CHUNK_ROWS),
    ).fetchone()
    if row is None:  # the rest of the table
        deleted = tx.execute(f"DELETE FROM {table} WHERE {start} AND {old}", (mark, before))
        return int(deleted.rowcount), None
    last = str(row[0])
    deleted = tx.execute(
        f"DELETE FROM {table} WHERE {start} AND code <= ? AND {old}", (mark, last, before)
    )
    return int(deleted.rowcount), last


def _link(row: tuple[str, int, str, int, int, int | None, int | None, int]) -> Link:
    return Link(row[0], UserId(row[1]), row[2], row[3], row[4], row[5], row[6], bool(row[7]))


class SqliteLinkStore:
    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def lease_block(self, size: int) -> int:
        row = await self._engine.write(
            lambda tx: tx.execute(
                "INSERT INTO counters (name, value) VALUES ('links', ?) ON CONFLICT (name)"
                " DO UPDATE SET value = value + excluded.value RETURNING value",
                (size,),
            ).fetchone()
        )
        return int(row[0]) - size

    async def create(self, link: Link) -> None:
        def job(tx: WriteTx) -> None:
            tx.execute(
                f"INSERT INTO links ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (link.code, link.owner_id, link.url, link.redirect, link.created_ms,
                 link.expires_ms, link.max_visits, int(link.deleted)),
            )  # fmt: skip

        try:
            await self._engine.write(job)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"the code {link.code!r} is taken") from exc

    async def get(self, code: str) -> Link | None:
        row = await self._engine.read(functools.partial(_by_code, code), lookup=True)
        return None if row is None else _link(row)

    def get_now(self, code: str) -> Link | None:
        """``get`` at once, on the event loop's thread: a redirect's cache miss (a primary key
        lookup) answered without a wait."""
        row = self._engine.lookup(functools.partial(_by_code, code))
        return None if row is None else _link(row)

    async def find_for_reuse(self, owner: UserId, url: str) -> Link | None:
        row = await self._engine.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM links WHERE owner_id = ? AND url = ? AND deleted = 0"
                " ORDER BY created_ms DESC LIMIT 1",
                (owner, url),
            ).fetchone()
        )
        return None if row is None else _link(row)

    async def by_owner(
        self, owner: UserId, before: tuple[int, str] | None, limit: int
    ) -> list[Link]:
        at = before or _TOP
        rows = await self._engine.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM links WHERE owner_id = ? AND deleted = 0"
                " AND (created_ms, code) < (?, ?) ORDER BY created_ms DESC, code DESC LIMIT ?",
                (owner, at[0], at[1], limit),
            ).fetchall()
        )
        return [_link(r) for r in rows]

    async def delete(self, code: str) -> bool:
        changed = await self._engine.write(
            lambda tx: (
                tx.execute(
                    "UPDATE links SET deleted = 1 WHERE code = ? AND deleted = 0", (code,)
                ).rowcount
            )
        )
        return bool(changed)

    async def take_visit(self, code: str) -> bool:
        row = await self._engine.write(
            lambda tx: tx.execute(
                "UPDATE links SET visits = visits + 1 WHERE code = ?"
                " AND (max_visits IS NULL OR visits < max_visits) RETURNING visits",
                (code,),
            ).fetchone()
        )
        return row is not None


class SqliteClickStore:
    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def apply(self, group: str, batches: Mapping[int, Sequence[tuple[str, Click]]]) -> int:
        return await self._engine.write(lambda tx: self._apply(tx, group, batches), offload=True)

    def _apply(
        self, tx: WriteTx, group: str, batches: Mapping[int, Sequence[tuple[str, Click]]]
    ) -> int:
        fresh: list[Click] = []
        moved: list[tuple[str, int, int, int]] = []
        for partition, clicks in sorted(batches.items()):
            row = tx.execute(
                "SELECT hi, lo FROM click_watermarks WHERE grp = ? AND partition = ?",
                (group, partition),
            ).fetchone()
            later, last = past(clicks, (row[0], row[1]) if row else (-1, -1))
            if later:
                fresh += later
                moved.append((group, partition, *last))
        if not fresh:
            return 0

        new = _new_visitors(tx, fresh)

        def first_seen(code: str, hour: int, visitor: str) -> bool:
            return (code, hour, visitor) in new

        found = deltas(fresh, first_seen)
        # Rows in key order: consecutive upserts land on the same or neighbouring pages.
        counts = sorted((*key, n, found.uniques[key]) for key, n in found.clicks.items())
        _each(tx, _ADD_COUNTS, counts)
        _each(tx, _ADD_DIMS, sorted((*key, n) for key, n in found.dims.items()))
        codes = sorted(set(found.totals) | set(found.bots))
        _each(tx, _ADD_TOTALS, [(code, found.totals[code], found.bots[code]) for code in codes])
        tx.executemany(
            "INSERT INTO click_watermarks (grp, partition, hi, lo) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (grp, partition) DO UPDATE SET hi = excluded.hi, lo = excluded.lo",
            moved,
        )
        return len(fresh)

    async def stats(
        self, code: str, granularity: str, from_ms: int, to_ms: int, top: int = 10
    ) -> LinkStats:
        grain, step = GRAINS[granularity]

        def query(conn: sqlite3.Connection) -> LinkStats:
            buckets = {
                t: (clicks, uniques)
                for t, clicks, uniques in conn.execute(
                    "SELECT bucket_ms, clicks, uniques FROM click_counts WHERE code = ?"
                    " AND grain = ? AND bucket_ms >= ? AND bucket_ms < ?",
                    (code, grain, from_ms - from_ms % step, to_ms),
                )
            }
            dims = conn.execute(
                "SELECT dim, value, sum(clicks) FROM click_dims WHERE code = ? AND day_ms >= ?"
                " AND day_ms < ? GROUP BY dim, value",
                (code, from_ms - from_ms % DAY_MS, to_ms),
            ).fetchall()
            row = conn.execute(
                "SELECT clicks, bots FROM click_totals WHERE code = ?", (code,)
            ).fetchone()
            total, bots = row if row else (0, 0)
            return build_stats(granularity, from_ms, to_ms, buckets, dims, total, bots, top)

        return await self._engine.read(query, snapshot=True)  # totals and dims agree

    async def prune(self, visitors_before_ms: int, minutes_before_ms: int) -> int:
        """In transactions of about ``PRUNE_CHUNK_ROWS`` rows each, by ranges of codes: the
        tables' keys start with the code, so a delete by time alone walks a whole table in one
        transaction — 1.2 s to drop 3.5M of 5M rows, every write of the process waiting."""
        pruned = 0
        for table, old, before in (
            ("click_visitors", "hour_ms < ?", visitors_before_ms),
            ("click_counts", "grain = 'm' AND bucket_ms < ?", minutes_before_ms),
        ):
            after: str | None = None
            while True:
                chunk = functools.partial(_prune_chunk, table, old, before, after)
                deleted, after = await self._engine.write(chunk, offload=True)
                pruned += deleted
                if after is None:
                    break
        return pruned

    async def totals(self, codes: Sequence[str]) -> dict[str, int]:
        unique = list(set(codes))
        if not unique:
            return {}
        marks = ",".join("?" * len(unique))
        rows = await self._engine.read(
            lambda c: c.execute(
                f"SELECT code, clicks FROM click_totals WHERE code IN ({marks}) AND clicks > 0",
                unique,
            ).fetchall()
        )
        return {str(code): int(n) for code, n in rows}
