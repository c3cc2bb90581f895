"""Token-bucket arithmetic with a manual clock."""

from __future__ import annotations

import pytest

from fanout.core.clock import ManualClock
from fanout.core.ratelimit import InMemoryRateLimiter, retry_after_header, take


def test_take_allows_the_burst_then_waits_for_refill() -> None:
    bucket = None
    waits = []
    for _ in range(6):
        bucket, wait = take(bucket, 0.0, rate=2.0, burst=5.0)
        waits.append(wait)
    assert waits[:5] == [0.0] * 5 and waits[5] == pytest.approx(0.5)
    bucket, wait = take(bucket, 0.5, rate=2.0, burst=5.0)
    assert wait == 0.0  # half a second refilled one token at 2/s


async def test_in_memory_limiter_keys_are_independent_and_refill() -> None:
    clock = ManualClock()
    limiter = InMemoryRateLimiter(clock, max_buckets=10)
    assert [await limiter.hit("a", 1.0, 2.0) for _ in range(3)][:2] == [0.0, 0.0]
    assert await limiter.hit("a", 1.0, 2.0) > 0
    assert await limiter.hit("b", 1.0, 2.0) == 0.0
    clock.advance(1.0)
    assert await limiter.hit("a", 1.0, 2.0) == 0.0


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(1.2) == "2"
