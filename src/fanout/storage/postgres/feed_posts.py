"""PostgreSQL adapter of the feed's PostStore (``fanout.feed.ports``); see :mod:`.feed`."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from fanout.accounts.model import UserId
from fanout.core.errors import Conflict, NotFound
from fanout.core.log import Publish
from fanout.feed.model import Comment, Entry, NewPost, Position, Post, PostId
from fanout.storage.postgres.engine import PgConnection, PostgresEngine
from fanout.storage.postgres.outbox import PostgresOutbox

__all__ = ["BIGINT_MIN", "NEWEST", "PostgresPostStore"]

BIGINT_MIN = -(2**63)  # ``after=None``: below every real id
_BIGINT_MAX = 2**63 - 1
NEWEST = Position(_BIGINT_MAX, _BIGINT_MAX)  # ``before=None``: newer than any real position

_POST_COLUMNS = "id, author_id, text, media_urls, created_ms, like_count, comment_count, deleted"

# An author's live posts older than ($2, $3), newest first: a backward range of
# posts_live_by_author. The row comparison is the index condition, so a page reads only its rows.
_AUTHOR_PAGE = (
    "SELECT id, created_ms FROM posts"
    " WHERE author_id = {author} AND NOT deleted AND (created_ms, id) < ($2, $3)"
    " ORDER BY created_ms DESC, id DESC LIMIT $4"
)
_BY_AUTHOR = _AUTHOR_PAGE.format(author="$1")
# Several authors: one bounded range scan per author (LATERAL), then the newest ``limit`` of
# those at most ``authors * limit`` rows. ``author_id = ANY(...)`` over the same index would
# have to sort every older post of every author before applying the limit.
_BY_AUTHORS = (
    "SELECT p.id, p.created_ms FROM unnest($1::bigint[]) AS a(author_id)"
    f" CROSS JOIN LATERAL ({_AUTHOR_PAGE.format(author='a.author_id')}) AS p"
    " ORDER BY p.created_ms DESC, p.id DESC LIMIT $4"
)


def _post(row: asyncpg.Record) -> Post:
    return Post(
        id=PostId(row["id"]),
        author_id=UserId(row["author_id"]),
        text=row["text"],
        media_urls=tuple(row["media_urls"]),
        created_ms=row["created_ms"],
        like_count=row["like_count"],
        comment_count=row["comment_count"],
        deleted=row["deleted"],
    )


def _entries(rows: Sequence[asyncpg.Record]) -> list[Entry]:
    return [Entry(PostId(row["id"]), row["created_ms"]) for row in rows]


async def _raise_affinity(conn: PgConnection, viewer: UserId, author: UserId) -> None:
    await conn.execute(
        "INSERT INTO affinity (viewer_id, author_id, score) VALUES ($1, $2, 1)"
        " ON CONFLICT (viewer_id, author_id) DO UPDATE SET score = affinity.score + 1",
        viewer,
        author,
    )


class PostgresPostStore:
    """Posts, likes, comments and affinity; contract in :class:`fanout.feed.ports.PostStore`.

    Choices the port leaves open: ``create`` with a taken id raises ``Conflict``; ``like`` and
    ``add_comment`` on a post that does not exist raise ``NotFound`` (the affinity needs the
    post's author), on a deleted post they are accepted; ``add_comment`` with a taken comment
    id raises ``Conflict``. A like or comment by the post's own author raises its own affinity
    like any other (the reader decides what self-affinity means).
    """

    def __init__(self, engine: PostgresEngine, outbox: PostgresOutbox) -> None:
        self._engine = engine
        self._outbox = outbox

    async def create(
        self, post: NewPost, events: Sequence[Publish], *, unpushed: bool = False
    ) -> Post:
        async def create_post(conn: PgConnection) -> None:
            try:
                await conn.execute(
                    "INSERT INTO posts (id, author_id, text, media_urls, created_ms)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    post.id,
                    post.author_id,
                    post.text,
                    list(post.media_urls),
                    post.created_ms,
                )
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(f"post id {post.id} is taken") from exc
            if unpushed:
                # DO NOTHING, not an update: once a pull source, always one, and a busy
                # pull-tier author's posts do not all queue on one row lock.
                await conn.execute(
                    "INSERT INTO pull_authors (author_id, since_ms) VALUES ($1, $2)"
                    " ON CONFLICT (author_id) DO NOTHING",
                    post.author_id,
                    post.created_ms,
                )
            await self._outbox.append(conn, events)

        await self._engine.transaction(create_post)
        return Post(post.id, post.author_id, post.text, post.media_urls, post.created_ms, 0, 0)

    async def get_many(self, ids: Sequence[PostId]) -> dict[PostId, Post]:
        if not ids:
            return {}
        rows = await self._engine.fetch(
            f"SELECT {_POST_COLUMNS} FROM posts WHERE id = ANY($1::bigint[])",
            list(dict.fromkeys(ids)),
        )
        return {PostId(row["id"]): _post(row) for row in rows}

    async def delete(self, post_id: PostId, events: Sequence[Publish]) -> bool:
        async def delete_post(conn: PgConnection) -> bool:
            deleted = await conn.fetchval(
                "UPDATE posts SET deleted = true WHERE id = $1 AND NOT deleted RETURNING true",
                post_id,
            )
            if not deleted:
                return False
            await self._outbox.append(conn, events)
            return True

        return await self._engine.transaction(delete_post)

    async def by_author(self, author: UserId, before: Position | None, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        start = before or NEWEST
        rows = await self._engine.fetch(_BY_AUTHOR, author, start.score_ms, start.post_id, limit)
        return _entries(rows)

    async def by_authors(
        self, authors: Sequence[UserId], before: Position | None, limit: int
    ) -> list[Entry]:
        if not authors or limit <= 0:
            return []
        start = before or NEWEST
        rows = await self._engine.fetch(
            _BY_AUTHORS, list(set(authors)), start.score_ms, start.post_id, limit
        )
        return _entries(rows)

    async def like(self, user: UserId, post_id: PostId, events: Sequence[Publish]) -> bool:
        async def like_post(conn: PgConnection) -> bool:
            # The primary key decides: a concurrent duplicate waits for this insert's commit,
            # then does nothing.
            inserted = await conn.fetchval(
                "INSERT INTO likes (user_id, post_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                user,
                post_id,
            )
            if not inserted:
                return False
            author = await conn.fetchval(
                "UPDATE posts SET like_count = like_count + 1 WHERE id = $1 RETURNING author_id",
                post_id,
            )
            if author is None:
                raise NotFound("post", post_id)  # rolls the like back
            await _raise_affinity(conn, user, UserId(author))
            await self._outbox.append(conn, events)
            return True

        return await self._engine.transaction(like_post)

    async def unlike(self, user: UserId, post_id: PostId) -> bool:
        async def unlike_post(conn: PgConnection) -> bool:
            removed = await conn.fetchval(
                "DELETE FROM likes WHERE user_id = $1 AND post_id = $2 RETURNING true",
                user,
                post_id,
            )
            if not removed:
                return False
            await conn.execute(
                "UPDATE posts SET like_count = like_count - 1 WHERE id = $1", post_id
            )
            return True

        return await self._engine.transaction(unlike_post)

    async def liked(self, user: UserId, post_ids: Sequence[PostId]) -> set[PostId]:
        if not post_ids:
            return set()
        rows = await self._engine.fetch(
            "SELECT post_id FROM likes WHERE user_id = $1 AND post_id = ANY($2::bigint[])",
            user,
            list(set(post_ids)),
        )
        return {PostId(row["post_id"]) for row in rows}

    async def add_comment(self, comment: Comment, events: Sequence[Publish]) -> Comment:
        async def add_post_comment(conn: PgConnection) -> None:
            # Counter first: it locks the post row and names its author, or finds no post.
            author = await conn.fetchval(
                "UPDATE posts SET comment_count = comment_count + 1 WHERE id = $1"
                " RETURNING author_id",
                comment.post_id,
            )
            if author is None:
                raise NotFound("post", comment.post_id)
            try:
                await conn.execute(
                    "INSERT INTO comments (id, post_id, author_id, text, created_ms)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    comment.id,
                    comment.post_id,
                    comment.author_id,
                    comment.text,
                    comment.created_ms,
                )
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(f"comment id {comment.id} is taken") from exc
            await _raise_affinity(conn, comment.author_id, UserId(author))
            await self._outbox.append(conn, events)

        await self._engine.transaction(add_post_comment)
        return comment

    async def comments(self, post_id: PostId, after_id: int | None, limit: int) -> list[Comment]:
        if limit <= 0:
            return []
        rows = await self._engine.fetch(
            "SELECT id, post_id, author_id, text, created_ms FROM comments"
            " WHERE post_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            post_id,
            BIGINT_MIN if after_id is None else after_id,
            limit,
        )
        return [
            Comment(
                id=row["id"],
                post_id=PostId(row["post_id"]),
                author_id=UserId(row["author_id"]),
                text=row["text"],
                created_ms=row["created_ms"],
            )
            for row in rows
        ]

    async def affinity(self, viewer: UserId, authors: Sequence[UserId]) -> dict[UserId, float]:
        if not authors:
            return {}
        rows = await self._engine.fetch(
            "SELECT author_id, score FROM affinity"
            " WHERE viewer_id = $1 AND author_id = ANY($2::bigint[])",
            viewer,
            list(set(authors)),
        )
        return {UserId(row["author_id"]): row["score"] for row in rows}
