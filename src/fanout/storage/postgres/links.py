"""PostgreSQL adapters of the links ports (``fanout.links.ports``), schema in ``0004_links.sql``.

They mirror the embedded adapters (``storage/embedded/links.py``; the click store counts in
Python, ``links.aggregate``, where SQLite's counts in SQL) statement for statement where
SQLite's single writer made something safe for free, PostgreSQL gets it from a row lock:

* ``lease_block`` bumps one counter row (``INSERT ... ON CONFLICT DO UPDATE``): the row lock
  serializes leases across processes, and the counter is durable, so blocks never overlap, not
  even across restarts.
* ``take_visit`` is one conditional ``UPDATE``: the row lock makes check-and-count atomic.
* ``ClickStore.apply`` locks its (group, partition) watermark row first, so concurrent
  appliers of one partition run one after the other and each sees the watermark the previous
  one committed. Counter rows shared by several partitions are written in sorted key order in
  every transaction, so two partitions' appliers cannot deadlock on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from fanout.accounts.model import UserId
from fanout.core.errors import Conflict
from fanout.core.passes import Passes, together_or_alone
from fanout.links.aggregate import DAY_MS, GRAINS, Deltas, build_stats, deltas, past, visits
from fanout.links.model import Click, Link, LinkStats, decode_clicks
from fanout.storage.postgres.engine import PgConnection, PostgresEngine

__all__ = ["PostgresClickStore", "PostgresLinkStore"]

_BIGINT_MAX = 2**63 - 1
# ``before=None``: newer than any real link (a created_ms of 2**63 - 1 is not a real time). A
# sentinel rather than a second query, so one prepared statement serves every page.
_NEWEST = (_BIGINT_MAX, "")
_COUNTER = "links"  # the row of ``counters`` that code blocks are leased from

GETS_PER_QUERY = 256  # codes looked up in one query at most
_COLUMNS = "code, owner_id, url, redirect, created_ms, expires_ms, max_visits, deleted"


def _link(row: asyncpg.Record) -> Link:
    return Link(
        code=row["code"],
        owner_id=UserId(row["owner_id"]),
        url=row["url"],
        redirect=row["redirect"],
        created_ms=row["created_ms"],
        expires_ms=row["expires_ms"],
        max_visits=row["max_visits"],
        deleted=row["deleted"],
    )


@dataclass(slots=True)
class _Get:
    code: str
    link: Link | None = None
    error: Exception | None = None


class PostgresLinkStore:
    """Links and the code counter; contract in :class:`fanout.links.ports.LinkStore`.

    Choices the port leaves open: ``find_for_reuse`` breaks a tie on creation time by the
    greater code; ``take_visit`` also counts visits of links without a limit (always True) and
    answers False for a code that does not exist.
    """

    def __init__(self, engine: PostgresEngine) -> None:
        self._engine = engine
        self._gets: Passes[_Get] = Passes(self._get_pass, most=GETS_PER_QUERY, at_once=2)

    async def lease_block(self, size: int) -> int:
        end = await self._engine.fetchval(
            "INSERT INTO counters (name, value) VALUES ($1, $2) ON CONFLICT (name)"
            " DO UPDATE SET value = counters.value + excluded.value RETURNING value",
            _COUNTER,
            size,
        )
        return int(end) - size

    async def create(self, link: Link) -> None:
        try:
            await self._engine.execute(
                f"INSERT INTO links ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                link.code,
                link.owner_id,
                link.url,
                link.redirect,
                link.created_ms,
                link.expires_ms,
                link.max_visits,
                link.deleted,
            )
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"the code {link.code!r} is taken") from exc

    async def get(self, code: str) -> Link | None:
        get = _Get(code)
        await self._gets.submit([get])
        if get.error is not None:
            raise get.error
        return get.link

    async def _get_pass(self, gets: Sequence[_Get]) -> None:
        """The gets made while one was in flight, in one query (redirects missing the caches
        under load ask for many codes at once; a round trip costs more than the rows). If that
        query fails (a code PostgreSQL refuses), each get is made alone: it fails only itself."""
        await together_or_alone(gets, self._get_together, self._get_alone)

    async def _get_together(self, gets: Sequence[_Get]) -> None:
        rows = await self._engine.fetch(
            f"SELECT {_COLUMNS} FROM links WHERE code = ANY($1::text[])", [g.code for g in gets]
        )
        found = {row["code"]: _link(row) for row in rows}
        for get in gets:
            get.link = found.get(get.code)

    async def _get_alone(self, get: _Get) -> None:
        row = await self._engine.fetchrow(f"SELECT {_COLUMNS} FROM links WHERE code = $1", get.code)
        get.link = None if row is None else _link(row)

    async def find_for_reuse(self, owner: UserId, url: str) -> Link | None:
        # md5(url) is what links_live_by_url indexes; url = $2 rules out md5 collisions.
        row = await self._engine.fetchrow(
            f"SELECT {_COLUMNS} FROM links WHERE owner_id = $1 AND md5(url) = md5($2)"
            " AND url = $2 AND NOT deleted ORDER BY created_ms DESC, code DESC LIMIT 1",
            owner,
            url,
        )
        return None if row is None else _link(row)

    async def by_owner(
        self, owner: UserId, before: tuple[int, str] | None, limit: int
    ) -> list[Link]:
        if limit <= 0:
            return []
        at_ms, at_code = before or _NEWEST
        # The row comparison is the index condition of links_live_by_owner: a page reads only
        # its own rows. Codes compare byte-wise (COLLATE "C"), as in SQLite.
        rows = await self._engine.fetch(
            f"SELECT {_COLUMNS} FROM links WHERE owner_id = $1 AND NOT deleted"
            " AND (created_ms, code) < ($2, $3) ORDER BY created_ms DESC, code DESC LIMIT $4",
            owner,
            at_ms,
            at_code,
            limit,
        )
        return [_link(row) for row in rows]

    async def delete(self, code: str) -> bool:
        deleted = await self._engine.fetchval(
            "UPDATE links SET deleted = true WHERE code = $1 AND NOT deleted RETURNING true", code
        )
        return bool(deleted)

    async def take_visit(self, code: str) -> bool:
        # Concurrent visits queue on the row lock; each re-checks the condition against the
        # count the previous one committed (READ COMMITTED re-evaluates it), so none overshoots.
        taken = await self._engine.fetchval(
            "UPDATE links SET visits = visits + 1 WHERE code = $1"
            " AND (max_visits IS NULL OR visits < max_visits) RETURNING true",
            code,
        )
        return bool(taken)


# -- clicks --------------------------------------------------------------------------------------

_ADD_WATERMARKS = (
    "INSERT INTO click_watermarks (grp, partition, hi, lo)"
    " SELECT $1, p, -1, -1 FROM unnest($2::int[]) AS p ON CONFLICT DO NOTHING"
)
_LOCK_WATERMARKS = (
    "SELECT partition, hi, lo FROM click_watermarks WHERE grp = $1 AND partition = ANY($2::int[])"
    " ORDER BY partition FOR UPDATE"
)
_MOVE_WATERMARKS = (
    "UPDATE click_watermarks w SET hi = m.hi, lo = m.lo"
    " FROM unnest($2::int[], $3::bigint[], $4::bigint[]) AS m (partition, hi, lo)"
    " WHERE w.grp = $1 AND w.partition = m.partition"
)
# One statement for the whole batch; RETURNING lists only the rows inserted, i.e. the visitors
# new in their hour. A triple another partition's open transaction just inserted waits for it,
# then counts as seen (or as new, if that transaction rolled back).
_NEW_VISITORS = (
    "INSERT INTO click_visitors (code, hour_ms, visitor)"
    " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])"
    " ON CONFLICT DO NOTHING RETURNING code, hour_ms, visitor"
)
_ADD_COUNTS = (
    "INSERT INTO click_counts (code, grain, bucket_ms, clicks, uniques)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])"
    " ON CONFLICT (code, grain, bucket_ms) DO UPDATE SET"
    " clicks = click_counts.clicks + excluded.clicks,"
    " uniques = click_counts.uniques + excluded.uniques"
)
_ADD_DIMS = (
    "INSERT INTO click_dims (code, day_ms, dim, value, clicks)"
    " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[])"
    " ON CONFLICT (code, day_ms, dim, value) DO UPDATE SET"
    " clicks = click_dims.clicks + excluded.clicks"
)
_ADD_TOTALS = (
    "INSERT INTO click_totals (code, clicks, bots)"
    " SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])"
    " ON CONFLICT (code) DO UPDATE SET"
    " clicks = click_totals.clicks + excluded.clicks, bots = click_totals.bots + excluded.bots"
)


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as column arrays for ``unnest``; empty columns for no rows."""
    return [list(column) for column in zip(*rows, strict=True)] or [[] for _ in range(width)]


