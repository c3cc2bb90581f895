"""Contract of ClickStore: aggregates, uniques, dimensions, exactly-once application."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Mapping, Sequence

import msgspec
import pytest

from fanout.links.aggregate import GRAINS, Deltas, deltas
from fanout.links.model import Click, Series, encode_clicks
from fanout.links.ports import ClickStore
from fanout.storage.embedded import clicks as sqlite_clicks
from tests.contract.conftest import LinksUnderTest

DAY = 86_400_000
T0 = 1_767_225_600_000  # midnight UTC
BURST_MS = 3 * 60_000  # three minutes: few enough for clicks to share shapes


def click(at_ms: int, visitor: str = "v1", code: str = "c1", **extra: object) -> Click:
    values: dict[str, object] = {"referrer_host": "news.example", "country": "DE",
                                 "device": "mobile", "bot": False} | extra  # fmt: skip
    return Click(code, at_ms, visitor, **values)  # type: ignore[arg-type]


async def apply(
    store: ClickStore, group: str, batches: Mapping[int, Sequence[tuple[str, Click]]]
) -> int:
    """``store.apply`` of ``(offset, click)`` pairs: consecutive clicks of one offset are one
    record, as a batch the sink published."""
    records = {
        partition: [
            (offset, encode_clicks([click for _, click in group]))
            for offset, group in itertools.groupby(pairs, key=lambda pair: pair[0])
        ]
        for partition, pairs in batches.items()
    }
    return await store.apply(group, records)


async def test_series_uniques_and_dimensions(links: LinksUnderTest) -> None:
    clicks = [
        click(T0 + 1_000), click(T0 + 2_000),  # same visitor, same hour: one unique
        click(T0 + 61_000, visitor="v2", country="FR", referrer_host="", device="desktop"),
        click(T0 + 3_600_000 + 5, visitor="v1", utm_source="mail", utm_campaign="spring"),
        click(T0 + DAY + 5, visitor="v3", device="tablet", country=""),
        click(T0 + 7, visitor="crawler", device="bot", bot=True),
        click(T0 + 9, code="other"),
    ]  # fmt: skip
    applied = await apply(links.clicks, "g", {0: [(str(i + 1), c) for i, c in enumerate(clicks)]})
    assert applied == len(clicks)
    minute = await links.clicks.stats("c1", "minute", T0, T0 + 3 * 60_000)
    assert minute.series == [Series(T0, 2, 1), Series(T0 + 60_000, 1, 1),
                             Series(T0 + 120_000, 0, 0)]  # fmt: skip
    hour = await links.clicks.stats("c1", "hour", T0, T0 + 2 * 3_600_000)
    assert hour.series == [Series(T0, 3, 2), Series(T0 + 3_600_000, 1, 1)]
    day = await links.clicks.stats("c1", "day", T0, T0 + 2 * DAY)
    assert day.series == [Series(T0, 4, 3), Series(T0 + DAY, 1, 1)]  # uniques: per hour, summed
    assert day.total == 5 and day.bots == 1
    assert day.referrers == [("news.example", 4)]  # absent referrers are not listed
    assert day.countries == [("DE", 3), ("FR", 1)]
    assert dict(day.devices) == {"mobile": 3, "desktop": 1, "tablet": 1}
    assert day.utm["source"] == [("mail", 1)] and day.utm["campaign"] == [("spring", 1)]
    assert await links.clicks.totals(["c1", "other", "none"]) == {"c1": 5, "other": 1}


async def test_application_is_exactly_once_per_partition(links: LinksUnderTest) -> None:
    batch = [(str(offset), click(T0 + offset)) for offset in (3, 9, 10)]
    assert await apply(links.clicks, "g", {1: batch}) == 3
    assert await apply(links.clicks, "g", {1: batch}) == 0  # redelivered whole
    overlap = [*batch[1:], ("11", click(T0 + 11)), ("12", click(T0 + 12))]
    assert await apply(links.clicks, "g", {1: overlap}) == 2  # 9 < 10 < 11: numeric, not text
    assert await apply(links.clicks, "g", {2: [("3", click(T0))]}) == 1  # partitions apart
    assert await apply(links.clicks, "other-group", {1: [("3", click(T0))]}) == 1
    stream_ids = [("1700000000000-9", click(T0)), ("1700000000000-10", click(T0))]
    assert await apply(links.clicks, "g", {3: stream_ids}) == 2
    assert await apply(links.clicks, "g", {3: stream_ids[:1]}) == 0
    assert (await links.clicks.totals(["c1"]))["c1"] == 9


async def test_records_from_before_json_payloads_still_count(links: LinksUnderTest) -> None:
    a, b, c = (click(T0 + i, visitor=f"v{i}") for i in range(3))
    records = [
        ("1", msgspec.msgpack.encode([a, b])),  # a batch in MessagePack
        ("2", msgspec.msgpack.encode(c)),  # one click, as records were before batches
        ("3", encode_clicks([a])),
        ("4", encode_clicks([])),
        ("5", b'[["c1", %d, "v9", "", "", "desktop", false]]' % T0),  # no UTM fields: defaults
    ]
    assert await links.clicks.apply("g", {0: records}) == 5
    assert await links.clicks.apply("g", {0: records}) == 0
    minute = await links.clicks.stats("c1", "minute", T0, T0 + 60_000)
    assert minute.series == [Series(T0, 5, 4)]
    assert minute.utm == {"source": [], "medium": [], "campaign": []}


async def test_partitions_apply_together_each_past_its_own_watermark(
    links: LinksUnderTest,
) -> None:
    assert await apply(links.clicks, "g", {4: [("5", click(T0))]}) == 1
    batches = {
        4: [("5", click(T0)), ("6", click(T0 + 1)), ("6", click(T0 + 2))],  # 5 is in already
        5: [("2", click(T0 + 3, code="c2")), ("3", click(T0 + 4, code="c2"))],
        6: [],
    }
    assert await apply(links.clicks, "g", batches) == 4
    assert await apply(links.clicks, "g", batches) == 0  # every watermark moved with the counts
    later = {5: [("3", click(T0)), ("4", click(T0 + 5, code="c2"))], 4: [("7", click(T0))]}
    assert await apply(links.clicks, "g", later) == 2
    assert await links.clicks.totals(["c1", "c2"]) == {"c1": 4, "c2": 3}


async def test_concurrent_appliers_of_one_partition_never_double_count(
    links: LinksUnderTest,
) -> None:
    batch = [(str(o), click(T0 + o)) for o in range(1, 51)]
    other = [(str(o), click(T0 + o, code="c2")) for o in range(1, 11)]
    results = await asyncio.gather(
        *(apply(links.clicks, "g", {0: batch, 1: other} if i % 2 else {1: other, 0: batch})
          for i in range(6))
    )  # fmt: skip
    assert sum(results) == 60
    assert await links.clicks.totals(["c1", "c2"]) == {"c1": 50, "c2": 10}


async def test_pruning_keeps_hours_days_and_totals(links: LinksUnderTest) -> None:
    old = [(str(o), click(T0 + o * 60_000, visitor=f"v{o}")) for o in range(1, 4)]
    await apply(links.clicks, "g", {0: old})
    assert await links.clicks.prune(T0 + DAY, T0 + DAY) == 3 + 3  # visitors + minute buckets
    minute = await links.clicks.stats("c1", "minute", T0, T0 + 5 * 60_000)
    assert sum(p.clicks for p in minute.series) == 0
    hour = await links.clicks.stats("c1", "hour", T0, T0 + 3_600_000)
    assert hour.series == [Series(T0, 3, 3)] and hour.total == 3
    assert await links.clicks.prune(T0 + DAY, T0 + DAY) == 0


async def test_pruning_reaches_every_code_whatever_the_chunks(
    links: LinksUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite prunes in transactions over ranges of codes: with chunks of two rows every code's
    old rows still go, and the recent ones stay (PostgreSQL ignores the setting)."""
    monkeypatch.setattr(sqlite_clicks, "PRUNE_CHUNK_ROWS", 2)
    old = [(str(o), click(T0 + o * 60_000, visitor=f"v{o}", code=f"c{o % 5}"))
           for o in range(1, 31)]  # fmt: skip
    recent = [(str(100 + o), click(T0 + 2 * DAY + o * 60_000, visitor=f"w{o}", code=f"c{o % 5}"))
              for o in range(1, 11)]  # fmt: skip
    await apply(links.clicks, "g", {0: old + recent})
    assert await links.clicks.prune(T0 + DAY, T0 + DAY) == 30 + 30  # visitors + minute buckets
    assert await links.clicks.prune(T0 + DAY, T0 + DAY) == 0
    for code in (f"c{i}" for i in range(5)):
        kept = await links.clicks.stats(code, "minute", T0 + 2 * DAY, T0 + 2 * DAY + 3_600_000)
        assert sum(p.clicks for p in kept.series) == 2 and sum(p.uniques for p in kept.series) == 2
        gone = await links.clicks.stats(code, "minute", T0, T0 + 3_600_000)
        assert sum(p.clicks for p in gone.series) == 0
        assert (await links.clicks.stats(code, "hour", T0, T0 + 3_600_000)).series[0].clicks == 6


