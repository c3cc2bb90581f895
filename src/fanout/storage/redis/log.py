"""The Redis Streams log (scaled mode, DESIGN.md §4).

One stream per topic-partition (:func:`keys.log_stream`), one Redis consumer group per log
group. Records are stream entries with fields ``k`` (key), ``p`` (payload) and, when there are
headers, ``h`` (JSON object); offsets are the entry ids (``"<ms>-<seq>"``), which Redis keeps
strictly increasing within a stream.

How the contract of :mod:`fanout.core.log` maps onto Redis:

* ``read`` is one Lua script (atomic, one round trip): create the group at ``0`` if missing (a
  new group starts at the earliest retained record), claim the partition's pending entries —
  any consumer's — with XPENDING + XCLAIM (which counts the delivery), then XREADGROUP new ones.
  New entries are only read once nothing older is pending, so offset order holds.
* ``dead_letter`` is a MULTI of XADD to ``<topic>.dlq`` (same partition, same hash slot) and
  XACK. ``ack`` is XACK, idempotent by nature.
* Leases and membership are small Lua scripts; their TTLs run on Redis server time (PX, TIME),
  so process clocks do not matter.
* Streams are capped with ``MAXLEN ~ maxlen`` per partition: a group lagging further behind than
  that loses the trimmed records, and their pending entries vanish with them (Redis drops them
  from the pending list on the next claim). Size ``maxlen`` for the longest outage to survive.

Differences from the SQLite log, by necessity: ``publish`` cannot join a database transaction
(no outbox), and a record is as durable as the Redis persistence settings make it (AOF with
``appendfsync everysec`` loses at most a second on a crash of the Redis host).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT, KeyT, StreamIdT

from fanout.core.clock import Clock
from fanout.core.errors import Unavailable
from fanout.core.log import DLQ_SUFFIX, LogRecord
from fanout.core.partition import partition_for
from fanout.storage.redis import keys
from fanout.storage.redis.connection import ScriptCall, guard, run_scripts

__all__ = ["RedisLog"]

MAX_READ = 1_000  # entries per read: bounds one script's run time and Lua's unpack() stack
MAX_BLOCK_S = 2.0  # longest XREAD BLOCK: below the 5 s socket timeout; waking early is allowed
REDIS_TICK_MS = 100  # Redis times out blocked reads on its cron tick: 100 ms at the default hz 10
SHORT_WAIT_S = 0.05  # shorter waits are plain sleeps: a block cannot end sooner than one tick
LAG_SCAN_CHUNK = 1_000  # entries per XRANGE when Redis cannot tell a group's lag itself
ERROR_MAX_CHARS = 2_000  # dead-letter error text kept (as in the SQLite log)

_READ = """
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local count = tonumber(ARGV[3])
-- A new group starts at the earliest retained record; BUSYGROUP (it exists) is the usual reply.
redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
local out = {}
local pending = redis.call('XPENDING', stream, group, '-', '+', count)
if #pending > 0 then
  local ids, counts = {}, {}
  for i, entry in ipairs(pending) do
    ids[i] = entry[1]
    counts[entry[1]] = entry[4]
  end
  -- XCLAIM hands the entries to the caller and counts this delivery; entries trimmed away
  -- meanwhile leave the pending list and are not returned.
  for _, entry in ipairs(redis.call('XCLAIM', stream, group, consumer, 0, unpack(ids))) do
    if entry then
      out[#out + 1] = {entry[1], entry[2], counts[entry[1]] + 1}
    end
  end
  if #pending == count then
    return out  -- more may be pending: nothing new before they are handled
  end
end
local fresh = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out,
  'STREAMS', stream, '>')
if fresh then
  for _, entry in ipairs(fresh[1][2]) do
    out[#out + 1] = {entry[1], entry[2], 1}
  end
end
return out
"""

_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease, stream. Also forgets the consumer on this partition's stream when it holds no
# pending entry, so the group's consumer list does not grow with every process restart.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
local mine = redis.pcall('XPENDING', KEYS[2], ARGV[2], '-', '+', 1, ARGV[1])
if type(mine) == 'table' and mine.err == nil and #mine == 0 then
  redis.pcall('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[2], ARGV[1])
end
return 1
"""

_JOIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last > 0 then
  redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(last[2])))
