"""Ports of the feed. Adapters: ``storage/embedded/feed*.py``, ``storage/postgres/feed*.py``,
``storage/redis/timelines.py``; ``tests/contract/test_feed_*.py`` is the contract on each.

Writes that must reach the log take ``events``: the adapter commits them with its own write
(SQLite: the same transaction; PostgreSQL: an outbox row in the same transaction, relayed to
Redis Streams), so a post never exists without its fan-out record, nor the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fanout.accounts.model import UserId
from fanout.core.log import Publish
from fanout.feed.model import Comment, Entry, Follow, NewPost, Position, Post, PostId

__all__ = ["FeedStores", "FollowStore", "LiveFeed", "PostStore", "SnapshotStore", "TimelineStore"]


class PostStore(Protocol):
    """Posts, likes, comments and viewer→author affinity."""

    async def create(
        self, post: NewPost, events: Sequence[Publish], *, unpushed: bool = False
    ) -> Post:
        """Store a post (counters at zero) and its events atomically. ``unpushed`` marks a post
        that fan-out will not push: its author becomes a pull source for readers, for good."""
        ...

    async def get_many(self, ids: Sequence[PostId]) -> dict[PostId, Post]:
        """Posts by id, deleted ones included (``deleted=True``); unknown ids are absent."""
        ...

    async def delete(self, post_id: PostId, events: Sequence[Publish]) -> bool:
        """Mark deleted (with events); False if it was already deleted or never existed."""
        ...

    async def by_author(self, author: UserId, before: Position | None, limit: int) -> list[Entry]:
        """The author's live posts strictly older than ``before``, newest first."""
        ...

    async def by_authors(
        self, authors: Sequence[UserId], before: Position | None, limit: int
    ) -> list[Entry]:
        """Live posts of any of ``authors`` strictly older than ``before``, newest first."""
        ...

    async def like(self, user: UserId, post_id: PostId, events: Sequence[Publish]) -> bool:
        """Idempotent; True (and events stored, counter and affinity raised) only the first time.
        ``NotFound`` if the post never existed (a deleted post may still be liked)."""
        ...

    async def unlike(self, user: UserId, post_id: PostId) -> bool:
        """Idempotent; True if a like was removed (counter lowered)."""
        ...

    async def liked(self, user: UserId, post_ids: Sequence[PostId]) -> set[PostId]:
        """Which of ``post_ids`` ``user`` likes."""
        ...

    async def add_comment(self, comment: Comment, events: Sequence[Publish]) -> Comment:
        """Store a comment, raise the post's counter and the affinity, store events.
        ``NotFound`` (and nothing stored) if the post never existed."""
        ...

    async def comments(self, post_id: PostId, after_id: int | None, limit: int) -> list[Comment]:
        """Comments with id greater than ``after_id``, oldest first."""
        ...

    async def affinity(self, viewer: UserId, authors: Sequence[UserId]) -> dict[UserId, float]:
        """How much ``viewer`` interacted with each author (likes + comments); absent = 0."""
        ...


