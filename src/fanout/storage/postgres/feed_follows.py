"""PostgreSQL adapter of the feed's FollowStore (``fanout.feed.ports``); see :mod:`.feed`."""

from __future__ import annotations

from collections.abc import Sequence

from fanout.accounts.model import UserId
from fanout.core.log import Publish
from fanout.feed.model import Follow, Position
from fanout.storage.postgres.engine import PgConnection, PostgresEngine
from fanout.storage.postgres.feed_posts import BIGINT_MIN, NEWEST
from fanout.storage.postgres.outbox import PostgresOutbox

__all__ = ["PostgresFollowStore"]


class PostgresFollowStore:
    """The follow graph, counts and activity; contract in :class:`fanout.feed.ports.FollowStore`.

    ``Position(at_ms, user_id)`` pages the follow lists: items strictly before it in
    (at_ms, user id) descending order come next.
    """

    def __init__(self, engine: PostgresEngine, outbox: PostgresOutbox) -> None:
        self._engine = engine
        self._outbox = outbox

    async def follow(
        self, follower: UserId, followee: UserId, at_ms: int, events: Sequence[Publish]
    ) -> bool:
        async def follow_user(conn: PgConnection) -> bool:
            inserted = await conn.fetchval(
                "INSERT INTO follows (followee_id, follower_id, at_ms) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING true",
                followee,
                follower,
                at_ms,
            )
            if not inserted:
                return False
            await _count_edge(conn, follower, followee, 1)
            await self._outbox.append(conn, events)
            return True

        return await self._engine.transaction(follow_user)

    async def unfollow(self, follower: UserId, followee: UserId, events: Sequence[Publish]) -> bool:
        async def unfollow_user(conn: PgConnection) -> bool:
            removed = await conn.fetchval(
                "DELETE FROM follows WHERE followee_id = $1 AND follower_id = $2 RETURNING true",
                followee,
                follower,
            )
            if not removed:
                return False
            await _count_edge(conn, follower, followee, -1)
            await self._outbox.append(conn, events)
            return True

        return await self._engine.transaction(unfollow_user)

    async def is_following(self, follower: UserId, followee: UserId) -> bool:
        found = await self._engine.fetchval(
            "SELECT true FROM follows WHERE followee_id = $1 AND follower_id = $2",
            followee,
            follower,
        )
        return bool(found)

    async def followers(self, user: UserId, before: Position | None, limit: int) -> list[Follow]:
        return await self._edges("followee_id", "follower_id", user, before, limit)

    async def following(self, user: UserId, before: Position | None, limit: int) -> list[Follow]:
        return await self._edges("follower_id", "followee_id", user, before, limit)

    async def _edges(
        self, side: str, other: str, user: UserId, before: Position | None, limit: int
    ) -> list[Follow]:
        """One side of the graph, most recent first (an index range scan on either side)."""
        if limit <= 0:
            return []
        start = before or NEWEST
        rows = await self._engine.fetch(
            f"SELECT {other} AS user_id, at_ms FROM follows"
            f" WHERE {side} = $1 AND (at_ms, {other}) < ($2, $3)"
            f" ORDER BY at_ms DESC, {other} DESC LIMIT $4",
            user,
            start.score_ms,
            start.post_id,
            limit,
        )
        return [Follow(UserId(row["user_id"]), row["at_ms"]) for row in rows]

    async def following_ids(self, user: UserId) -> set[UserId]:
        rows = await self._engine.fetch(
            "SELECT followee_id FROM follows WHERE follower_id = $1", user
        )
        return {UserId(row["followee_id"]) for row in rows}

    async def following_and_pull(self, user: UserId) -> tuple[set[UserId], set[UserId]]:
        rows = await self._engine.fetch(
            "SELECT f.followee_id, p.author_id IS NOT NULL AS pull FROM follows AS f"
            " LEFT JOIN pull_authors AS p ON p.author_id = f.followee_id"
            " WHERE f.follower_id = $1",
            user,
        )
        following = {UserId(row["followee_id"]) for row in rows}
        return following, {UserId(row["followee_id"]) for row in rows if row["pull"]}

    async def following_count(self, user: UserId) -> int:
        count = await self._engine.fetchval(
            "SELECT following FROM user_stats WHERE user_id = $1", user
        )
        return int(count or 0)

    async def follower_count(self, user: UserId) -> int:
        count = await self._engine.fetchval(
            "SELECT followers FROM user_stats WHERE user_id = $1", user
        )
        return int(count or 0)

    async def fanout_targets(
        self, author: UserId, after: UserId | None, limit: int, active_since_ms: int
    ) -> list[UserId]:
        (targets,) = await self.fanout_targets_many([(author, after)], limit, active_since_ms)
        return targets

    async def fanout_targets_many(
        self, starts: Sequence[tuple[UserId, UserId | None]], limit: int, active_since_ms: int
    ) -> list[list[UserId]]:
        if limit <= 0 or not starts:
            return [[] for _ in starts]
        # Per start, a forward range of the primary key (followee_id, follower_id) that the
        # LIMIT stops, answered as one array (decoded in C, no row objects). Activity is a
        # correlated scalar subquery on purpose: that is always one primary-key probe per
        # follower. As a LEFT JOIN the planner may pick a merge join, which reads activity's
        # index from its first row up to the chunk's last follower (measured: 25k rows read
        # for a 500-follower chunk), and that grows with ``after``.
        rows = await self._engine.fetch(
            "SELECT t.ids FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY"
            "  AS s(author, after, i)"
            " CROSS JOIN LATERAL (SELECT coalesce(array_agg(x.follower_id"
            "  ORDER BY x.follower_id), '{}') AS ids FROM ("
            "  SELECT f.follower_id FROM follows AS f"
            "  WHERE f.followee_id = s.author AND f.follower_id > s.after"
            "  AND coalesce("  # never seen counts as active
            "   (SELECT a.last_active_ms FROM activity AS a WHERE a.user_id = f.follower_id), $3"
            "  ) >= $3"
            "  ORDER BY f.follower_id LIMIT $4) AS x) AS t"
            " ORDER BY s.i",
            [author for author, _ in starts],
            [BIGINT_MIN if after is None else after for _, after in starts],
            active_since_ms,
            limit,
        )
        return [row["ids"] for row in rows]

    async def touch(self, user: UserId, at_ms: int) -> None:
        # The WHERE makes an older or equal time a no-op: no row version written, no bloat.
        await self._engine.execute(
            "INSERT INTO activity (user_id, last_active_ms) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET last_active_ms = EXCLUDED.last_active_ms"
            " WHERE activity.last_active_ms < EXCLUDED.last_active_ms",
            user,
            at_ms,
        )

    async def last_active(self, user: UserId) -> int | None:
        at_ms: int | None = await self._engine.fetchval(
            "SELECT last_active_ms FROM activity WHERE user_id = $1", user
        )
        return at_ms


async def _count_edge(conn: PgConnection, follower: UserId, followee: UserId, delta: int) -> None:
    """Add ``delta`` to ``followee``'s followers and ``follower``'s following, in one statement.

    Rows are upserted in user id order, so two transactions counting the same two users (A
    follows B while B follows A) lock them in the same order and cannot deadlock.
    """
    deltas: dict[UserId, tuple[int, int]] = {followee: (delta, 0)}
    followers, following = deltas.get(follower, (0, 0))
    deltas[follower] = (followers, following + delta)  # one row if someone follows themselves
    users = sorted(deltas)
    await conn.execute(
        "INSERT INTO user_stats (user_id, followers, following)"
        " SELECT user_id, followers, following"
        " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS d(user_id, followers, following)"
        " ORDER BY user_id"
        " ON CONFLICT (user_id) DO UPDATE SET"
        " followers = user_stats.followers + EXCLUDED.followers,"
        " following = user_stats.following + EXCLUDED.following",
        users,
        [deltas[u][0] for u in users],
        [deltas[u][1] for u in users],
    )
