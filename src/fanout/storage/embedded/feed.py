"""SQLite adapters of the feed's PostStore and FollowStore (ports in ``fanout.feed.ports``).

Events handed to a write are appended to the SQLite log inside the same write job, so they
commit with it. Lists are index range scans; several authors are read one index range each and
merged, instead of one query that would sort every post of every author.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Sequence

from fanout.accounts.model import UserId
from fanout.core.errors import NotFound
from fanout.core.log import Publish
from fanout.feed.model import Comment, Entry, Follow, NewPost, Position, Post, PostId
from fanout.storage.embedded.engine import SqliteEngine, WriteTx
from fanout.storage.embedded.log import SqliteLog

__all__ = ["SqliteFollowStore", "SqlitePostStore"]

_POST_COLUMNS = "id, author_id, text, media_urls, created_ms, like_count, comment_count, deleted"
_MAX_POSITION = Position(2**63 - 1, 2**63 - 1)


def _post(row: tuple[int, int, str, str, int, int, int, int]) -> Post:
    return Post(
        id=PostId(row[0]), author_id=UserId(row[1]), text=row[2],
        media_urls=tuple(json.loads(row[3])), created_ms=row[4], like_count=row[5],
        comment_count=row[6], deleted=bool(row[7]),
    )  # fmt: skip


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SqlitePostStore:
    def __init__(self, engine: SqliteEngine, log: SqliteLog) -> None:
        self._engine = engine
        self._log = log

    def _publish(self, tx: WriteTx, events: Sequence[Publish]) -> None:
        for event in events:
            self._log.append(tx, event.topic, event.key, event.payload)

    async def create(
        self, post: NewPost, events: Sequence[Publish], *, unpushed: bool = False
    ) -> Post:
        def job(tx: WriteTx) -> None:
            tx.execute(
                "INSERT INTO posts (id, author_id, text, media_urls, created_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (post.id, post.author_id, post.text, json.dumps(post.media_urls), post.created_ms),
            )
            if unpushed:
                tx.execute(
                    "INSERT INTO pull_sources (author_id, last_unpushed_ms) VALUES (?, ?)"
                    " ON CONFLICT (author_id) DO UPDATE SET last_unpushed_ms ="
                    " max(last_unpushed_ms, excluded.last_unpushed_ms)",
                    (post.author_id, post.created_ms),
                )
            self._publish(tx, events)

        await self._engine.write(job)
        return Post(post.id, post.author_id, post.text, post.media_urls, post.created_ms, 0, 0)

    async def get_many(self, ids: Sequence[PostId]) -> dict[PostId, Post]:
        unique = list(dict.fromkeys(ids))
        if not unique:
            return {}
        rows = await self._engine.read(
            lambda c: c.execute(
                f"SELECT {_POST_COLUMNS} FROM posts WHERE id IN ({_marks(len(unique))})", unique
            ).fetchall()
        )
        return {PostId(r[0]): _post(r) for r in rows}

    async def delete(self, post_id: PostId, events: Sequence[Publish]) -> bool:
        def job(tx: WriteTx) -> bool:
            changed = tx.execute(
                "UPDATE posts SET deleted = 1 WHERE id = ? AND deleted = 0", (post_id,)
            ).rowcount
            if changed:
                self._publish(tx, events)
            return changed == 1

        return await self._engine.write(job)

    async def by_author(self, author: UserId, before: Position | None, limit: int) -> list[Entry]:
        return await self._engine.read(lambda c: _author_page(c, author, before, limit))

    async def by_authors(
        self, authors: Sequence[UserId], before: Position | None, limit: int
    ) -> list[Entry]:
        unique = list(set(authors))
        if not unique or limit <= 0:
            return []

        def query(conn: sqlite3.Connection) -> list[Entry]:
            pages = [_author_page(conn, a, before, limit) for a in unique]
            merged = heapq.merge(*pages, key=lambda e: e.position, reverse=True)
            return [e for _, e in zip(range(limit), merged, strict=False)]

        return await self._engine.read(query)

    async def like(self, user: UserId, post_id: PostId, events: Sequence[Publish]) -> bool:
        def job(tx: WriteTx) -> bool:
            if not tx.execute(
                "INSERT OR IGNORE INTO likes (post_id, user_id) VALUES (?, ?)", (post_id, user)
            ).rowcount:
                return False
            author = tx.execute(
                "UPDATE posts SET like_count = like_count + 1 WHERE id = ? RETURNING author_id",
                (post_id,),
            ).fetchone()
            if author is None:
                raise NotFound("post", post_id)  # rolls the like back with this job
            _raise_affinity(tx, user, author[0])
            self._publish(tx, events)
            return True

        return await self._engine.write(job)

    async def unlike(self, user: UserId, post_id: PostId) -> bool:
        def job(tx: WriteTx) -> bool:
            if not tx.execute(
                "DELETE FROM likes WHERE post_id = ? AND user_id = ?", (post_id, user)
            ).rowcount:
                return False
            tx.execute("UPDATE posts SET like_count = like_count - 1 WHERE id = ?", (post_id,))
            return True

        return await self._engine.write(job)

    async def liked(self, user: UserId, post_ids: Sequence[PostId]) -> set[PostId]:
        ids = list(set(post_ids))
        if not ids:
            return set()
        rows = await self._engine.read(
            lambda c: c.execute(
                f"SELECT post_id FROM likes WHERE user_id = ? AND post_id IN ({_marks(len(ids))})",
                (user, *ids),
            ).fetchall()
        )
        return {PostId(r[0]) for r in rows}

    async def add_comment(self, comment: Comment, events: Sequence[Publish]) -> Comment:
        def job(tx: WriteTx) -> None:
            tx.execute(
                "INSERT INTO comments (id, post_id, author_id, text, created_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (comment.id, comment.post_id, comment.author_id, comment.text, comment.created_ms),
            )
            author = tx.execute(
                "UPDATE posts SET comment_count = comment_count + 1 WHERE id = ?"
                " RETURNING author_id",
                (comment.post_id,),
            ).fetchone()
            if author is None:
                raise NotFound("post", comment.post_id)  # rolls the comment back
            _raise_affinity(tx, comment.author_id, author[0])
            self._publish(tx, events)

        await self._engine.write(job)
        return comment

    async def comments(self, post_id: PostId, after_id: int | None, limit: int) -> list[Comment]:
        rows = await self._engine.read(
            lambda c: c.execute(
                "SELECT id, post_id, author_id, text, created_ms FROM comments"
                " WHERE post_id = ? AND id > ? ORDER BY id LIMIT ?",
                (post_id, -(2**63) if after_id is None else after_id, limit),
            ).fetchall()
        )
        return [Comment(r[0], PostId(r[1]), UserId(r[2]), r[3], r[4]) for r in rows]

    async def affinity(self, viewer: UserId, authors: Sequence[UserId]) -> dict[UserId, float]:
        ids = list(set(authors))
        if not ids:
            return {}
        rows = await self._engine.read(
            lambda c: c.execute(
                "SELECT author_id, score FROM affinity WHERE viewer_id = ?"
                f" AND author_id IN ({_marks(len(ids))})",
                (viewer, *ids),
            ).fetchall()
        )
        return {UserId(r[0]): float(r[1]) for r in rows}


def _author_page(
    conn: sqlite3.Connection, author: UserId, before: Position | None, limit: int
) -> list[Entry]:
    at = before or _MAX_POSITION
    rows = conn.execute(
        "SELECT id, created_ms FROM posts WHERE author_id = ? AND deleted = 0"
        " AND (created_ms, id) < (?, ?) ORDER BY created_ms DESC, id DESC LIMIT ?",
        (author, at.score_ms, at.post_id, limit),
    ).fetchall()
    return [Entry(PostId(r[0]), r[1]) for r in rows]


def _raise_affinity(tx: WriteTx, viewer: int, author: int) -> None:
    tx.execute(
        "INSERT INTO affinity (viewer_id, author_id, score) VALUES (?, ?, 1)"
        " ON CONFLICT (viewer_id, author_id) DO UPDATE SET score = score + 1",
        (viewer, author),
    )


class SqliteFollowStore:
    def __init__(self, engine: SqliteEngine, log: SqliteLog) -> None:
        self._engine = engine
        self._log = log

    async def follow(
        self, follower: UserId, followee: UserId, at_ms: int, events: Sequence[Publish]
    ) -> bool:
        def job(tx: WriteTx) -> bool:
            if not tx.execute(
                "INSERT OR IGNORE INTO follows (followee_id, follower_id, at_ms) VALUES (?, ?, ?)",
                (followee, follower, at_ms),
            ).rowcount:
                return False
            _bump(tx, followee, "followers", 1)
            _bump(tx, follower, "following", 1)
            for event in events:
                self._log.append(tx, event.topic, event.key, event.payload)
            return True

        return await self._engine.write(job)

    async def unfollow(self, follower: UserId, followee: UserId, events: Sequence[Publish]) -> bool:
        def job(tx: WriteTx) -> bool:
            if not tx.execute(
                "DELETE FROM follows WHERE followee_id = ? AND follower_id = ?",
                (followee, follower),
            ).rowcount:
                return False
            _bump(tx, followee, "followers", -1)
            _bump(tx, follower, "following", -1)
            for event in events:
                self._log.append(tx, event.topic, event.key, event.payload)
            return True

        return await self._engine.write(job)

    async def is_following(self, follower: UserId, followee: UserId) -> bool:
        row = await self._engine.read(
            lambda c: c.execute(
                "SELECT 1 FROM follows WHERE followee_id = ? AND follower_id = ?",
                (followee, follower),
            ).fetchone()
        )
        return row is not None

    async def followers(self, user: UserId, before: Position | None, limit: int) -> list[Follow]:
        return await self._edges("followee_id", "follower_id", user, before, limit)

    async def following(self, user: UserId, before: Position | None, limit: int) -> list[Follow]:
        return await self._edges("follower_id", "followee_id", user, before, limit)

    async def _edges(
        self, side: str, other: str, user: UserId, before: Position | None, limit: int
    ) -> list[Follow]:
        at = before or _MAX_POSITION
        rows = await self._engine.read(
            lambda c: c.execute(
                f"SELECT {other}, at_ms FROM follows WHERE {side} = ?"
                f" AND (at_ms, {other}) < (?, ?) ORDER BY at_ms DESC, {other} DESC LIMIT ?",
                (user, at.score_ms, at.post_id, limit),
            ).fetchall()
        )
        return [Follow(UserId(r[0]), r[1]) for r in rows]

    async def following_ids(self, user: UserId) -> set[UserId]:
        rows = await self._engine.read(
            lambda c: c.execute(
                "SELECT followee_id FROM follows WHERE follower_id = ?", (user,)
            ).fetchall()
        )
        return {UserId(r[0]) for r in rows}

    async def following_and_pull(self, user: UserId) -> tuple[set[UserId], set[UserId]]:
        rows = await self._engine.read(
            lambda c: c.execute(
                "SELECT f.followee_id, p.author_id IS NOT NULL FROM follows f"
                " LEFT JOIN pull_sources p ON p.author_id = f.followee_id"
                " WHERE f.follower_id = ?",
                (user,),
            ).fetchall()
        )
        return {UserId(r[0]) for r in rows}, {UserId(r[0]) for r in rows if r[1]}

    async def following_count(self, user: UserId) -> int:
        return await self._stat(user, "following")

    async def follower_count(self, user: UserId) -> int:
        return await self._stat(user, "followers")

    async def _stat(self, user: UserId, column: str) -> int:
        row = await self._engine.read(
            lambda c: c.execute(
                f"SELECT {column} FROM user_stats WHERE user_id = ?", (user,)
            ).fetchone()
        )
        return int(row[0]) if row else 0

    async def fanout_targets(
        self, author: UserId, after: UserId | None, limit: int, active_since_ms: int
    ) -> list[UserId]:
        (targets,) = await self.fanout_targets_many([(author, after)], limit, active_since_ms)
        return targets

    async def fanout_targets_many(
        self, starts: Sequence[tuple[UserId, UserId | None]], limit: int, active_since_ms: int
    ) -> list[list[UserId]]:
        def query(c: sqlite3.Connection) -> list[list[UserId]]:
            return [
                [
                    UserId(r[0])
                    for r in c.execute(
                        "SELECT f.follower_id FROM follows f"
                        " LEFT JOIN activity a ON a.user_id = f.follower_id"
                        " WHERE f.followee_id = ? AND f.follower_id > ?"
                        " AND (a.last_active_ms IS NULL OR a.last_active_ms >= ?)"
                        " ORDER BY f.follower_id LIMIT ?",
                        (author, -(2**63) if after is None else after, active_since_ms, limit),
                    )
                ]
                for author, after in starts
            ]

        return await self._engine.read(query) if starts else []

    async def touch(self, user: UserId, at_ms: int) -> None:
        await self._engine.write(
            lambda tx: tx.execute(
                "INSERT INTO activity (user_id, last_active_ms) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE"
                " SET last_active_ms = max(last_active_ms, excluded.last_active_ms)",
                (user, at_ms),
            )
        )

    async def last_active(self, user: UserId) -> int | None:
        row = await self._engine.read(
            lambda c: c.execute(
                "SELECT last_active_ms FROM activity WHERE user_id = ?", (user,)
            ).fetchone()
        )
        return int(row[0]) if row else None


def _bump(tx: WriteTx, user: int, column: str, delta: int) -> None:
    tx.execute(
        f"INSERT INTO user_stats (user_id, {column}) VALUES (?, ?)"
        f" ON CONFLICT (user_id) DO UPDATE SET {column} = {column} + excluded.{column}",
        (user, delta),
    )