class FollowStore(Protocol):
    """The follow graph, follower counts, and reader activity (for skipping idle followers)."""

    async def follow(
        self, follower: UserId, followee: UserId, at_ms: int, events: Sequence[Publish]
    ) -> bool:
        """Idempotent; True (events stored, counters raised) only when the edge is new."""
        ...

    async def unfollow(self, follower: UserId, followee: UserId, events: Sequence[Publish]) -> bool:
        """Idempotent; True (events stored, counters lowered) only when an edge was removed."""
        ...

    async def is_following(self, follower: UserId, followee: UserId) -> bool: ...

    async def followers(self, user: UserId, before: Position | None, limit: int) -> list[Follow]:
        """Who follows ``user``, most recent first; ``Position(at_ms, user_id)`` pages."""
        ...

    async def following(self, user: UserId, before: Position | None, limit: int) -> list[Follow]:
        """Whom ``user`` follows, most recent first."""
        ...

    async def following_ids(self, user: UserId) -> set[UserId]:
        """Everyone ``user`` follows."""
        ...

    async def following_and_pull(self, user: UserId) -> tuple[set[UserId], set[UserId]]:
        """Everyone ``user`` follows, and which of them are pull sources (published a post
        that fan-out did not push: :meth:`PostStore.create` with ``unpushed``), read together
        in one query, so the second is always part of the first."""
        ...

    async def following_count(self, user: UserId) -> int: ...

    async def follower_count(self, user: UserId) -> int: ...

    async def fanout_targets(
        self, author: UserId, after: UserId | None, limit: int, active_since_ms: int
    ) -> list[UserId]:
        """Followers of ``author`` with id greater than ``after``, ascending, skipping those
        whose last activity is older than ``active_since_ms`` (never-seen users count as
        active)."""
        ...

    async def fanout_targets_many(
        self, starts: Sequence[tuple[UserId, UserId | None]], limit: int, active_since_ms: int
    ) -> list[list[UserId]]:
        """:meth:`fanout_targets` for each (author, after) of ``starts``, in that order, at
        once (one round trip)."""
        ...

    async def touch(self, user: UserId, at_ms: int) -> None:
        """Record that ``user`` was active at ``at_ms`` (never moves backwards)."""
        ...

    async def last_active(self, user: UserId) -> int | None: ...


class TimelineStore(Protocol):
    """Per-user timelines: (score, post id) sets, newest ``cap`` kept, trimming amortized.

    Each timeline has a *floor*: a position at or below which entries may be missing — the
    newest position ever removed by trimming, or the ``floor`` of a floored :meth:`add`. Entries
    at or below it are never added nor returned; :meth:`page` returns only entries strictly
    above it, and the reader relies on the timeline being complete there (``feed/reader.py``).
    """

    async def push(self, entry: Entry, owners: Sequence[UserId]) -> None:
        """Add ``entry`` to every owner's timeline; adding it twice changes nothing."""
        ...

    async def push_many(self, pushes: Sequence[tuple[Entry, Sequence[UserId]]]) -> None:
        """:meth:`push` of each (entry, owners) pair, at once: a timeline that several of them
        reach is written once with all of its new entries."""
        ...

    async def add(
        self, owner: UserId, entries: Sequence[Entry], floor: Position | None = None
    ) -> None:
        """Add several entries to one timeline (backfill, rebuild). With ``floor`` (the source
        was truncated: entries at or below it may be missing), drop every entry at or below it
        and raise the timeline's floor to it; a floor is never lowered."""
        ...

    async def page(self, owner: UserId, before: Position | None, limit: int) -> list[Entry]:
        """Entries strictly older than ``before`` and strictly above the floor, newest first."""
        ...

    async def floor(self, owner: UserId) -> Position | None:
        """The timeline's floor, None if nothing was ever trimmed away."""
        ...

    async def remove(self, owner: UserId, post_ids: Sequence[PostId]) -> None: ...

    async def remove_everywhere(self, post_id: PostId, owners: Sequence[UserId]) -> None:
        """Remove one post from several timelines (delete purge)."""
        ...

    async def built_at(self, owner: UserId) -> int | None:
        """When the timeline was last (re)built; None means it must be built before use."""
        ...

    async def mark_built(self, owner: UserId, at_ms: int | None) -> None:
        """Set (or, with None, clear) the built marker."""
        ...

    async def size(self, owner: UserId) -> int:
        """Entries held (they may exceed the cap by the trimming slack)."""
        ...


class SnapshotStore(Protocol):
    """Short-lived ranked result lists, so ranked paging is stable within one snapshot."""

    async def put(self, key: str, post_ids: Sequence[PostId], ttl_s: int) -> None: ...

    async def get(self, key: str) -> list[PostId] | None:
        """The list, or None once expired."""
        ...


class LiveFeed(Protocol):
    """Offers new posts to followers who are online (the WebSocket gateway implements it)."""

    async def offer(self, post: Post, followers: Sequence[UserId]) -> None: ...


@dataclass(frozen=True, slots=True)
class FeedStores:
    """The feed's stores on one backend, handed together to the service, reader and worker."""

    posts: PostStore
    follows: FollowStore
    timelines: TimelineStore
    snapshots: SnapshotStore
