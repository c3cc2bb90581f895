"""SQLite adapter of the click store (``fanout.links.ports.ClickStore``).

An aggregation batch is counted by SQLite itself: its clicks go in as one JSON array into a
temporary table, and a few ``INSERT … SELECT … GROUP BY`` statements add them to the counters
— the arithmetic of ``fanout.links.aggregate.deltas`` (which PostgreSQL's adapter runs), in C;
a contract test checks the two agree on random batches. The batch runs on the engine's
offload thread, which gives up the GIL for each statement and needs it back only between them:
when the arithmetic ran in Python there (~3 µs a click), that thread held the GIL for most of
each window, and the event loop serving redirects waited for it.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Mapping, Sequence

from fanout.links.aggregate import (
    DAY_MS,
    DIMENSIONS,
    GRAINS,
    HOUR_MS,
    MINUTE_MS,
    build_stats,
    past,
)
from fanout.links.model import LinkStats, decode_clicks, encode_clicks
from fanout.storage.embedded.engine import SqliteEngine, WriteTx

__all__ = ["PRUNE_CHUNK_ROWS", "SqliteClickStore", "click_array"]

PRUNE_CHUNK_ROWS = 1_000  # rows one prune transaction walks (a few ms of the writer)

# Temporary tables: this connection's alone, emptied after each batch, rolled back with it.
_TEMP_TABLES = {
    # The batch, one row per click (a Click is a JSON array of its fields, in field order).
    "click_batch": "code TEXT, minute INTEGER, visitor TEXT, referrer TEXT, country TEXT,"
    " device TEXT, bot INTEGER, utm_source TEXT, utm_medium TEXT, utm_campaign TEXT",
    # The batch's human clicks of known codes tallied by what they add to the same counters
    # (code, minute and dimensions): the counts of every grain and the dimensions are added up
    # from these rows, a few per link and minute, instead of from every click once per grain.
    "click_shapes": "code TEXT, minute INTEGER, "
    + ", ".join(f"{dim} TEXT" for dim in DIMENSIONS)
    + ", n INTEGER",
    # Each (code, hour, visitor) of the batch not yet recorded, with the first minute it
    # clicked in.
    "click_new": "code TEXT, hour_ms INTEGER, visitor TEXT, minute INTEGER",
}
_CREATE = tuple(f"CREATE TEMP TABLE IF NOT EXISTS {t} ({c})" for t, c in _TEMP_TABLES.items())
_EMPTY = tuple(f"DELETE FROM temp.{table}" for table in _TEMP_TABLES)


def _field(i: int) -> str:
    # The UTM fields (7-9) have defaults: a record from before a field existed lacks it.
    value = f"json_extract(value, '$[{i}]')"
    return value if i < 7 else f"coalesce({value}, '')"


# A plain INSERT: its row count is the number of clicks loaded (a WITH before it would make the
# count -1 in Python's sqlite3).
_LOAD = (
    f"INSERT INTO temp.click_batch SELECT {_field(0)}, {_field(1)} - {_field(1)} % {MINUTE_MS}, "
    + ", ".join(_field(i) for i in range(2, 10))
    + " FROM json_each(?1)"
)
# Humans with a known code: bots count only in the bot total, orphan visits only in the total
# of the code "" (strangers must not grow the tables).
_HUMANS = "NOT bot AND code != ''"
_SHAPE = f"code, minute, {', '.join(DIMENSIONS)}"
_ADD_SHAPES = (
    f"INSERT INTO temp.click_shapes SELECT {_SHAPE}, count(*) FROM temp.click_batch"
    f" WHERE {_HUMANS} GROUP BY {_SHAPE}"
)
_NEW_VISITS = (
    "INSERT INTO temp.click_new SELECT code, hour_ms, visitor, minute FROM ("
    f" SELECT code, minute - minute % {HOUR_MS} AS hour_ms, visitor, min(minute) AS minute"
    f" FROM temp.click_batch WHERE {_HUMANS} GROUP BY code, hour_ms, visitor) AS s"
    " WHERE NOT EXISTS (SELECT 1 FROM click_visitors AS v"
    " WHERE v.code = s.code AND v.hour_ms = s.hour_ms AND v.visitor = s.visitor)"
)
_ADD_VISITORS = (
    "INSERT INTO click_visitors (code, hour_ms, visitor)"
    " SELECT code, hour_ms, visitor FROM temp.click_new ORDER BY code, hour_ms, visitor"
)
_GRAIN_STEPS = ", ".join(f"('{grain}', {step})" for grain, step in GRAINS.values())
# Rows in key order: consecutive upserts land on the same or neighbouring pages.
_ADD_COUNTS = (
    f"WITH grains (grain, step) AS (VALUES {_GRAIN_STEPS}),"
    " c AS (SELECT code, grain, minute - minute % step AS bucket_ms, sum(n) AS n"
    " FROM temp.click_shapes, grains GROUP BY code, grain, bucket_ms),"
    " u AS (SELECT code, grain, minute - minute % step AS bucket_ms, count(*) AS n"
    " FROM temp.click_new, grains GROUP BY code, grain, bucket_ms)"
    " INSERT INTO click_counts (code, grain, bucket_ms, clicks, uniques)"
    " SELECT c.code, c.grain, c.bucket_ms, c.n, coalesce(u.n, 0) FROM c LEFT JOIN u"
    " ON u.code = c.code AND u.grain = c.grain AND u.bucket_ms = c.bucket_ms"
    " WHERE true ORDER BY c.code, c.grain, c.bucket_ms"
    " ON CONFLICT (code, grain, bucket_ms) DO UPDATE SET"
    " clicks = clicks + excluded.clicks, uniques = uniques + excluded.uniques"
)
_ADD_DIMS = (
    f"WITH s AS (SELECT code, minute - minute % {DAY_MS} AS day_ms, {', '.join(DIMENSIONS)}, n"
    " FROM temp.click_shapes),"
    " d (code, day_ms, dim, value, n) AS ("
    + " UNION ALL ".join(f"SELECT code, day_ms, '{dim}', {dim}, n FROM s" for dim in DIMENSIONS)
    + ") INSERT INTO click_dims (code, day_ms, dim, value, clicks)"
    " SELECT code, day_ms, dim, value, sum(n) FROM d WHERE value != ''"
    " GROUP BY code, day_ms, dim, value ORDER BY code, day_ms, dim, value"
    " ON CONFLICT (code, day_ms, dim, value) DO UPDATE SET clicks = clicks + excluded.clicks"
)
_ADD_TOTALS = (
    "INSERT INTO click_totals (code, clicks, bots)"
    " SELECT code, sum(NOT bot), sum(bot) FROM temp.click_batch WHERE true"
    " GROUP BY code ORDER BY code"
    " ON CONFLICT (code) DO UPDATE SET"
    " clicks = clicks + excluded.clicks, bots = bots + excluded.bots"
)
_COUNT = (_ADD_SHAPES, _NEW_VISITS, _ADD_VISITORS, _ADD_COUNTS, _ADD_DIMS, _ADD_TOTALS)


def click_array(payloads: Iterable[bytes]) -> bytes:
    """One JSON array of every click of ``payloads`` (records' payloads), joined as bytes:
    no click is decoded, but those of records in an older form."""
    parts = []
    for raw in payloads:
        if raw[:1] != b"[":
            raw = encode_clicks(decode_clicks(raw))
        if len(raw) > 2:  # not an empty batch: "[]"
            parts.append(raw[1:-1])
    return b"[" + b",".join(parts) + b"]"


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


class SqliteClickStore:
    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def apply(self, group: str, batches: Mapping[int, Sequence[tuple[str, bytes]]]) -> int:
        return await self._engine.write(lambda tx: self._apply(tx, group, batches), offload=True)

    def _apply(
        self, tx: WriteTx, group: str, batches: Mapping[int, Sequence[tuple[str, bytes]]]
    ) -> int:
        fresh: list[bytes] = []
        moved: list[tuple[str, int, int, int]] = []
        for partition, records in sorted(batches.items()):
            row = tx.execute(
                "SELECT hi, lo FROM click_watermarks WHERE grp = ? AND partition = ?",
                (group, partition),
            ).fetchone()
            later, last = past(records, (row[0], row[1]) if row else (-1, -1))
            if later:
                fresh += later
                moved.append((group, partition, *last))
        if not fresh:
            return 0
        for create in _CREATE:
            tx.execute(create)
        applied = tx.execute(_LOAD, (click_array(fresh),)).rowcount
        # Emptied once counted (a window's rows would wait for the next); a batch that fails
        # rolls its rows back with it, so the tables are empty whenever one starts.
        for sql in (*_COUNT, *_EMPTY):
            tx.execute(sql)
        tx.executemany(
            "INSERT INTO click_watermarks (grp, partition, hi, lo) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (grp, partition) DO UPDATE SET hi = excluded.hi, lo = excluded.lo",
            moved,
        )
        return applied

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
