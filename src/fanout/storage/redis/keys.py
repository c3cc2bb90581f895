"""Every Redis key of fanout, in one place (STYLE.md rule 9).

All keys start with ``fanout:``. Keys that one Lua script or MULTI touches together share a
Redis Cluster hash tag (the ``{...}`` part), so they live in one slot:

* a topic-partition's stream, its dead-letter stream(s) and its leases share
  ``{<root topic>:<partition>}`` — the root topic is the topic without its ``.dlq`` suffixes, so
  :meth:`RedisLog.dead_letter` can XADD to ``<topic>.dlq`` and XACK ``<topic>`` atomically;
* a timeline's sorted set and its built marker share ``{s<shard>}`` with every other timeline
  of the same shard (``owner % shards``), so on a cluster one fan-out script call can write all
  timelines of a shard group (see :func:`timeline_calls` and ``storage/redis/timelines.py``);
* a user's presence leases share ``{p<shard>}`` (``user % shards``) with the online set of that
  shard, so one script can refresh a lease and the user's place in the online set together
  (see ``storage/redis/presence.py``);
* every other key is used alone, so its tag only spreads load.

Topic names must not contain ``{`` or ``}``: they would move the hash tag.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from fanout.core.log import DLQ_SUFFIX

__all__ = [
    "PREFIX",
    "PRESENCE_SHARDS",
    "TIMELINE_SHARDS",
    "feed_snapshot",
    "link_cache",
    "log_groups",
    "log_lease",
    "log_members",
    "log_stream",
    "presence_leases",
    "presence_online",
    "rate_limit_bucket",
    "timeline",
    "timeline_built",
    "timeline_calls",
    "timeline_groups",
    "timeline_prefixes",
    "worker_id",
]

PREFIX = "fanout:"

# Timeline hash tags: enough to spread timelines over a Redis Cluster (each tag is one slot, so
# moving slots balances the masters to within 1/31 of the timeline load). On a cluster a fan-out
# to 1 000 followers is then ~31 script calls of ~32 owners (one per tag present, each with a
# fixed cost on both sides); on one server, two (:func:`timeline_calls`, 512 keys a call).
# Prime because user ids are Snowflakes whose low 12 bits count ids within one millisecond and
# are nearly always 0: ``owner % 32`` would put almost every user into shard 0, a prime modulus
# depends on every bit. Changing it renames every timeline key (timelines are then rebuilt from
# pull, as for a new user).
TIMELINE_SHARDS = 31

# Presence hash tags, prime for the same reason (user ids are Snowflakes). Each shard's online
# set is one key, so this many spread the heartbeat load over a cluster, and a sweep is this
# many script calls, pipelined. Changing it renames every presence key: users look offline
# until their next heartbeat.
PRESENCE_SHARDS = 31


def _partition_tag(topic: str, partition: int) -> str:
    """``{root:partition}`` followed by the ``.dlq`` suffixes that ``topic`` has beyond root."""
    if "{" in topic or "}" in topic:
        raise ValueError(f"topic names cannot contain braces: {topic!r}")
    root = topic
    while root.endswith(DLQ_SUFFIX):
        root = root[: -len(DLQ_SUFFIX)]
    return f"{{{root}:{partition}}}{topic[len(root) :]}"


def log_stream(topic: str, partition: int) -> str:
    """The Redis Stream holding one topic-partition, e.g. ``fanout:log:{feed.posts:3}``; its
    dead-letter stream is ``fanout:log:{feed.posts:3}.dlq`` (same slot)."""
    return f"{PREFIX}log:{_partition_tag(topic, partition)}"


def log_lease(topic: str, group: str, partition: int) -> str:
    """String holding the consumer that leases ``partition`` for ``group`` (expires: PX)."""
    return f"{PREFIX}lease:{_partition_tag(topic, partition)}:{group}"


def log_members(topic: str, group: str) -> str:
    """Sorted set of a group's live consumers, scored by heartbeat expiry (server ms)."""
    if "{" in topic or "}" in topic:
        raise ValueError(f"topic names cannot contain braces: {topic!r}")
    return f"{PREFIX}members:{{{topic}}}:{group}"


def log_groups() -> str:
    """Set of every known (topic, group) pair, JSON-encoded, for the lag metric."""
    return f"{PREFIX}log:groups"


