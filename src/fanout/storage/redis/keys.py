"""Every Redis key of fanout, in one place (STYLE.md rule 9).

All keys start with ``fanout:``. Keys that one Lua script or MULTI touches together share a
Redis Cluster hash tag (the ``{...}`` part), so they live in one slot:

* a topic-partition's stream, its dead-letter stream(s) and its leases share
  ``{<root topic>:<partition>}`` — the root topic is the topic without its ``.dlq`` suffixes, so
  :meth:`RedisLog.dead_letter` can XADD to ``<topic>.dlq`` and XACK ``<topic>`` atomically;
* every other key is used alone, so its tag only spreads load.

Topic names must not contain ``{`` or ``}``: they would move the hash tag.
"""

from __future__ import annotations

from fanout.core.log import DLQ_SUFFIX

__all__ = [
    "PREFIX",
    "log_groups",
    "log_lease",
    "log_members",
    "log_stream",
    "rate_limit_bucket",
    "worker_id",
]

PREFIX = "fanout:"


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
