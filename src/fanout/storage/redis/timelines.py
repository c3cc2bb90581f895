"""Redis timelines (scaled mode; port in ``fanout.feed.ports``; snapshots: ``snapshots.py``).

A timeline is one sorted set (:func:`keys.timeline`): score = the post's creation time in ms,
member = the post id as 8 big-endian bytes, so entries with equal scores are ordered by id
exactly (Redis orders equal scores byte-wise, which for fixed-width big-endian is numeric).

**The floor lives in the set**, as one *marker* member that is not 8 bytes long:

* no floor yet: member ``b""`` at score ``-inf`` (below everything), or 65 zero bytes there;
* floor at position (s, id): member ``id as 8 bytes`` followed by one zero byte, or by 57, at
  score s, which sorts right above the entry (s, id) itself and below every entry above it.

**Encoding.** Redis keeps a sorted set of up to 128 members of up to 64 bytes in its compact
listpack encoding, where every ZADD scans the set twice (for the member, then for the place of
its score, at the newest end). Measured per timeline write: up to ~64 entries the compact set
is cheaper than a skiplist and ~6x smaller; from ~64 to 128 its scans cost more than a
skiplist's insert (in a fan-out into timelines filling from empty they were ~45 % of Redis's
CPU, perf). So a timeline starts with a short marker and, once it holds more than
``SKIPLIST_FROM`` members, a script swaps in the long (65-byte) form of the same marker, which
makes Redis convert the set to a skiplist for good. Whatever its length, a marker's first 8
bytes are the floor's id; one at ``-inf`` or shorter than 9 bytes means no floor.

Scripts create the marker with the key, so every timeline holds exactly one. The entries are
the 8-byte members above it. A push does not look for the floor (that would cost a command
per owner on the hot path): an entry pushed at or below the floor lands *below* the marker,
where nothing reads it — :meth:`~RedisTimelineStore.page` stops at the marker,
:meth:`~RedisTimelineStore.size` counts only what is above it — and the next trim or
:meth:`~RedisTimelineStore.add` deletes it. So a push writes one key per owner, a page reads
one key, and the floor can never disagree with the entries.

**Fan-out is server-side.** :meth:`RedisTimelineStore.push_many` groups the entries of many
posts by timeline and sends the timelines in script calls of up to ``MAX_KEYS_PER_CALL`` keys
and ``MAX_ENTRIES_PER_CALL`` entries — per timeline one ZADD of all its new entries, and ZCARD
when one was new — all pipelined in one round trip (:meth:`~RedisTimelineStore.push` is one
post's). On a Redis Cluster (``cluster=True``) a call may only touch one slot, so owners are
split by hash tag: one call per tag present (:func:`keys.timeline_groups`). One server takes
any keys in a call: one call where a cluster needs ~31 (measured: 25-37 % more timeline
writes/s at a median of 200 followers, ``fanout bench feed``).
A timeline holding more than ``cap + slack`` members besides the marker is trimmed in the same
script: the oldest go, down to ``cap``, and the marker moves up to the newest entry removed.
One trim per ``slack`` pushes, not per push.

Scripts run with EVALSHA; a server that lost them (restart, SCRIPT FLUSH) answers NOSCRIPT,
and the call is repeated once after loading them — safe, as every script here is idempotent.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from fanout.accounts.model import UserId
from fanout.feed.model import Entry, Position, PostId, trim_slack
from fanout.storage.redis import keys
from fanout.storage.redis.connection import guard

__all__ = ["RedisTimelineStore"]

DEFAULT_CAP = 800  # entries kept per timeline (DESIGN.md §5.1)
# Timelines per script call: Redis runs nothing else while a script runs, and at ~5 µs per owner
# (measured on 800-entry timelines) this keeps one call near 2.5 ms whatever push() is handed.
MAX_KEYS_PER_CALL = 512
# Entries per script call: a call of pushes batched per timeline (~2.5 µs an entry) stays near
# 2.5 ms too.
MAX_ENTRIES_PER_CALL = 1_024
_ID = struct.Struct(">Q")  # a post id as a member: 8 bytes, big-endian
# Members past which a timeline leaves Redis's compact encoding (its marker is made long):
# measured per timeline write, the compact encoding is cheaper up to ~64 entries and ~6x
# smaller, a skiplist cheaper beyond (Redis's own switch is at 128).
SKIPLIST_FROM = 64
_PAD = b"\x00" * 57  # a long floor marker: the floor's id, then these (65 bytes in all)

# Byte-wise a < b. Lua's own < on strings follows the server's locale (strcoll), which need
# not order arbitrary bytes numerically.
_LT = """
local function lt(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end
"""

# The marker's rank, member and score (nil for a missing key). Usually rank 0: only entries
# pushed below the floor since the last trim sort under it.
_FIND = (
    f"local SKIPLIST_FROM = {SKIPLIST_FROM}\n"
    + """local NO_FLOOR = string.rep(string.char(0), 65)
local PAD = string.rep(string.char(0), 57)
local function no_floor(marker, score)
  return #marker < 9 or score == '-inf'
end
local function find_marker(key)
  local from, count = 0, 1
  while true do
    local got = redis.call('ZRANGE', key, from, from + count - 1, 'WITHSCORES')
    if #got == 0 then
      return nil
    end
    for i = 1, #got, 2 do
      if #got[i] ~= 8 then
        return from + (i - 1) / 2, got[i], got[i + 1]
      end
    end
    from, count = from + count, 64
  end
end
-- A long marker makes the set a skiplist (see the module docstring); a short one lets Redis
-- keep a small set compact.
local function lengthen(key)
  local _, marker, score = find_marker(key)
  if marker ~= nil and #marker < 65 then
    local long = NO_FLOOR
    if #marker > 8 then
      long = string.sub(marker, 1, 8) .. PAD
    end
    redis.call('ZADD', key, score, long)
    redis.call('ZREM', key, marker)
  end
end
"""
)

# A timeline of n members keeps its newest cap. If entries above the floor go, the newest of
# them becomes the floor (the new marker sorts right above it); if only members below the
# marker go, the floor stays.
_TRIM = (
    _FIND
    + """
local function trim(key, n, cap)
  local cut = n - cap - 1
  local at = find_marker(key)
  if at == nil or at < cut then
    local newest = redis.call('ZRANGE', key, cut, cut, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', key, 0, cut)
    redis.call('ZADD', key, newest[2], newest[1] .. PAD)
  elseif at == cut then
    redis.call('ZREMRANGEBYRANK', key, 0, cut - 1)
  else
    redis.call('ZREMRANGEBYRANK', key, 0, cut)
  end
end
"""
)

# KEYS: timelines (of one hash tag on a cluster). ARGV: limit (members before a trim), cap,
# then per key: how many entries, and that many score, member pairs. One ZADD per key, whatever
# the number of entries: in a sorted set past the compact encoding most of a write's cost is
# reaching the key and the command, not the insert (measured: ~6.5 µs of Redis CPU for one
# entry per call, ~2.5 µs an entry at eight).
_PUSH = (
    _TRIM
    + """
local limit, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local a = 3
for i = 1, #KEYS do
  local key, n = KEYS[i], tonumber(ARGV[a])
  local added, last = 0, a + 2 * n
  for from = a + 1, last, 400 do  -- 200 entries per ZADD: far below Lua's limit on unpack()
    added = added + redis.call('ZADD', key, unpack(ARGV, from, math.min(from + 399, last)))
  end
  a = last + 1
  if added > 0 then
    local size = redis.call('ZCARD', key)
    if size == added then
      redis.call('ZADD', key, '-inf', '')  -- a new timeline: its marker, short while small
      size = size + 1
    end
    if size > SKIPLIST_FROM and size - added <= SKIPLIST_FROM then
      lengthen(key)
    end
    if size > limit then
      trim(key, size, cap)
    end
  end
end
return 0
"""
)

# KEYS[1]: timeline. ARGV: limit, cap, floor score ('' = no floor), floor marker, then
# score, member pairs. Raises the floor, adds, deletes everything below the marker, trims.
_ADD = (
    _LT
    + _TRIM
    + """
local key = KEYS[1]
local limit, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local _, marker, marker_score = find_marker(key)
if marker == nil then
  marker, marker_score = '', '-inf'
  redis.call('ZADD', key, marker_score, marker)
end
if ARGV[3] ~= '' then
  local raise = no_floor(marker, marker_score)
  if not raise then
    local new, old = tonumber(ARGV[3]), tonumber(marker_score)
    raise = new > old or (new == old and lt(marker, ARGV[4]))
  end
  if raise then
    redis.call('ZREM', key, marker)
    marker = ARGV[4]
    redis.call('ZADD', key, ARGV[3], marker)
  end
end
for i = 5, #ARGV, 400 do  -- 200 entries per ZADD: far below Lua's limit on unpack()
  redis.call('ZADD', key, unpack(ARGV, i, math.min(i + 399, #ARGV)))
end
local below = redis.call('ZRANK', key, marker)
if below > 0 then
  redis.call('ZREMRANGEBYRANK', key, 0, below - 1)
end
local n = redis.call('ZCARD', key)
if n > SKIPLIST_FROM then
  lengthen(key)
end
if n > limit then
  trim(key, n, cap)
end
return 0
"""
)

# KEYS[1]: timeline. ARGV: highest score ('+inf' or before's), before's member ('' = none),
# limit. Returns member, score pairs, newest first, ending at the marker: the range starts at
# the marker's score, so a ``before`` under the floor finds nothing, not the strays down there.
# Entries with before's score are fetched too and filtered by id, so equal scores page exactly.
_PAGE = (
    _LT
    + _FIND
    + """
local key, top, before = KEYS[1], ARGV[1], ARGV[2]
local limit = tonumber(ARGV[3])
local at, _, bottom = find_marker(key)
if at == nil then
  return {}
end
local top_score = before ~= '' and tonumber(top)
local out, offset, batch = {}, 0, limit + 1
while true do
  local got = redis.call('ZRANGE', key, top, bottom, 'BYSCORE', 'REV', 'LIMIT', offset, batch,
    'WITHSCORES')
  for i = 1, #got, 2 do
    local member, score = got[i], got[i + 1]
    if #member ~= 8 then
      return out
    end
    if before == '' or tonumber(score) < top_score or lt(member, before) then
      out[#out + 1] = member
      out[#out + 1] = score
      if #out == 2 * limit then
        return out
      end
    end
  end
  if #got < 2 * batch then
    return out
  end
  offset = offset + batch
end
"""
)

# KEYS[1]: timeline. Returns the marker (member, score) or nil, and the entries above it.
_INSPECT = (
    _FIND
    + """
local at, marker, score = find_marker(KEYS[1])
if at == nil then
  return {false, false, 0}
end
return {marker, score, redis.call('ZCARD', KEYS[1]) - at - 1}
"""
)

# KEYS: timelines (of one hash tag on a cluster). ARGV[1]: the member to remove.
_REMOVE = """
for i = 1, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
return 0
"""


def _member(post_id: int) -> bytes:
    return _ID.pack(post_id)


def _floor_marker(floor: Position) -> bytes:
    """The marker member for ``floor``: sorts right above the entry at ``floor`` itself."""
    return _ID.pack(floor.post_id) + _PAD


def _entries(flat: list[bytes]) -> list[Entry]:
    """Member, score pairs to entries. Scores come as Redis prints doubles; ms timestamps are
    integers below 2**53, so the float is exact whichever notation Redis picked."""
    return [
        Entry(PostId(_ID.unpack(flat[i])[0]), int(float(flat[i + 1])))
        for i in range(0, len(flat), 2)
    ]


class RedisTimelineStore:
    """:class:`fanout.feed.ports.TimelineStore` on Redis sorted sets; see the module docstring.

    ``shards`` is the number of timeline hash tags (:data:`keys.TIMELINE_SHARDS`); every
    process of a deployment must use the same value. ``cluster``: the server is a Redis
    Cluster, so no script call may mix hash tags.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        cap: int = DEFAULT_CAP,
        shards: int = keys.TIMELINE_SHARDS,
        cluster: bool = False,
    ) -> None:
        if cap < 1 or shards < 1:
            raise ValueError("cap and shards must be at least 1")
        self._client = client
        self._cap = cap
        self._shards = shards
        self._cluster = cluster
        # Members a timeline may hold before a trim: cap + slack entries, plus the marker.
        self._limit = cap + trim_slack(cap) + 1
        self._push = client.register_script(_PUSH)
        self._add = client.register_script(_ADD)
        self._page = client.register_script(_PAGE)
        self._inspect = client.register_script(_INSPECT)
        self._remove = client.register_script(_REMOVE)

    def _key(self, owner: int) -> bytes:
        return keys.timeline(owner, self._shards)

    async def _per_call(
        self, script: AsyncScript, owners: Sequence[UserId], args: Sequence[EncodableT], what: str
    ) -> None:
        """Run ``script`` over the timelines of ``owners`` (KEYS: one call's timelines, ARGV:
        ``args``), all calls pipelined in one round trip."""
        calls = keys.timeline_calls(
            owners, MAX_KEYS_PER_CALL, shards=self._shards, per_slot=self._cluster
        )
        await self._run(script, [(call, args) for call in calls], what)

    async def push(self, entry: Entry, owners: Sequence[UserId]) -> None:
        """Add ``entry`` to every owner's timeline in one round trip; idempotent. An owner whose
        floor is at or above the entry never sees it (it sorts below the marker)."""
        await self.push_many([(entry, owners)])

    async def push_many(self, pushes: Sequence[tuple[Entry, Sequence[UserId]]]) -> None:
        """Every push at once: one ZADD per timeline holding all of its new entries, in script
        calls of at most ``MAX_KEYS_PER_CALL`` timelines and ``MAX_ENTRIES_PER_CALL`` entries,
        pipelined in one round trip."""
        by_owner: dict[int, list[EncodableT]] = {}
        for entry, owners in pushes:
            # Bytes, not ints: hiredis packs a bytes argument in about half the time.
            pair = (b"%d" % entry.score_ms, _member(entry.post_id))
            for user in owners:
                flat = by_owner.get(user)
                if flat is None:
                    by_owner[user] = list(pair)
                else:
                    flat += pair
        if not by_owner:
            return
        prefixes = keys.timeline_prefixes(self._shards)
        head: list[EncodableT] = [self._limit, self._cap]
        calls: list[tuple[list[bytes], list[EncodableT]]] = []
        groups = keys.timeline_groups(by_owner, shards=self._shards, per_slot=self._cluster)
        for group in groups:
            call_keys: list[bytes] = []
            args = head.copy()
            entries = 0
            for owner in group:
                flat = by_owner[owner]
                n = len(flat) // 2
                if call_keys and (
                    len(call_keys) >= MAX_KEYS_PER_CALL or entries + n > MAX_ENTRIES_PER_CALL
                ):
                    calls.append((call_keys, args))
                    call_keys, args, entries = [], head.copy(), 0
                call_keys.append(prefixes[owner % self._shards] + b"%d" % owner)
                args.append(b"%d" % n)
                args += flat
                entries += n
            calls.append((call_keys, args))
        await self._run(self._push, calls, "timeline push")

    async def _run(
        self,
        script: AsyncScript,
        calls: Sequence[tuple[Sequence[bytes], Sequence[EncodableT]]],
        what: str,
    ) -> None:
        """Run ``script`` once per (KEYS, ARGV) call, all pipelined in one round trip; a server
        that lost the script gets it loaded and the calls again (every script is idempotent)."""
        async with guard(what):
            for attempt in range(2):
                pipe = self._client.pipeline(transaction=False)
                for call_keys, args in calls:
                    pipe.evalsha(script.sha, len(call_keys), *call_keys, *args)
                replies = await pipe.execute(raise_on_error=False)
                errors = [reply for reply in replies if isinstance(reply, Exception)]
                if not errors:
                    return
                if attempt == 0 and all(isinstance(error, NoScriptError) for error in errors):
                    script.sha = await self._client.script_load(script.script)
                    continue
                raise errors[0]

    async def add(
        self, owner: UserId, entries: Sequence[Entry], floor: Position | None = None
    ) -> None:
        """One script call: raise the floor (never lower it), add, drop what is at or below
        the floor, trim past ``cap + slack``."""
        if not entries and floor is None:
            return
        args: list[EncodableT] = [self._limit, self._cap]
        args += ("", "") if floor is None else (floor.score_ms, _floor_marker(floor))
        for entry in entries:
            args += (entry.score_ms, _member(entry.post_id))
        async with guard("timeline add"):
            await self._add(keys=[self._key(owner)], args=args)

    async def page(self, owner: UserId, before: Position | None, limit: int) -> list[Entry]:
        """Entries strictly older than ``before`` and strictly above the floor, newest first;
        one script call."""
        if limit < 1:
            return []
        if before is None:
            args: list[EncodableT] = ["+inf", "", limit]
        else:
            args = [before.score_ms, _member(before.post_id), limit]
        async with guard("timeline page"):
            flat = await self._page(keys=[self._key(owner)], args=args)
        return _entries(flat)

    async def _marker(self, owner: UserId) -> tuple[bytes | None, bytes | None, int]:
        """The marker's member and score (None, None without a timeline) and the entries."""
        async with guard("timeline inspect"):
            marker, score, size = await self._inspect(keys=[self._key(owner)])
        return marker, score, int(size)

    async def floor(self, owner: UserId) -> Position | None:
        """Read from the marker: None while it is the "no floor yet" one."""
        marker, score, _ = await self._marker(owner)
        if marker is None or score is None or len(marker) <= _ID.size or score == b"-inf":
            return None
        return Position(int(float(score)), _ID.unpack_from(marker)[0])

    async def remove(self, owner: UserId, post_ids: Sequence[PostId]) -> None:
        if post_ids:
            async with guard("timeline remove"):
                await self._client.zrem(self._key(owner), *map(_member, post_ids))

    async def remove_everywhere(self, post_id: PostId, owners: Sequence[UserId]) -> None:
        """Script calls pipelined in one round trip, like :meth:`push`."""
        if owners:
            await self._per_call(self._remove, owners, (_member(post_id),), "timeline purge")

    async def built_at(self, owner: UserId) -> int | None:
        async with guard("timeline built_at"):
            raw = await self._client.get(keys.timeline_built(owner, self._shards))
        return None if raw is None else int(raw)

    async def mark_built(self, owner: UserId, at_ms: int | None) -> None:
        key = keys.timeline_built(owner, self._shards)
        async with guard("timeline mark_built"):
            if at_ms is None:
                await self._client.delete(key)
            else:
                await self._client.set(key, at_ms)

    async def size(self, owner: UserId) -> int:
        """Entries above the marker (what :meth:`page` can return)."""
        _, _, size = await self._marker(owner)
        return size