def rate_limit_bucket(key: str) -> str:
    """Hash with one token bucket (``tokens``, ``updated``); expires once it would be full."""
    return f"{PREFIX}ratelimit:{key}"


def worker_id(worker: int) -> str:
    """String naming the process that leases Snowflake worker id ``worker`` (expires: PX)."""
    return f"{PREFIX}worker-id:{worker}"


@functools.cache
def timeline_prefixes(shards: int) -> tuple[bytes, ...]:
    """Per shard, what a :func:`timeline` key starts with: ``timeline(owner)`` is
    ``timeline_prefixes(shards)[owner % shards] + b"%d" % owner`` (for hot loops)."""
    return tuple(f"{PREFIX}tl:{{s{shard}}}:".encode() for shard in range(shards))


def timeline(owner: int, shards: int = TIMELINE_SHARDS) -> bytes:
    """Sorted set holding one user's timeline, e.g. ``fanout:tl:{s17}:<owner>`` (shard =
    ``owner % shards``). Bytes, like :func:`timeline_calls`, which builds thousands at once."""
    return timeline_prefixes(shards)[owner % shards] + b"%d" % owner


def timeline_built(owner: int, shards: int = TIMELINE_SHARDS) -> bytes:
    """String holding when a timeline was last (re)built (ms); absent = must be built."""
    return f"{PREFIX}tlb:{{s{owner % shards}}}:{owner}".encode()


def timeline_groups(owners: Iterable[int], *, shards: int, per_slot: bool) -> list[list[int]]:
    """``owners`` as script calls may mix them: one group on one server; on a cluster
    (``per_slot``) one group per hash tag present, since a call may touch only one slot."""
    if not per_slot:
        return [list(owners)]
    groups: list[list[int]] = [[] for _ in range(shards)]
    for owner in owners:
        groups[owner % shards].append(owner)
    return [group for group in groups if group]


def timeline_calls(
    owners: Iterable[int], most: int, *, shards: int = TIMELINE_SHARDS, per_slot: bool = False
) -> list[list[bytes]]:
    """The :func:`timeline` keys of ``owners``, split into script calls of at most ``most``
    keys each. ``per_slot`` (Redis Cluster): no call mixes hash tags, so each lies in one slot
    — one call per tag present at least. Otherwise any keys share a call.

    The fan-out hot path: one modulo, one concatenation and one append per owner.
    """
    prefixes = timeline_prefixes(shards)
    calls: list[list[bytes]] = []
    for group in timeline_groups(owners, shards=shards, per_slot=per_slot):
        flat = [prefixes[owner % shards] + b"%d" % owner for owner in group]
        calls += (flat[i : i + most] for i in range(0, len(flat), most))
    return calls


def feed_snapshot(key: str) -> str:
    """String holding one ranked feed snapshot (packed post ids); expires (EX)."""
    return f"{PREFIX}snap:{key}"


def link_cache(code: str) -> str:
    """String caching one link by code, or a "no such code" tombstone; expires (PX). Used
    alone: braces in a requested code (tombstones are kept for any code asked for) only pick
    the key's slot."""
    return f"{PREFIX}link:{code}"


def chat_route(topic: str) -> str:
    """Pub/sub channel of a chat routing topic (``c<channel>``, ``u<user>``, ``p<user>``)."""
    return f"{PREFIX}chat:route:{topic}"


def presence_leases(user: int, shards: int = PRESENCE_SHARDS) -> str:
    """Sorted set of the nodes holding ``user``'s connections, scored by lease expiry (server
    ms), e.g. ``fanout:presence:{p5}:u:<user>``; expires (PEXPIREAT) with its latest lease."""
    return f"{PREFIX}presence:{{p{user % shards}}}:u:{user}"


def presence_online(shard: int) -> str:
    """Sorted set of the users of one presence shard not yet seen offline, scored by their
    latest lease expiry (server ms): ``fanout:presence:{p<shard>}:online``."""
    return f"{PREFIX}presence:{{p{shard}}}:online"


def links_events(topic: str) -> str:
    """Pub/sub channel of link events (``deleted``) between the processes of a deployment."""
    return f"{PREFIX}links:events:{topic}"
