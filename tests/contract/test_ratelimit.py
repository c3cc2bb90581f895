"""Contract of the rate limiter port (fanout.core.ratelimit), on every backend, in real time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fanout.core.clock import SystemClock
from fanout.core.ratelimit import InMemoryRateLimiter, RateLimiter

RATE = 2.0  # tokens per second: one token every 500 ms, long beside a loaded machine's stalls
SLOW = 0.01  # tokens per second: nothing refills while a test runs
BURST = 5.0


@pytest.fixture(params=["memory", "redis"])
def limiter_backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """Sync on purpose: an async fixture cannot ``getfixturevalue`` an async one."""
    if request.param == "redis":
        return "redis", request.getfixturevalue("clean_redis_url")
    return request.param, None


@pytest.fixture
async def limiter(limiter_backend: tuple[str, str | None]) -> AsyncIterator[RateLimiter]:
    backend, url = limiter_backend
    if backend == "memory":
        yield InMemoryRateLimiter(SystemClock())
        return
    from fanout.storage.redis.connection import connect
    from fanout.storage.redis.ratelimit import RedisRateLimiter

    assert url is not None
    client = await connect(url)
    try:
        yield RedisRateLimiter(client)
    finally:
        await client.aclose()


async def test_the_burst_passes_then_requests_wait_for_one_token(limiter: RateLimiter) -> None:
    waits = [await limiter.hit("k", RATE, BURST) for _ in range(int(BURST))]
    assert waits == [0.0] * int(BURST)
    wait = await limiter.hit("k", RATE, BURST)
    # Almost nothing refilled during the burst: the wait is about one token's worth.
    assert 0.5 / RATE < wait <= 1 / RATE
    again = await limiter.hit("k", RATE, BURST)
    assert again > 0  # a refused request takes no token, but still has to wait


async def test_waiting_the_given_time_lets_one_request_through(limiter: RateLimiter) -> None:
    for _ in range(int(BURST)):
        assert await limiter.hit("k", RATE, BURST) == 0.0
    wait = await limiter.hit("k", RATE, BURST)
    assert wait > 0
    await asyncio.sleep(wait + 0.005)
    assert await limiter.hit("k", RATE, BURST) == 0.0
    assert await limiter.hit("k", RATE, BURST) > 0  # only one token had come back


async def test_buckets_are_independent_per_key(limiter: RateLimiter) -> None:
    for _ in range(int(BURST)):
        await limiter.hit("a", SLOW, BURST)
    assert await limiter.hit("a", SLOW, BURST) > 0
    assert [await limiter.hit("b", SLOW, BURST) for _ in range(int(BURST))] == [0.0] * int(BURST)
    assert await limiter.hit("b", SLOW, BURST) > 0


async def test_concurrent_hits_never_pass_more_than_the_burst(limiter: RateLimiter) -> None:
    waits = await asyncio.gather(*(limiter.hit("k", SLOW, BURST) for _ in range(50)))
    assert waits.count(0.0) == int(BURST)
    assert all(w > 0 for w in waits if w != 0.0)


async def test_redis_buckets_expire_once_they_would_be_full(clean_redis_url: str) -> None:
    from fanout.storage.redis import keys
    from fanout.storage.redis.connection import connect
    from fanout.storage.redis.ratelimit import RedisRateLimiter

    client = await connect(clean_redis_url)
    try:
        limiter = RedisRateLimiter(client)
        await limiter.hit("k", RATE, BURST)
        ttl_ms = await client.pttl(keys.rate_limit_bucket("k"))
        refill_ms = 1 / RATE * 1000  # one token was taken
        assert refill_ms < ttl_ms <= refill_ms + 1_000 + 1
    finally:
        await client.aclose()
