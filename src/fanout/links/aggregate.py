"""Turning a batch of clicks into counter deltas: the arithmetic of the click stores
(PostgreSQL's adapter runs it; SQLite's states it in SQL, ``storage/embedded/clicks.py``, and a
contract test checks the two agree).

Uniques: a visitor counts once per hour, in the minute and hour of its earliest click that
hour; a day's uniques are the sum of its hours'. Bots count only in the bot total. Dimensions
are per day: referrer host, country, device, UTM source/medium/campaign (empty values skipped).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from fanout.core.log import offset_order
from fanout.links.model import Click, LinkStats, Series

__all__ = ["GRAINS", "Deltas", "build_stats", "deltas", "past", "top", "visits"]

T = TypeVar("T")
MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
GRAINS = {"minute": ("m", MINUTE_MS), "hour": ("h", HOUR_MS), "day": ("d", DAY_MS)}
_LATER = 2**63  # past any minute
DIMENSIONS = ("referrer", "country", "device", "utm_source", "utm_medium", "utm_campaign")


@dataclass
class Deltas:
    clicks: Counter[tuple[str, str, int]] = field(default_factory=Counter)  # (code, grain, t)
    uniques: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    dims: Counter[tuple[str, int, str, str]] = field(default_factory=Counter)  # code, day, …
    totals: Counter[str] = field(default_factory=Counter)
    bots: Counter[str] = field(default_factory=Counter)


def past(
    records: Sequence[tuple[str, T]], mark: tuple[int, int]
) -> tuple[list[T], tuple[int, int]]:
    """The records whose log offset is past ``mark`` (a partition's watermark, in
    :func:`offset_order` form), and the highest offset among them (``mark`` if none)."""
    fresh: list[T] = []
    last = mark
    for offset, record in records:
        order = offset_order(offset)
        if order > mark:
            fresh.append(record)
            last = max(last, order)
    return fresh, last


def visits(clicks: Sequence[Click]) -> list[tuple[str, int, str]]:
    """The (code, hour, visitor) triples of ``clicks``, sorted, each once: what a store records
    to tell a visitor new in its hour. Bots and orphan visits have none (strangers must not
    grow the table)."""
    return sorted(
        {(c.code, c.at_ms - c.at_ms % HOUR_MS, c.visitor) for c in clicks if not c.bot and c.code}
    )


def deltas(clicks: Sequence[Click], first_seen: Callable[[str, int, str], bool]) -> Deltas:
    """Counter increments for ``clicks``; ``first_seen(code, hour_ms, visitor)`` records a
    visitor and says whether it is new that hour (the store's visitor table). It is asked once
    per (code, hour, visitor) of the batch; a visitor new that hour is unique in the minute of
    its earliest click in the batch (as SQLite's adapter counts it, in SQL).

    Clicks that differ only in their visitor and time within a minute add to the same
    counters, so they are tallied first and the counters touched once per distinct shape: a
    batch of a popular link costs a few counter updates, not nine per click. Plain ``get``
    and set, not ``Counter``'s ``+=``, whose new keys go through ``__missing__`` in Python
    (this loop runs once per click aggregated)."""
    out = Deltas()
    totals, bots = out.totals, out.bots
    shapes: dict[tuple[str, int, str, str, str, str, str, str], int] = {}
    visits: dict[tuple[str, int, str], int] = {}  # → the earliest minute it clicked in here
    shape_count, first_minute = shapes.get, visits.get
    for click in clicks:
        code = click.code
        if click.bot:
            bots[code] = bots.get(code, 0) + 1
            continue
        totals[code] = totals.get(code, 0) + 1
        if not code:
            continue  # an orphan visit is only counted: strangers must not grow the tables
        minute = click.at_ms - click.at_ms % MINUTE_MS
        shape = (code, minute, click.referrer_host, click.country, click.device,
                 click.utm_source, click.utm_medium, click.utm_campaign)  # fmt: skip
        shapes[shape] = shape_count(shape, 0) + 1
        visit = (code, minute - minute % HOUR_MS, click.visitor)
        if minute < first_minute(visit, _LATER):
            visits[visit] = minute
    counts, dims = out.clicks, out.dims
    for (code, minute, *values), n in shapes.items():
        day = minute - minute % DAY_MS
        for key in _buckets(code, minute):
            counts[key] = counts.get(key, 0) + n
        for dim, value in zip(DIMENSIONS, values, strict=True):
            if value:
                dim_key = (code, day, dim, value)
                dims[dim_key] = dims.get(dim_key, 0) + n
    uniques = out.uniques
    for (code, hour, visitor), minute in visits.items():
        if first_seen(code, hour, visitor):
            for key in _buckets(code, minute):
                uniques[key] = uniques.get(key, 0) + 1
    return out


def _buckets(code: str, minute: int) -> tuple[tuple[str, str, int], ...]:
    """The (code, grain, bucket) counters a click in ``minute`` adds to."""
    return ((code, "m", minute), (code, "h", minute - minute % HOUR_MS),
            (code, "d", minute - minute % DAY_MS))  # fmt: skip


def top(pairs: Sequence[tuple[str, int]], n: int) -> list[tuple[str, int]]:
    """The ``n`` largest, most clicks first, ties by value."""
    return sorted(pairs, key=lambda p: (-p[1], p[0]))[:n]


def build_stats(
    granularity: str,
    from_ms: int,
    to_ms: int,
    buckets: dict[int, tuple[int, int]],
    dims: Sequence[tuple[str, str, int]],
    total: int,
    bots: int,
    n: int,
) -> LinkStats:
    """Assemble the answer: every bucket in [from_ms, to_ms) (zeros where nothing happened)."""
    step = GRAINS[granularity][1]
    series = [
        Series(t, *buckets.get(t, (0, 0))) for t in range(from_ms - from_ms % step, to_ms, step)
    ]
    by_dim: dict[str, list[tuple[str, int]]] = {d: [] for d in DIMENSIONS}
    for dim, value, clicks in dims:
        by_dim[dim].append((value, clicks))
    return LinkStats(
        total=total, bots=bots, series=series,
        referrers=top(by_dim["referrer"], n), countries=top(by_dim["country"], n),
        devices=top(by_dim["device"], n),
        utm={k: top(by_dim[f"utm_{k}"], n) for k in ("source", "medium", "campaign")},
    )  # fmt: skip
