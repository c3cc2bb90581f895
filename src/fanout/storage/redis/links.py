"""The shared link cache in Redis (scaled mode; port :class:`fanout.links.ports.LinkCache`).

One string per code (:func:`keys.link_cache`) with a PX lifetime: a link's fields packed as a
MessagePack array, or an empty string for "no such code" (a tombstone). The gets (and the puts)
made while one is in flight go together — a cold cache under load misses on many codes at once,
and a round trip costs the loop more than the command: on one server in one command (MGET; the
puts in one script call), since redis-py spends ~11 µs of the loop's CPU per command of a
pipeline and ~1 µs per key of an MGET (measured at 32 keys); on a Redis Cluster, whose keys of
one call must share a slot, in one pipeline of a command per code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis

from fanout.accounts.model import UserId
from fanout.core.passes import Passes
from fanout.links.model import Link
from fanout.storage.redis import keys
from fanout.storage.redis.connection import guard
from fanout.storage.redis.routing import RedisRouter

__all__ = ["RedisDeleteFeed", "RedisLinkCache"]

MIN_TTL_MS = 1  # PX must be positive; a shorter positive lifetime still caches for 1 ms
CALLS_PER_PIPELINE = 256  # gets (or puts) joined in one round trip at most
_TOMBSTONE = b""  # "no such code": no packed link is empty

# code, owner_id, url, redirect, created_ms, expires_ms, max_visits, deleted
_Fields = tuple[str, int, str, int, int, int | None, int | None, bool]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Fields)

# KEYS: entries. ARGV: per key its action (s = set, n = set if absent, d = delete), value and
# lifetime in ms. In order: a forget queued after a fill of the same code lands after it.
_PUT = """
for i = 1, #KEYS do
  local action, at = ARGV[3 * i - 2], 3 * i - 1
  if action == 'd' then
    redis.call('DEL', KEYS[i])
  elseif action == 'n' then
    redis.call('SET', KEYS[i], ARGV[at], 'PX', ARGV[at + 1], 'NX')
  else
    redis.call('SET', KEYS[i], ARGV[at], 'PX', ARGV[at + 1])
  end
end
return 0
"""


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


def _entry(value: object) -> Link | bool | None:
    """What a cache get answers for the value Redis holds (``None``: no entry)."""
    if value is None:
        return None
    assert isinstance(value, bytes)  # decode_responses=False
    if value == _TOMBSTONE:
        return False
    return _unpack(value)


@dataclass(slots=True)
class _Get:
    key: str
    value: object = None


@dataclass(frozen=True, slots=True)
class _Put:
    key: str
    value: bytes | None  # None: remove the entry (forget)
    ttl_ms: int
    only_new: bool  # SET NX: a fill, which must not overwrite what a delete wrote


class RedisLinkCache:
    """Positive and negative link entries shared by every process.

    ``put`` always overwrites (the last writer wins, for its TTL); a ``ttl_s`` of zero or less
    removes the entry instead, as a cache lifetime of nothing. ``forget`` is idempotent. Redis
    out of reach raises ``Unavailable``. ``cluster``: the server is a Redis Cluster.
    """

    def __init__(self, client: aioredis.Redis, *, cluster: bool = False) -> None:
        self._client = client
        self._cluster = cluster
        self._put_script = client.register_script(_PUT)
        self._gets: Passes[_Get] = Passes(self._get_pass, most=CALLS_PER_PIPELINE, at_once=2)
        self._puts: Passes[_Put] = Passes(self._put_pass, most=CALLS_PER_PIPELINE, at_once=1)

    async def get(self, code: str) -> Link | bool | None:
        return (await self.get_many([code]))[0]

    async def get_many(self, codes: Sequence[str]) -> list[Link | bool | None]:
        gets = [_Get(keys.link_cache(code)) for code in codes]
        await self._gets.submit(gets)  # one call's gets share a pass (one MGET; a pipeline
        # of GETs on a cluster)
        return [_entry(get.value) for get in gets]

    async def _get_pass(self, gets: Sequence[_Get]) -> None:
        async with guard("link cache get"):
            if self._cluster:
                pipe = self._client.pipeline(transaction=False)
                for get in gets:
                    pipe.get(get.key)
                values = await pipe.execute()
            else:
                values = await self._client.mget([get.key for get in gets])
            for get, value in zip(gets, values, strict=True):
                get.value = value

    async def put(
        self, code: str, link: Link | None, ttl_s: float, *, replace: bool = True
    ) -> None:
        if ttl_s <= 0:
            await self.forget(code)
            return
        value = _TOMBSTONE if link is None else _pack(link)
        ttl_ms = max(MIN_TTL_MS, round(ttl_s * 1000))
        await self._puts.submit([_Put(keys.link_cache(code), value, ttl_ms, not replace)])

    async def _put_pass(self, puts: Sequence[_Put]) -> None:
        async with guard("link cache put"):
            if not self._cluster:
                args: list[bytes | int] = []
                for p in puts:
                    action = b"d" if p.value is None else b"n" if p.only_new else b"s"
                    args += (action, p.value or b"", p.ttl_ms)
                await self._put_script(keys=[p.key for p in puts], args=args)
                return
            pipe = self._client.pipeline(transaction=False)
            for p in puts:
                if p.value is None:
                    pipe.delete(p.key)
                else:
                    pipe.set(p.key, p.value, px=p.ttl_ms, nx=p.only_new)
            await pipe.execute()

    async def forget(self, code: str) -> None:
        # In the puts' queue, after the fills queued before it: a fill of "no such code"
        # decided before a create must not land after the create's forget.
        await self._puts.submit([_Put(keys.link_cache(code), None, 0, False)])


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
