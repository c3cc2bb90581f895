"""Ports of the links product.

Adapters: ``storage/embedded/links.py`` and ``storage/embedded/clicks.py``,
``storage/postgres/links.py``,
``storage/redis/links.py``; their contract: ``tests/contract/test_links_*.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from fanout.accounts.model import UserId
from fanout.links.model import Link, LinkStats

__all__ = ["ClickStore", "DeleteFeed", "LinkCache", "LinkStore"]


class LinkStore(Protocol):
    async def lease_block(self, size: int) -> int:
        """Reserve ``size`` consecutive counter values for this process: the first of them.
        Blocks never overlap, across processes and restarts."""
        ...

    async def create(self, link: Link) -> None:
        """Store a new link; ``Conflict`` if its code is taken (by any link, even deleted)."""
        ...

    async def get(self, code: str) -> Link | None:
        """The link, deleted ones included; None if the code was never used."""
        ...

    async def find_for_reuse(self, owner: UserId, url: str) -> Link | None:
        """The owner's newest link to exactly ``url`` that is not deleted."""
        ...

    async def by_owner(
        self, owner: UserId, before: tuple[int, str] | None, limit: int
    ) -> list[Link]:
        """The owner's live (not deleted) links, newest first; ``before`` = (created_ms, code)."""
        ...

    async def delete(self, code: str) -> bool:
        """Mark deleted; False if it was already deleted or never existed."""
        ...

    async def take_visit(self, code: str) -> bool:
        """Count one visit of a link with ``max_visits``, atomically: False (and nothing
        counted) once the limit is reached."""
        ...


class ClickStore(Protocol):
    """Click aggregates: per minute, hour and day, unique visitors per hour, dimensions per day.

    ``apply`` is exactly-once per log position: it skips records at or below the watermark it
    keeps for (group, partition), and moves the watermarks in the same transaction as the
    counters, so a redelivered batch never counts twice and a crash never loses one.
    """

    async def apply(self, group: str, batches: Mapping[int, Sequence[tuple[str, bytes]]]) -> int:
        """Aggregate ``(offset, payload)`` records per partition, each partition's in offset
        order, in one transaction (a payload: clicks as :func:`fanout.links.model.encode_clicks`
        writes them, or as the log carried them before); the number of clicks applied (those
        of records above the watermarks). A malformed payload raises, and nothing of the call
        is applied."""
        ...

    async def stats(
        self, code: str, granularity: str, from_ms: int, to_ms: int, top: int = 10
    ) -> LinkStats:
        """Series of ``granularity`` (minute | hour | day) buckets in [from_ms, to_ms), and the
        top ``top`` referrer hosts, countries, devices and UTM values over those days."""
        ...

    async def totals(self, codes: Sequence[str]) -> dict[str, int]:
        """Human clicks ever, per code (absent = 0)."""
        ...

    async def prune(self, visitors_before_ms: int, minutes_before_ms: int) -> int:
        """Forget visitor sets of hours before ``visitors_before_ms`` and minute buckets before
        ``minutes_before_ms`` (hour and day buckets are kept); the rows deleted."""
        ...


class LinkCache(Protocol):
    """A shared cache in front of the store (Redis in scaled mode), positive and negative."""

    async def get(self, code: str) -> Link | bool | None:
        """The cached link, ``False`` for a cached "no such code", ``None`` on a miss."""
        ...

    async def get_many(self, codes: Sequence[str]) -> list[Link | bool | None]:
        """:meth:`get` of each of ``codes``, in order, in one round trip where the cache
        allows (a background refresh of many entries). ``Unavailable`` when out of reach."""
        ...

    async def put(
        self, code: str, link: Link | None, ttl_s: float, *, replace: bool = True
    ) -> None:
        """Cache ``link``, or a "no such code" for ``None``. With ``replace=False`` an entry
        already there wins (a fill from the store must not overwrite a newer delete)."""
        ...

    async def forget(self, code: str) -> None: ...


class DeleteFeed(Protocol):
    """Tells every process of a deployment which codes were deleted, so each may trust its
    in-process cache long. Delivery may be lost while a process is disconnected: it is then
    told of the gap (``on_gap``) and must forget everything it cached."""

    async def start(
        self, on_deleted: Callable[[str], None], on_gap: Callable[[], None]
    ) -> None: ...

    async def deleted(self, code: str) -> None: ...

    async def close(self) -> None: ...
