"""Chat presence in Redis (``fanout.chat.ports.PresenceStore``), shared by every gateway node.

The rules are those of :mod:`fanout.storage.embedded.presence`; here they hold across
processes because every change is one Lua script, timed by Redis ``TIME``:

* ``presence_leases(user)``: sorted set node → lease expiry (ms). It expires (PEXPIREAT) with its
  latest lease, so a dead node's leases cost nothing once they lapse.
* ``presence_online(shard)``: sorted set user → latest lease expiry, for the listed users of one
  shard (``user % shards``; the user's leases share its hash tag). :meth:`sweep` takes the
  entries whose score passed, :meth:`leave` the entry of a user whose last live lease it drops;
  whichever removes an entry reports that user offline, so each caller gets a user at most once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import redis.asyncio as aioredis

from fanout.accounts.model import UserId
from fanout.core.clock import Clock
from fanout.storage.redis import keys
from fanout.storage.redis.connection import guard, run_scripts

__all__ = ["SWEEP_BATCH", "RedisPresenceStore"]

SWEEP_BATCH = 1_000  # users one script call unlists: bounds the time one call blocks Redis

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Keep the online entry's score equal to the latest live lease, and the leases key's expiry too.
_RELIST = """
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local expiry = tonumber(last[2])
redis.call('PEXPIREAT', KEYS[1], expiry)
redis.call('ZADD', KEYS[2], expiry, ARGV[1])
"""

# KEYS: leases, online; ARGV: user, node, ttl_ms. Returns 1 if the user had no live lease.
_TOUCH = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
"""
    + _RELIST
    + """
if live == 0 then return 1 end
return 0
"""
)

# KEYS: leases, online; ARGV: user, node. Returns 1 if this call unlisted the user.
_LEAVE = (
    _NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) > 0 then
"""
    + _RELIST
    + """
  return 0
end
redis.call('DEL', KEYS[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
"""
)

# KEYS: online; ARGV: batch. Unlists and returns up to ``batch`` users whose leases all expired
# (their leases keys expired with them: PEXPIREAT = the same score).
_SWEEP = (
    _NOW
    + """
local gone = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]))
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
end
return gone
"""
)


class RedisPresenceStore:
    """:class:`fanout.chat.ports.PresenceStore` in Redis; one script call per change.

    ``clock`` is accepted for parity with the other adapters: expiry runs on Redis server time,
    which every node shares. ``shards`` must be the same in every process of a deployment;
    ``sweep_batch`` is how many users one script call may unlist.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        clock: Clock | None = None,
        *,
        shards: int = keys.PRESENCE_SHARDS,
        sweep_batch: int = SWEEP_BATCH,
    ) -> None:
        if shards < 1 or sweep_batch < 1:
            raise ValueError("shards and sweep_batch must be at least 1")
        self._client = client
        self._clock = clock
        self._shards = shards
        self._batch = sweep_batch
        self._touch = client.register_script(_TOUCH)
        self._leave = client.register_script(_LEAVE)
        self._sweep = client.register_script(_SWEEP)

    def _keys(self, user: UserId) -> list[str]:
        return [
            keys.presence_leases(user, self._shards),
            keys.presence_online(user % self._shards),
        ]

    async def touch(self, user: UserId, node: str, ttl_ms: int) -> bool:
        if ttl_ms < 1:
            raise ValueError("ttl_ms must be positive")
        async with guard("presence touch"):
            was_offline = await self._touch(keys=self._keys(user), args=[user, node, ttl_ms])
        return bool(was_offline)

    async def leave(self, user: UserId, node: str) -> bool:
        async with guard("presence leave"):
            unlisted = await self._leave(keys=self._keys(user), args=[user, node])
        return bool(unlisted)

    async def online(self, users: Sequence[UserId]) -> set[UserId]:
        """One round trip: the server's time and each shard's scores (ZMSCORE), pipelined."""
        by_shard: dict[int, list[UserId]] = defaultdict(list)
        for user in dict.fromkeys(users):
            by_shard[user % self._shards].append(user)
        if not by_shard:
            return set()
        async with guard("presence online"):
            pipe = self._client.pipeline(transaction=False)
            pipe.time()
            for shard, members in by_shard.items():
                pipe.zmscore(keys.presence_online(shard), [str(u) for u in members])
            (seconds, micros), *scores = await pipe.execute()
        now = int(seconds) * 1000 + int(micros) // 1000
        found: set[UserId] = set()
        for members, expiries in zip(by_shard.values(), scores, strict=True):
            found.update(u for u, e in zip(members, expiries, strict=True)
                         if e is not None and e > now)  # fmt: skip
        return found

    async def sweep(self) -> list[UserId]:
        """Every shard, pipelined; shards with a full batch are swept again until none is."""
        gone: list[UserId] = []
        shards = list(range(self._shards))
        while shards:
            async with guard("presence sweep"):
                replies = await run_scripts(self._client, [
                    (self._sweep, [keys.presence_online(shard)], [self._batch]) for shard in shards
                ])  # fmt: skip
            gone += (UserId(int(u)) for batch in replies for u in batch)
            full = zip(shards, replies, strict=True)
            shards = [shard for shard, batch in full if len(batch) == self._batch]
        return gone
