"""The log port: topics split into partitions, read by consumer groups (DESIGN.md §4).

Contract every adapter keeps (``tests/contract/test_log.py`` checks it on every backend):

* ``publish(topic, key, payload)`` appends to partition ``partition_for(key, partitions)``.
  Offsets increase strictly within a partition; order is guaranteed within a partition only.
* A consumer group sees every record of a topic (a new group starts at the earliest retained
  record). Within a group, a partition is read by the consumer holding its **lease**
  (:meth:`Log.acquire`), so two consumers of one group never process one record at once.
* :meth:`Log.read` returns, in offset order, first the partition's records delivered earlier and
  not acknowledged (a crashed consumer's, or the caller's own), then new ones. Each delivery
  increments the record's ``deliveries``. A record stays pending until :meth:`Log.ack` —
  at-least-once, so every handler is idempotent.
* :meth:`Log.dead_letter` appends the record to ``<topic>.dlq`` (same key, payload, plus
  ``error`` headers) and acknowledges it, atomically where the backend allows.
* :meth:`Log.lag` counts the records of a topic a group has not acknowledged yet.

Adapters raise :class:`fanout.core.errors.Unavailable` when their backend cannot be reached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["DLQ_SUFFIX", "Log", "LogRecord", "Publish", "Topics", "offset_order"]

DLQ_SUFFIX = ".dlq"


class Topics:
    """The platform's topics (DESIGN.md §4); the key named is what orders each topic."""

    FEED_POSTS = "feed.posts"  # key: author_id
    FEED_FOLLOWS = "feed.follows"  # key: follower_id
    CHAT_EVENTS = "chat.events"  # key: channel_id
    NOTIFY_REQUESTS = "notify.requests"  # key: event_id
    NOTIFY_DELIVERIES = "notify.deliveries"  # key: event_id
    LINKS_CLICKS = "links.clicks"  # key: code

    ALL = (FEED_POSTS, FEED_FOLLOWS, CHAT_EVENTS, NOTIFY_REQUESTS, NOTIFY_DELIVERIES, LINKS_CLICKS)


def offset_order(offset: str) -> tuple[int, int]:
    """A sortable form of any adapter's offset: ``"123"`` (SQLite) or ``"1700000000000-5"``
    (Redis stream ids). Offsets of one partition compare correctly through it."""
    high, _, low = offset.partition("-")
    return int(high), int(low or 0)


@dataclass(frozen=True, slots=True)
class Publish:
    """A record to append, handed to a store so it commits with the store's write (outbox)."""

    topic: str
    key: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class LogRecord:
    topic: str
    partition: int
    offset: str  # opaque, increasing within the partition; adapters parse their own
    key: str
    payload: bytes
    deliveries: int = 1  # deliveries to this group so far, this one included
    headers: Mapping[str, str] = field(default_factory=dict)


class Log(Protocol):
    """A partitioned, durable, at-least-once log with consumer groups."""

    @property
    def partitions(self) -> int:
        """Partitions per topic (the same for every topic)."""
        ...

    async def publish(
        self, topic: str, key: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Append one record; durable when this returns."""
        ...

    async def publish_many(self, topic: str, entries: Sequence[tuple[str, bytes]]) -> None:
        """Append ``(key, payload)`` records; each partition keeps their relative order."""
        ...

    async def join(self, topic: str, group: str, consumer: str, ttl_ms: int) -> int:
        """Announce ``consumer`` as alive in ``group`` for ``ttl_ms``; the number alive now."""
        ...

    async def acquire(
        self, topic: str, group: str, consumer: str, partition: int, ttl_ms: int
    ) -> bool:
        """Take or renew the lease on ``partition`` for ``ttl_ms``; False if another holds it."""
        ...

    async def release(self, topic: str, group: str, consumer: str, partition: int) -> None:
        """Give up the lease if ``consumer`` holds it (no-op otherwise)."""
        ...

    async def read(
        self, topic: str, group: str, consumer: str, partition: int, count: int
    ) -> list[LogRecord]:
        """Up to ``count`` records: pending ones (redelivered) first, then new, in offset order."""
        ...

    async def ack(self, group: str, records: Sequence[LogRecord]) -> None:
        """Mark records as handled by ``group``; acknowledging twice is harmless."""
        ...

    async def unclaim(self, group: str, consumer: str, records: Sequence[LogRecord]) -> None:
        """Take back the delivery of records handed out but never attempted (a graceful stop
        or a lease handed back mid-batch): their delivery count drops by one, they stay
        pending. Without it a few restarts would make healthy records look like poison."""
        ...

    async def dead_letter(self, group: str, record: LogRecord, error: str) -> None:
        """Move ``record`` to ``<topic>.dlq`` with ``error`` and acknowledge it."""
        ...

    async def lag(self, topic: str, group: str) -> int:
        """Records of ``topic`` not yet acknowledged by ``group`` (pending + undelivered)."""
        ...

    async def groups(self) -> list[tuple[str, str]]:
        """Every known (topic, group) pair, for the lag metric."""
        ...

    async def wait(self, topic: str, timeout_s: float) -> None:
        """Return when new records of ``topic`` may exist, or after ``timeout_s`` at most."""
        ...

    async def ping(self) -> None:
        """Raise ``Unavailable`` if the backend cannot be reached."""
        ...
