"""Leasing a Snowflake worker id (0..``MAX_WORKER_ID``) from Redis, so no two live processes
issue ids with the same worker id (:mod:`fanout.core.ids`).

Each id is a key holding its owner's random token with a PX expiry (Redis server time). A process
acquires the first free id in its own rotation of 0..1023 — rotations start at random points, so
concurrent starters rarely contend for the same key — and renews the lease well within its TTL.
If renewal finds the key gone or owned by someone else (this process was paused past the TTL),
:meth:`WorkerIdLease.renew` returns False and the caller must stop issuing ids with the old
worker id and :meth:`acquire` a new one.
"""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

from fanout.core.errors import Unavailable
from fanout.core.ids import MAX_WORKER_ID
from fanout.storage.redis import keys
from fanout.storage.redis.connection import OP_TIMEOUT_S, guard

__all__ = ["WORKER_ID_TTL_MS", "WorkerIdLease"]

WORKER_ID_TTL_MS = 30_000  # a crashed process's id is free again after this; renew at a third
_IDS = MAX_WORKER_ID + 1
ACQUIRE_TIMEOUT_S = 30.0  # worst case is one SET per id (1024 round trips) when nearly full

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class WorkerIdLease:
    """One process's lease on a worker id.

    ``owner`` identifies this process in Redis (random by default). ``prefer`` is tried first —
    e.g. the id held before a restart; otherwise the rotation starts at a random id.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        ttl_ms: int = WORKER_ID_TTL_MS,
        owner: str | None = None,
        prefer: int | None = None,
    ) -> None:
        if ttl_ms < 1:
            raise ValueError("ttl_ms must be positive")
        if prefer is not None and not 0 <= prefer <= MAX_WORKER_ID:
            raise ValueError(f"prefer must be within 0..{MAX_WORKER_ID}")
        self._client = client
        self.ttl_ms = ttl_ms
        self.owner = owner or secrets.token_hex(16)
        self._start = secrets.randbelow(_IDS) if prefer is None else prefer
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._worker_id: int | None = None

    @property
    def worker_id(self) -> int | None:
        """The id held now, or None before :meth:`acquire` and after :meth:`release`."""
        return self._worker_id

    async def acquire(self) -> int:
        """Lease a free id and return it; a lease already held is released first.

        Raises ``Unavailable`` when all ``MAX_WORKER_ID + 1`` ids are leased (or Redis is down).
        """
        await self.release()
        async with guard("worker id acquire", ACQUIRE_TIMEOUT_S):
            for step in range(_IDS):
                candidate = (self._start + step) % _IDS
                if await self._client.set(
                    keys.worker_id(candidate), self.owner, nx=True, px=self.ttl_ms
                ):
                    self._worker_id = self._start = candidate
                    return candidate
        raise Unavailable(f"all {_IDS} worker ids are leased by live processes")

    async def renew(self) -> bool:
        """Extend the lease by ``ttl_ms``; False if it expired and is no longer ours."""
        if self._worker_id is None:
            raise RuntimeError("renew() before acquire()")
        async with guard("worker id renew", OP_TIMEOUT_S):
            renewed = await self._renew(
                keys=[keys.worker_id(self._worker_id)], args=[self.owner, self.ttl_ms]
            )
        if not renewed:
            self._worker_id = None
        return bool(renewed)

    async def release(self) -> None:
        """Free the id now (only if still ours), so a restarting fleet does not wait out TTLs."""
        if self._worker_id is None:
            return
        async with guard("worker id release", OP_TIMEOUT_S):
            await self._release(keys=[keys.worker_id(self._worker_id)], args=[self.owner])
        self._worker_id = None
