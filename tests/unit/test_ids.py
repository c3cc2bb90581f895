"""Snowflake ids and base62."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.core import base62
from fanout.core.clock import ManualClock
from fanout.core.ids import EPOCH_MS, MAX_WORKER_ID, IdGenerator, id_timestamp_ms, min_id_at


def test_ids_increase_strictly_and_carry_their_time() -> None:
    clock = ManualClock()
    ids = IdGenerator(7, clock)
    seen = []
    for _ in range(10):
        for _ in range(500):
            seen.append(ids.next_id())
        clock.advance(0.001)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert id_timestamp_ms(seen[0]) == clock.now_ms() - 10
    assert 0 < seen[-1] < 2**63


def test_more_than_4096_ids_in_one_millisecond_borrow_the_next() -> None:
    ids = IdGenerator(1, ManualClock())
    burst = [ids.next_id() for _ in range(10_000)]
    assert burst == sorted(burst) and len(set(burst)) == len(burst)


def test_a_clock_stepping_back_never_repeats_an_id() -> None:
    class Backwards(ManualClock):
        def step_back(self) -> None:
            self._ms -= 5000

    clock = Backwards()
    ids = IdGenerator(3, clock)
    before = [ids.next_id() for _ in range(100)]
    clock.step_back()
    after = [ids.next_id() for _ in range(100)]
    assert max(before) < min(after)


def test_different_workers_never_collide_even_at_the_same_instant() -> None:
    clock = ManualClock()
    a, b = IdGenerator(1, clock), IdGenerator(2, clock)
    assert not {a.next_id() for _ in range(5000)} & {b.next_id() for _ in range(5000)}


def test_worker_id_range_is_enforced() -> None:
    with pytest.raises(ValueError):
        IdGenerator(MAX_WORKER_ID + 1, ManualClock())
    with pytest.raises(ValueError):
        IdGenerator(-1, ManualClock())


def test_ids_are_unique_across_threads() -> None:
    ids = IdGenerator(5, ManualClock())
    out: list[list[int]] = [[] for _ in range(4)]

    def work(bucket: list[int]) -> None:
        bucket.extend(ids.next_id() for _ in range(3000))

    threads = [threading.Thread(target=work, args=(b,)) for b in out]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for bucket in out for i in bucket]
    assert len(set(everything)) == len(everything)


@given(st.integers(min_value=EPOCH_MS, max_value=EPOCH_MS + 2**40))
def test_min_id_at_bounds_ids_of_that_millisecond(unix_ms: int) -> None:
    clock = ManualClock(start_ms=unix_ms)
    generated = IdGenerator(MAX_WORKER_ID, clock).next_id()
    assert min_id_at(unix_ms) <= generated < min_id_at(unix_ms + 1)


@given(st.integers(min_value=0, max_value=2**128))
def test_base62_round_trips(n: int) -> None:
    assert base62.decode(base62.encode(n)) == n


@given(st.integers(min_value=0, max_value=62**7 - 1), st.integers(min_value=0, max_value=62**7 - 1))
def test_base62_preserves_order_at_fixed_width(a: int, b: int) -> None:
    assert (a < b) == (base62.encode(a, width=7) < base62.encode(b, width=7))


def test_base62_refuses_bad_input() -> None:
    for bad in ("", "abc-", "é"):
        with pytest.raises(ValueError):
            base62.decode(bad)
    with pytest.raises(ValueError):
        base62.encode(-1)
