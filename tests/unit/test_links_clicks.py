"""Clicks on the log and their counter deltas: batched records keep every click in its code's
partition, old one-click records still decode, and the tallied deltas equal a click-by-click
reference."""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.core.partition import partition_for
from fanout.links import clicks as clicks_module
from fanout.links.aggregate import DAY_MS, DIMENSIONS, HOUR_MS, MINUTE_MS, Deltas, deltas, past
from fanout.links.clicks import click_records, referrer_host, utm
from fanout.links.model import Click, decode_clicks, encode_clicks
from fanout.storage.embedded.clicks import click_array

T0 = 1_767_225_600_000

clicks_st = st.builds(
    Click,
    code=st.sampled_from(["", "a", "b", "c", "dd", "eee"]),
    at_ms=st.integers(T0, T0 + 3 * HOUR_MS),
    visitor=st.sampled_from(["v1", "v2", "v3"]),
    referrer_host=st.sampled_from(["", "news.example", "mail.example"]),
    country=st.sampled_from(["", "DE", "FR"]),
    device=st.sampled_from(["desktop", "mobile", "bot"]),
    bot=st.booleans(),
    utm_source=st.sampled_from(["", "mail"]),
    utm_medium=st.sampled_from(["", "cpc"]),
    utm_campaign=st.sampled_from(["", "spring"]),
)


def reference(clicks: list[Click], seen: set[tuple[str, int, str]]) -> Deltas:
    """Click by click in time order (a visitor new in its hour is unique in the minute of its
    earliest click), as the aggregator first counted them."""
    out = Deltas()
    for c in sorted(clicks, key=lambda c: c.at_ms):
        if c.bot:
            out.bots[c.code] += 1
            continue
        out.totals[c.code] += 1
        if not c.code:
            continue
        hour, day = c.at_ms - c.at_ms % HOUR_MS, c.at_ms - c.at_ms % DAY_MS
        new = (c.code, hour, c.visitor) not in seen
        seen.add((c.code, hour, c.visitor))
        for grain, bucket in (("m", c.at_ms - c.at_ms % MINUTE_MS), ("h", hour), ("d", day)):
            out.clicks[(c.code, grain, bucket)] += 1
            out.uniques[(c.code, grain, bucket)] += new
        values = (c.referrer_host, c.country, c.device, c.utm_source, c.utm_medium,
                  c.utm_campaign)  # fmt: skip
        for dim, value in zip(DIMENSIONS, values, strict=True):
            if value:
                out.dims[(c.code, day, dim, value)] += 1
    return out


@given(st.lists(clicks_st, max_size=60), st.lists(clicks_st, max_size=20))
def test_deltas_equal_the_click_by_click_reference(
    clicks: list[Click], before: list[Click]
) -> None:
    known = {(c.code, c.at_ms - c.at_ms % HOUR_MS, c.visitor) for c in before}
    asked: list[tuple[str, int, str]] = []
    table = set(known)

    def first_seen(code: str, hour: int, visitor: str) -> bool:
        asked.append((code, hour, visitor))
        new = (code, hour, visitor) not in table
        table.add((code, hour, visitor))
        return new

    found = deltas(clicks, first_seen)
    expected = reference(clicks, set(known))
    assert len(asked) == len(set(asked))  # each visitor-hour asked once per batch
    for name in ("clicks", "dims", "totals", "bots"):
        assert getattr(found, name) == getattr(expected, name), name
    assert +found.uniques == +expected.uniques


@given(st.lists(clicks_st, max_size=80), st.integers(1, 9))
def test_records_hold_every_click_in_its_codes_partition(
    clicks: list[Click], partitions: int
) -> None:
    records = click_records(clicks, partitions)
    assert len(records) == len({partition_for(c.code, partitions) for c in clicks})
    decoded: list[Click] = []
    for key, payload in records:
        batch = decode_clicks(payload)
        assert {partition_for(c.code, partitions) for c in batch} == {
            partition_for(key, partitions)
        }
        decoded += batch
    assert Counter(decoded) == Counter(clicks)


def test_remembered_partitions_stay_bounded_and_right(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink's memo of each code's partition is cleared when full, and what it then
    remembers again still puts each click in its code's partition."""
    monkeypatch.setattr(clicks_module, "PARTITIONS_KEPT", 3)
    batch = [Click(f"code{i}", T0, "v", "", "", "desktop", False) for i in range(10)]
    for _ in range(2):  # the second time, some codes are remembered and some forgotten
        for key, payload in click_records(batch, 5):
            assert {partition_for(c.code, 5) for c in decode_clicks(payload)} == {
                partition_for(key, 5)
            }
        known = clicks_module._PARTITIONS[5]
        assert len(known) <= 3
        assert all(partition == partition_for(code, 5) for code, partition in known.items())


def test_a_record_of_one_click_from_before_batches_still_decodes() -> None:
    click = Click("abc", T0, "v1", "news.example", "DE", "mobile", False, "mail", "", "")
    old = msgspec.msgpack.encode(
        ("abc", T0, "v1", "news.example", "DE", "mobile", False, "mail", "", "")
    )
    assert decode_clicks(old) == [click]


# Any text where a click carries text: quotes, brackets and escapes must survive the join.
wild_clicks_st = st.builds(
    Click,
    code=st.text(max_size=12),
    at_ms=st.integers(0, 2**53),
    visitor=st.text(max_size=12),
    referrer_host=st.text(max_size=12),
    country=st.text(max_size=2),
    device=st.sampled_from(["desktop", "mobile", "tablet", "bot"]),
    bot=st.booleans(),
    utm_source=st.text(max_size=12),
    utm_medium=st.text(max_size=12),
    utm_campaign=st.sampled_from(["", '"],["', "\\", "]"]),
)


@given(
    st.lists(st.tuples(st.lists(wild_clicks_st, max_size=5), st.sampled_from(["json", "packed"])))
)
def test_a_click_array_holds_every_click_of_records_of_every_form(
    records: list[tuple[list[Click], str]],
) -> None:
    payloads = [
        encode_clicks(clicks) if form == "json" else msgspec.msgpack.encode(clicks)
        for clicks, form in records
    ]
    joined = click_array(payloads)
    assert decode_clicks(joined) == [click for clicks, _ in records for click in clicks]
    assert joined == encode_clicks(decode_clicks(joined))  # one plain JSON array


def test_past_keeps_the_clicks_beyond_the_watermark() -> None:
    a, b, c = (Click(x, T0, "v", "", "", "desktop", False) for x in "abc")
    pairs = [("7", a), ("7", b), ("10", c), ("1700000000000-2", a)]
    assert past(pairs[:3], (7, 0)) == ([c], (10, 0))  # numeric order: 10 > 7
    assert past(pairs[:3], (6, 0)) == ([a, b, c], (10, 0))  # a record's clicks together
    assert past(pairs[:3], (10, 0)) == ([], (10, 0))
    assert past(pairs[3:], (1700000000000, 1)) == ([a], (1700000000000, 2))


def test_campaigns_and_referrers_never_carry_a_nul() -> None:
    assert utm("utm_source=a%00b&utm_medium=%00&utm_campaign=c") == ("ab", "", "c")
    assert "\x00" not in referrer_host("https://a\x00b.example/")
