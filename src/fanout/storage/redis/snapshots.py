"""Ranked feed snapshots on Redis (scaled mode; port in ``fanout.feed.ports``): one string
per key, the post ids packed as 8-byte big-endian integers, with EX."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import redis.asyncio as aioredis

from fanout.feed.model import PostId
from fanout.storage.redis import keys
from fanout.storage.redis.connection import guard

__all__ = ["RedisSnapshotStore"]

_ID = struct.Struct(">Q")


class RedisSnapshotStore:
    """:class:`fanout.feed.ports.SnapshotStore`: one string per snapshot, expiring (EX)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def put(self, key: str, post_ids: Sequence[PostId], ttl_s: int) -> None:
        """Store (or replace) the list for ``ttl_s`` seconds; an empty list is stored too."""
        packed = struct.pack(f">{len(post_ids)}Q", *post_ids)
        async with guard("snapshot put"):
            await self._client.set(keys.feed_snapshot(key), packed, ex=ttl_s)

    async def get(self, key: str) -> list[PostId] | None:
        async with guard("snapshot get"):
            raw = await self._client.get(keys.feed_snapshot(key))
        if raw is None:
            return None
        assert isinstance(raw, bytes)  # decode_responses=False
        return [PostId(post_id) for (post_id,) in _ID.iter_unpack(raw)]
