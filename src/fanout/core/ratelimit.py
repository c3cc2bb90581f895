"""Token-bucket rate limiting: the port, the arithmetic, and the in-process limiter.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; a request takes
one token or is refused with the seconds until one is available (the ``Retry-After``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from fanout.core.clock import Clock

__all__ = ["Bucket", "InMemoryRateLimiter", "RateLimiter", "retry_after_header", "take"]

MAX_BUCKETS = 100_000  # in-process buckets kept; the least recently used are forgotten (= full)


class RateLimiter(Protocol):
    async def hit(self, key: str, rate: float, burst: float) -> float:
        """Take a token from ``key``'s bucket: 0.0 if allowed, else seconds until one is free."""
        ...


@dataclass(slots=True)
class Bucket:
    tokens: float
    updated_s: float


def take(bucket: Bucket | None, now_s: float, rate: float, burst: float) -> tuple[Bucket, float]:
    """The bucket after one request at ``now_s``, and the wait (0.0 when the request passes)."""
    if bucket is None:
        bucket = Bucket(tokens=burst, updated_s=now_s)
    elapsed = max(now_s - bucket.updated_s, 0.0)
    tokens = min(burst, bucket.tokens + elapsed * rate)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, now_s), 0.0
    return Bucket(tokens, now_s), (1.0 - tokens) / rate


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` is whole seconds; round up so a client that obeys it gets through."""
    return str(max(1, math.ceil(wait_s)))


class InMemoryRateLimiter:
    """Buckets in this process's memory (embedded mode), bounded by an LRU."""

    def __init__(self, clock: Clock, *, max_buckets: int = MAX_BUCKETS) -> None:
        self._clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._max = max_buckets

    async def hit(self, key: str, rate: float, burst: float) -> float:
        bucket, wait = take(self._buckets.get(key), self._clock.monotonic(), rate, burst)
        self._buckets[key] = bucket
        self._buckets.move_to_end(key)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait
