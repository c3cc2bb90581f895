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
``SKIPLIST_FROM`` (``timeline_scripts.py``) members, a script swaps in the long (65-byte) form
of the same marker, which makes Redis convert the set to a skiplist for good. Whatever its
length, a marker's first 8 bytes are the floor's id; one at ``-inf`` or shorter than 9 bytes
means no floor.

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
when one was new — pipelined, 16 calls a round trip, three round trips in flight
(:meth:`~RedisTimelineStore.push` is one post's). On a Redis Cluster (``cluster=True``) a
call may only touch one slot, so owners are split by hash tag: one call per tag present
(:func:`keys.timeline_groups`). One server takes any keys in a call: one call where a cluster
needs ~31 (measured: 25-37 % more timeline writes/s at a median of 200 followers, ``fanout
bench feed``).
A timeline holding more than ``cap + slack`` members besides the marker is trimmed in the same
script: the oldest go, down to ``cap``, and the marker moves up to the newest entry removed.
One trim per ``slack`` pushes, not per push.

Scripts run with EVALSHA; a server that lost them (restart, SCRIPT FLUSH) answers NOSCRIPT,
and the call is repeated once after loading them — safe, as every script here is idempotent.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.typing import EncodableT

from fanout.accounts.model import UserId
from fanout.core.concurrency import at_most
from fanout.feed.model import Entry, Position, PostId, trim_slack
from fanout.storage.redis import keys
from fanout.storage.redis import timeline_scripts as scripts
from fanout.storage.redis.connection import guard, run_scripts

__all__ = ["RedisTimelineStore"]

DEFAULT_CAP = 800  # entries kept per timeline (DESIGN.md §5.1)
# Timelines per script call: Redis runs nothing else while a script runs, and at ~5 µs per owner
# (measured on 800-entry timelines) this keeps one call near 2.5 ms whatever push() is handed.
MAX_KEYS_PER_CALL = 512
# Entries per script call: a call of pushes batched per timeline (~2.5 µs an entry) stays near
# 2.5 ms too.
MAX_ENTRIES_PER_CALL = 1_024
# Script calls per round trip of a push_many: at most ~16 000 entries (~40 ms of Redis), so
# each round trip has its own deadline (``OP_TIMEOUT_S``) and a payload of ~0.5 MB.
CALLS_PER_ROUND_TRIP = 16
# Round trips of a push_many in flight at once (each on its own pooled connection): Redis runs
# one while the client packs the next and reads the last one's replies, instead of idling
# through them. A pass's calls hold disjoint timelines, so their order does not matter.
# Measured (``fanout bench feed --strategies push``): 64 calls a round trip one at a time kept
# Redis ~80 % busy in a drain.
ROUND_TRIPS_AT_ONCE = 3
_ID = struct.Struct(">Q")  # a post id as a member: 8 bytes, big-endian
_PAD = b"\x00" * 57  # a long floor marker: the floor's id, then these (65 bytes in all)


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
        self._push = client.register_script(scripts.PUSH)
        self._add = client.register_script(scripts.ADD)
        self._page = client.register_script(scripts.PAGE)
        self._inspect = client.register_script(scripts.INSPECT)
        self._remove = client.register_script(scripts.REMOVE)

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
        """Add ``entry`` to every owner's timeline in pipelined script calls (as
        :meth:`push_many`); idempotent. An owner whose floor is at or above the entry never
        sees it (it sorts below the marker)."""
        await self.push_many([(entry, owners)])

    async def push_many(self, pushes: Sequence[tuple[Entry, Sequence[UserId]]]) -> None:
        """Every push at once: one ZADD per timeline holding all of its new entries, in script
        calls of at most ``MAX_KEYS_PER_CALL`` timelines and ``MAX_ENTRIES_PER_CALL`` entries
        (a timeline's entries are never split), pipelined ``CALLS_PER_ROUND_TRIP`` a round
        trip, ``ROUND_TRIPS_AT_ONCE`` round trips at once."""
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
        await at_most(ROUND_TRIPS_AT_ONCE, (
            functools.partial(self._run, self._push, calls[i : i + CALLS_PER_ROUND_TRIP],
                              "timeline push")
            for i in range(0, len(calls), CALLS_PER_ROUND_TRIP)
        ))  # fmt: skip

    async def _run(
        self,
        script: AsyncScript,
        calls: Sequence[tuple[Sequence[bytes], Sequence[EncodableT]]],
        what: str,
    ) -> None:
        """Run ``script`` once per (KEYS, ARGV) call, all pipelined in one round trip."""
        async with guard(what):
            await run_scripts(self._client, [(script, k, args) for k, args in calls])

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