async def _first_seen(conn: PgConnection, clicks: Sequence[Click]) -> set[tuple[str, int, str]]:
    """Record the visits of ``clicks`` (see ``visits``); those new in their hour."""
    # Sorted: rows are locked in that order, the same in every transaction (no deadlock).
    triples = visits(clicks)
    if not triples:
        return set()
    rows = await conn.fetch(_NEW_VISITORS, *_columns(triples, 3))
    return {(row["code"], row["hour_ms"], row["visitor"]) for row in rows}


async def _add(conn: PgConnection, found: Deltas) -> None:
    """Upsert the counters of ``found``, one statement per table, keys in sorted order."""
    counts = sorted((*key, n, found.uniques[key]) for key, n in found.clicks.items())
    if counts:
        await conn.execute(_ADD_COUNTS, *_columns(counts, 5))
    dims = sorted((*key, n) for key, n in found.dims.items())
    if dims:
        await conn.execute(_ADD_DIMS, *_columns(dims, 5))
    codes = sorted(set(found.totals) | set(found.bots))
    totals = [(code, found.totals[code], found.bots[code]) for code in codes]
    if totals:
        await conn.execute(_ADD_TOTALS, *_columns(totals, 3))


class PostgresClickStore:
    """Click aggregates; contract in :class:`fanout.links.ports.ClickStore`.

    One ``apply`` is one transaction: lock the partitions' watermark rows, drop records at or
    below them,
    record visitors, add to the counters, move the watermark, commit. A redelivered batch finds
    the watermark already past it; a crash rolls everything back, watermark included.
    """

    def __init__(self, engine: PostgresEngine) -> None:
        self._engine = engine

    async def apply(self, group: str, batches: Mapping[int, Sequence[tuple[str, bytes]]]) -> int:
        async def apply_clicks(conn: PgConnection) -> int:
            partitions = sorted(batches)
            # Create the rows of partitions seen for the first time (a concurrent creator makes
            # this wait for its commit), then lock them in partition order (no deadlock):
            # appliers of one partition queue here.
            await conn.execute(_ADD_WATERMARKS, group, partitions)
            marks = {r["partition"]: (r["hi"], r["lo"])
                     for r in await conn.fetch(_LOCK_WATERMARKS, group, partitions)}  # fmt: skip
            batch: list[Click] = []
            moved: list[tuple[int, int, int]] = []
            for partition in partitions:
                fresh, (hi, lo) = past(batches[partition], marks[partition])
                if fresh:
                    batch += (click for raw in fresh for click in decode_clicks(raw))
                    moved.append((partition, hi, lo))
            if not batch:
                return 0
            new = await _first_seen(conn, batch)

            def first_seen(code: str, hour: int, visitor: str) -> bool:
                return (code, hour, visitor) in new

            await _add(conn, deltas(batch, first_seen))
            await conn.execute(_MOVE_WATERMARKS, group, *_columns(moved, 3))
            return len(batch)

        return await self._engine.transaction(apply_clicks)

    async def stats(
        self, code: str, granularity: str, from_ms: int, to_ms: int, top: int = 10
    ) -> LinkStats:
        grain, step = GRAINS[granularity]

        async def link_stats(conn: PgConnection) -> LinkStats:
            rows = await conn.fetch(
                "SELECT bucket_ms, clicks, uniques FROM click_counts WHERE code = $1"
                " AND grain = $2 AND bucket_ms >= $3 AND bucket_ms < $4",
                code,
                grain,
                from_ms - from_ms % step,
                to_ms,
            )
            buckets = {row["bucket_ms"]: (row["clicks"], row["uniques"]) for row in rows}
            # sum(bigint) is numeric in PostgreSQL: cast back, counts fit a bigint.
            dim_rows = await conn.fetch(
                "SELECT dim, value, sum(clicks)::bigint AS clicks FROM click_dims"
                " WHERE code = $1 AND day_ms >= $2 AND day_ms < $3 GROUP BY dim, value",
                code,
                from_ms - from_ms % DAY_MS,
                to_ms,
            )
            dims = [(row["dim"], row["value"], row["clicks"]) for row in dim_rows]
            total = await conn.fetchrow(
                "SELECT clicks, bots FROM click_totals WHERE code = $1", code
            )
            clicks, bots = (total["clicks"], total["bots"]) if total else (0, 0)
            return build_stats(granularity, from_ms, to_ms, buckets, dims, clicks, bots, top)

        # One snapshot: an aggregation committing between the three reads would otherwise show
        # totals that already count clicks whose dimensions were read before it.
        return await self._engine.transaction(link_stats, snapshot=True)

    async def prune(self, visitors_before_ms: int, minutes_before_ms: int) -> int:
        visitors = await self._engine.execute(
            "DELETE FROM click_visitors WHERE hour_ms < $1", visitors_before_ms
        )
        minutes = await self._engine.execute(
            "DELETE FROM click_counts WHERE grain = 'm' AND bucket_ms < $1", minutes_before_ms
        )
        return sum(int(status.rsplit(" ", 1)[-1]) for status in (visitors, minutes))

    async def totals(self, codes: Sequence[str]) -> dict[str, int]:
        if not codes:
            return {}
        rows = await self._engine.fetch(
            "SELECT code, clicks FROM click_totals WHERE code = ANY($1::text[]) AND clicks > 0",
            list(set(codes)),
        )
        return {row["code"]: row["clicks"] for row in rows}