end
return redis.call('ZCARD', KEYS[1])
"""


# KEYS[1] = stream; ARGV[1] = maxlen; then key, payload pairs, appended in order.
_APPEND = """
for i = 2, #ARGV, 2 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'k', ARGV[i], 'p', ARGV[i + 1])
end
return (#ARGV - 1) / 2
"""


class RedisLog:
    """:class:`fanout.core.log.Log` on Redis Streams; see the module docstring for the mapping.

    ``clock`` is accepted for parity with the other adapters: every expiry here runs on Redis
    server time instead, which all processes share.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        clock: Clock,
        *,
        partitions: int = 8,
        maxlen: int = 1_000_000,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self._client = client
        self._clock = clock
        self._partitions = partitions
        self._maxlen = maxlen
        self._read = client.register_script(_READ)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._join = client.register_script(_JOIN)
        self._append = client.register_script(_APPEND)
        self._registered: set[tuple[str, str]] = set()

    @property
    def partitions(self) -> int:
        return self._partitions

    # -- producing -----------------------------------------------------------------------------

    def _fields(
        self, key: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> dict[FieldT, EncodableT]:
        fields: dict[FieldT, EncodableT] = {b"k": key.encode(), b"p": payload}
        if headers:
            fields[b"h"] = json.dumps(dict(headers)).encode()
        return fields

    async def publish(
        self, topic: str, key: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        stream = keys.log_stream(topic, partition_for(key, self._partitions))
        async with guard("publish"):
            await self._client.xadd(
                stream, self._fields(key, payload, headers), maxlen=self._maxlen, approximate=True
            )

    async def publish_many(self, topic: str, entries: Sequence[tuple[str, bytes]]) -> None:
        """One round trip: a script call per partition appends that partition's records in
        order (one stream per call, so Redis Cluster accepts it; packing a few arguments per
        record costs far less than a command per record)."""
        if not entries:
            return
        by_partition: dict[int, list[bytes | str]] = {}
        for key, payload in entries:
            args = by_partition.setdefault(partition_for(key, self._partitions), [])
            args += (key, payload)
        calls: list[ScriptCall] = [
            (self._append, [keys.log_stream(topic, partition)], [self._maxlen, *args])
            for partition, args in by_partition.items()
        ]
        async with guard("publish_many"):
            await run_scripts(self._client, calls)

    async def wait(self, topic: str, timeout_s: float) -> None:
        """XREAD BLOCK on every partition from ``$``: returns once any of them gets an entry.

        A record appended between the caller's last read and this call does not wake it; it is
        found by the next read, at most ``timeout_s`` later (the SQLite log behaves the same).
        Redis ends a blocked read on its timer tick, so the block is one tick shorter than
        ``timeout_s`` to end within it; waits of at most ``SHORT_WAIT_S`` are plain sleeps.
        """
        if timeout_s <= SHORT_WAIT_S:
            await asyncio.sleep(max(timeout_s, 0.0))
            return
        block_ms = max(1, round(min(timeout_s, MAX_BLOCK_S) * 1000) - REDIS_TICK_MS)
        streams: dict[KeyT, StreamIdT] = {
            keys.log_stream(topic, p): "$" for p in range(self._partitions)
        }
        started = asyncio.get_running_loop().time()
        try:
            async with guard("wait", timeout_s + REDIS_TICK_MS / 1000):
                await self._client.xread(streams, count=1, block=block_ms)
        except Unavailable:
            # Safe to swallow: waiting has no result to lose, and the caller's next read raises
            # Unavailable itself. Sleeping out the timeout keeps callers from spinning meanwhile.
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, timeout_s - elapsed))

    # -- membership and leases -----------------------------------------------------------------

    async def _register(self, topic: str, group: str) -> None:
        """Add (topic, group) to the registry behind :meth:`groups`, once per process."""
        if (topic, group) not in self._registered:
            await self._client.sadd(keys.log_groups(), json.dumps([topic, group]))
            self._registered.add((topic, group))

    async def join(self, topic: str, group: str, consumer: str, ttl_ms: int) -> int:
        async with guard("join"):
            await self._register(topic, group)
            alive = await self._join(keys=[keys.log_members(topic, group)], args=[consumer, ttl_ms])
        return int(alive)

    async def acquire(
        self, topic: str, group: str, consumer: str, partition: int, ttl_ms: int
    ) -> bool:
        self._check(partition)
        async with guard("acquire"):
            got = await self._acquire(
                keys=[keys.log_lease(topic, group, partition)], args=[consumer, ttl_ms]
            )
        return bool(got)

    async def release(self, topic: str, group: str, consumer: str, partition: int) -> None:
        self._check(partition)
        async with guard("release"):
            await self._release(
                keys=[keys.log_lease(topic, group, partition), keys.log_stream(topic, partition)],
                args=[consumer, group],
            )

    def _check(self, partition: int) -> None:
        if not 0 <= partition < self._partitions:
            raise ValueError(f"partition {partition} is not within 0..{self._partitions - 1}")

    # -- consuming -----------------------------------------------------------------------------

    async def read(
        self, topic: str, group: str, consumer: str, partition: int, count: int
    ) -> list[LogRecord]:
        """Up to ``min(count, MAX_READ)`` records; see the module docstring for how."""
        self._check(partition)
        if count < 1:
            return []
        async with guard("read"):
            await self._register(topic, group)
            rows = await self._read(
                keys=[keys.log_stream(topic, partition)],
                args=[group, consumer, min(count, MAX_READ)],
            )
        return [_record(topic, partition, row) for row in rows]

    async def ack(self, group: str, records: Sequence[LogRecord]) -> None:
        by_stream: dict[str, list[str]] = {}
        for record in records:
            by_stream.setdefault(keys.log_stream(record.topic, record.partition), []).append(
                record.offset
            )
        if not by_stream:
            return
        pipe = self._client.pipeline(transaction=False)
        for stream, offsets in by_stream.items():
            pipe.xack(stream, group, *offsets)
        async with guard("ack"):
            await pipe.execute()

    async def unclaim(self, group: str, consumer: str, records: Sequence[LogRecord]) -> None:
        """XCLAIM ... RETRYCOUNT deliveries-1 JUSTID: sets the counter back, keeps it pending."""
        if not records:
            return
        pipe = self._client.pipeline(transaction=False)
        for record in records:
            pipe.xclaim(
                keys.log_stream(record.topic, record.partition), group, consumer, 0,
                [record.offset], retrycount=max(record.deliveries - 1, 0), justid=True,
            )  # fmt: skip
        async with guard("unclaim"):
            await pipe.execute()

    async def dead_letter(self, group: str, record: LogRecord, error: str) -> None:
        """XADD to the same partition of ``<topic>.dlq`` and XACK, in one MULTI/EXEC."""
        headers = {
            **record.headers,
            "error": error[:ERROR_MAX_CHARS],
            "source_partition": str(record.partition),
            "source_offset": record.offset,
            "group": group,
            "deliveries": str(record.deliveries),
        }
        pipe = self._client.pipeline(transaction=True)
        pipe.xadd(
            keys.log_stream(record.topic + DLQ_SUFFIX, record.partition),
            self._fields(record.key, record.payload, headers),
            maxlen=self._maxlen,
            approximate=True,
        )
        pipe.xack(keys.log_stream(record.topic, record.partition), group, record.offset)
        async with guard("dead_letter"):
            await pipe.execute()

    # -- observing -----------------------------------------------------------------------------

    async def lag(self, topic: str, group: str) -> int:
        """Pending + undelivered over all partitions, from XINFO GROUPS and XLEN.

        A partition without a stream owes nothing; one whose stream exists but has no such group
        yet owes all its entries (the group will start at the earliest). Redis's own ``lag`` also
        counts entries trimmed before the group read them, so it is capped at the length; when
        Redis cannot tell (``lag`` is null after XDEL), the entries are counted with XRANGE.
        """
        streams = [keys.log_stream(topic, p) for p in range(self._partitions)]
        pipe = self._client.pipeline(transaction=False)
        for stream in streams:
            pipe.xinfo_groups(stream)
            pipe.xlen(stream)
        total = 0
        async with guard("lag"):
            replies = await pipe.execute(raise_on_error=False)
            for i, stream in enumerate(streams):
                infos, length = replies[2 * i], replies[2 * i + 1]
                if isinstance(infos, ResponseError) and "no such key" in str(infos):
                    continue
                if isinstance(infos, BaseException):
                    raise infos
                info = next((g for g in infos if g["name"] == group.encode()), None)
                if info is None:
                    total += int(length)
                    continue
                total += int(info["pending"]) + await self._undelivered(stream, info, int(length))
        return total

    async def _undelivered(self, stream: str, info: Mapping[str, Any], length: int) -> int:
        if info["lag"] is not None:
            return min(int(info["lag"]), length)
        undelivered, start = 0, b"(" + info["last-delivered-id"]
        while batch := await self._client.xrange(stream, min=start, count=LAG_SCAN_CHUNK):
            undelivered += len(batch)
            last = batch[-1][0]
            assert isinstance(last, bytes)  # decode_responses=False
            start = b"(" + last
        return undelivered

    async def groups(self) -> list[tuple[str, str]]:
        async with guard("groups"):
            members = await self._client.smembers(keys.log_groups())
        pairs = [json.loads(member) for member in members]
        return sorted((str(topic), str(group)) for topic, group in pairs)

    async def ping(self) -> None:
        async with guard("ping"):
            await self._client.ping()


def _record(topic: str, partition: int, row: list[Any]) -> LogRecord:
    """A record from one ``{id, {field, value, ...}, deliveries}`` row of the read script."""
    offset, flat, deliveries = row
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    headers = fields.get(b"h")
    return LogRecord(
        topic=topic,
        partition=partition,
        offset=offset.decode(),
        key=fields[b"k"].decode(),
        payload=bytes(fields[b"p"]),
        deliveries=int(deliveries),
        headers=json.loads(headers) if headers else {},
    )
