"""Feed records. Timelines hold only (post id, score) entries; posts are stored once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

from fanout.accounts.model import UserId

__all__ = ["Comment", "Entry", "Follow", "NewPost", "Position", "Post", "PostId", "trim_slack"]

PostId = NewType("PostId", int)


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in a newest-first list: items strictly *older* than it come next.

    Ordering is by (score_ms, post_id): the creation time, then the id breaks ties, so two posts
    in the same millisecond still have a total order and paging never repeats or skips one.
    """

    score_ms: int
    post_id: int


@dataclass(frozen=True, slots=True)
class Entry:
    """A timeline entry: a post and its score (its creation time in ms)."""

    post_id: PostId
    score_ms: int

    @property
    def position(self) -> Position:
        return Position(self.score_ms, self.post_id)


@dataclass(frozen=True, slots=True)
class NewPost:
    id: PostId
    author_id: UserId
    text: str
    media_urls: tuple[str, ...]
    created_ms: int


@dataclass(frozen=True, slots=True)
class Post:
    id: PostId
    author_id: UserId
    text: str
    media_urls: tuple[str, ...]
    created_ms: int
    like_count: int
    comment_count: int
    deleted: bool = False

    @property
    def entry(self) -> Entry:
        return Entry(self.id, self.created_ms)


@dataclass(frozen=True, slots=True)
class Comment:
    id: int
    post_id: PostId
    author_id: UserId
    text: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Follow:
    """One edge of the graph, with when it was made (lists page by it, newest first)."""

    user_id: UserId
    at_ms: int


def trim_slack(cap: int) -> int:
    """Entries a timeline may hold beyond ``cap`` before it is trimmed back to ``cap``: one trim
    per ``slack`` inserts instead of one per insert."""
    return max(1, cap // 8)
