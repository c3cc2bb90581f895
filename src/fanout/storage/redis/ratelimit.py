"""Token buckets in Redis, shared by every process (scaled mode).

The same arithmetic as :func:`fanout.core.ratelimit.take`, run as one Lua script per hit so the
read-modify-write is atomic across processes, timed by Redis ``TIME`` so process clocks do not
matter. A bucket's key expires once the bucket would be full again (``burst / rate`` seconds of
idleness): a missing bucket and a full one behave the same, so idle buckets cost no memory.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from fanout.storage.redis import keys
from fanout.storage.redis.connection import guard

__all__ = ["RedisRateLimiter"]

# KEYS: bucket; ARGV: rate (tokens/s), burst (tokens). Returns the wait in seconds as a string:
# Redis would truncate a Lua number reply to an integer.
_HIT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(state[1]), tonumber(state[2])
if tokens == nil or updated == nil then
  tokens, updated = burst, now
end
tokens = math.min(burst, tokens + math.max(now - updated, 0) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'updated', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return string.format('%.17g', wait)
"""


class RedisRateLimiter:
    """:class:`fanout.core.ratelimit.RateLimiter` with buckets in Redis (one round trip a hit)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._hit = client.register_script(_HIT)

    async def hit(self, key: str, rate: float, burst: float) -> float:
        if rate <= 0:
            raise ValueError("rate must be positive")
        async with guard("rate limit"):
            wait = await self._hit(keys=[keys.rate_limit_bucket(key)], args=[rate, burst])
        return float(wait)