async def test_orphan_visits_are_counted_without_dimensions(links: LinksUnderTest) -> None:
    orphans = [(str(o), click(T0 + o, code="", visitor=f"x{o}", utm_source=f"s{o}"))
               for o in range(1, 6)]  # fmt: skip
    await apply(links.clicks, "g", {0: orphans})
    stats = await links.clicks.stats("", "day", T0, T0 + DAY)
    assert stats.total == 5
    assert stats.series == [Series(T0, 0, 0)]
    assert stats.referrers == [] and stats.countries == [] and stats.utm["source"] == []
    # Strangers leave no rows behind: no visitor and no minute row to prune.
    assert await links.clicks.prune(T0 + DAY, T0 + DAY) == 0


async def test_random_batches_count_as_the_reference_arithmetic(links: LinksUnderTest) -> None:
    """Batches of mixed clicks (bots, orphans, repeat visitors across batches and hours, empty
    and set dimensions, bursts of clicks alike but for their visitor) end in the counters
    ``aggregate.deltas`` computes batch by batch — the arithmetic each store runs its own way
    (SQLite in SQL)."""
    rnd = random.Random(7)
    codes, seen, expected = ["c1", "c2", "c3", ""], set[tuple[str, int, str]](), Deltas()
    offset = 0
    for _ in range(4):
        batch = []
        for _ in range(rnd.randrange(20, 80)):
            offset += 1
            bot = rnd.random() < 0.15
            device = "bot" if bot else rnd.choice(["desktop", "mobile"])
            if rnd.random() < 0.5:  # a burst: fixed dimensions within minutes, shapes shared
                at, values = rnd.randrange(BURST_MS), ("", "DE", device, "", "", "")
            else:
                at, values = rnd.randrange(2 * DAY), (
                    rnd.choice(["", "news.example", "mail.example"]), rnd.choice(["", "DE", "FR"]),
                    device, rnd.choice(["", "mail"]), rnd.choice(["", "cpc"]),
                    rnd.choice(["", "spring"]),
                )  # fmt: skip
            referrer, country, device, source, medium, campaign = values
            batch.append((str(offset), Click(
                rnd.choice(codes), T0 + at, f"v{rnd.randrange(4)}", referrer, country, device,
                bot, source, medium, campaign,
            )))  # fmt: skip
        # Within a batch in any order: a visitor's unique lands in its earliest minute.
        rnd.shuffle(batch)

        def first_seen(code: str, hour: int, visitor: str) -> bool:
            new = (code, hour, visitor) not in seen
            seen.add((code, hour, visitor))
            return new

        found = deltas([c for _, c in batch], first_seen)
        for name in ("clicks", "uniques", "dims", "totals", "bots"):
            getattr(expected, name).update(getattr(found, name))
        in_order = sorted(batch, key=lambda pair: int(pair[0]))
        assert await apply(links.clicks, "g", {0: in_order}) == len(batch)
    for code in codes:
        for granularity, (grain, _) in GRAINS.items():
            stats = await links.clicks.stats(code, granularity, T0, T0 + 2 * DAY, top=100)
            got = {(p.t_ms, p.clicks, p.uniques) for p in stats.series if p.clicks}
            want = {(t, n, expected.uniques[(c, g, t)])
                    for (c, g, t), n in expected.clicks.items()
                    if c == code and g == grain}  # fmt: skip
            assert got == want, (code, granularity)
        dims = Counter[tuple[str, str]]()
        for (c, _, dim, value), n in expected.dims.items():
            if c == code:
                dims[(dim, value)] += n
        got_dims = {("referrer", v): n for v, n in stats.referrers}
        got_dims |= {("country", v): n for v, n in stats.countries}
        got_dims |= {("device", v): n for v, n in stats.devices}
        for key, values in stats.utm.items():
            got_dims |= {(f"utm_{key}", v): n for v, n in values}
        assert got_dims == dict(dims), code
        assert (stats.total, stats.bots) == (expected.totals[code], expected.bots[code]), code
