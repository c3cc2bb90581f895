"""The shared link cache in Redis (scaled mode; port :class:`fanout.links.ports.LinkCache`).

One string per code (:func:`keys.link_cache`) with a PX lifetime: a link's fields packed as a
MessagePack array, or an empty string for "no such code" (a tombstone). Every call is one
command under :func:`guard`.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import redis.asyncio as aioredis

from fanout.accounts.model import UserId
from fanout.links.model import Link
from fanout.storage.redis import keys
from fanout.storage.redis.connection import guard
from fanout.storage.redis.routing import RedisRouter

__all__ = ["RedisDeleteFeed", "RedisLinkCache"]

MIN_TTL_MS = 1  # PX must be positive; a shorter positive lifetime still caches for 1 ms
_TOMBSTONE = b""  # "no such code": no packed link is empty

# code, owner_id, url, redirect, created_ms, expires_ms, max_visits, deleted
_Fields = tuple[str, int, str, int, int, int | None, int | None, bool]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Fields)


def _pack(link: Link) -> bytes:
    fields: _Fields = (link.code, link.owner_id, link.url, link.redirect, link.created_ms,
                       link.expires_ms, link.max_visits, link.deleted)  # fmt: skip
    return _encoder.encode(fields)


def _unpack(value: bytes) -> Link | None:
    try:
        fields = _decoder.decode(value)
    except msgspec.DecodeError:
        # Written by a version with other fields (a rolling deploy): a miss, so the caller
        # reads the store and overwrites it. Nothing is lost but one cache hit.
        return None
    code, owner, url, redirect, created_ms, expires_ms, max_visits, deleted = fields
    return Link(code, UserId(owner), url, redirect, created_ms, expires_ms, max_visits, deleted)


class RedisLinkCache:
    """Positive and negative link entries shared by every process.

    ``put`` always overwrites (the last writer wins, for its TTL); a ``ttl_s`` of zero or less
    removes the entry instead, as a cache lifetime of nothing. ``forget`` is idempotent. Redis
    out of reach raises ``Unavailable``.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def get(self, code: str) -> Link | bool | None:
        async with guard("link cache get"):
            value = await self._client.get(keys.link_cache(code))
        if value is None:
            return None
        assert isinstance(value, bytes)  # decode_responses=False
        if value == _TOMBSTONE:
            return False
        return _unpack(value)

    async def put(
        self, code: str, link: Link | None, ttl_s: float, *, replace: bool = True
    ) -> None:
        key = keys.link_cache(code)
        if ttl_s <= 0:
            await self.forget(code)
            return
        value = _TOMBSTONE if link is None else _pack(link)
        ttl_ms = max(MIN_TTL_MS, round(ttl_s * 1000))
        async with guard("link cache put"):
            await self._client.set(key, value, px=ttl_ms, nx=not replace)

    async def forget(self, code: str) -> None:
        async with guard("link cache forget"):
            await self._client.delete(keys.link_cache(code))


class RedisDeleteFeed:
    """Deletes announced over Redis pub/sub (port :class:`fanout.links.ports.DeleteFeed`),
    on the same subscriber machinery as chat's routing, under its own prefix."""

    TOPIC = "deleted"

    def __init__(self, client: aioredis.Redis) -> None:
        self._router = RedisRouter(client, prefix=keys.links_events(""))

    async def start(self, on_deleted: Callable[[str], None], on_gap: Callable[[], None]) -> None:
        def handle(topic: str, payload: bytes) -> None:
            on_deleted(payload.decode())

        self._router.on_gap = on_gap
        await self._router.start(handle)
        await self._router.subscribe([self.TOPIC])

    async def deleted(self, code: str) -> None:
        await self._router.publish(self.TOPIC, code.encode())

    async def close(self) -> None:
        await self._router.close()
