"""PostgreSQL adapter of chat's ChannelStore (``fanout.chat.ports``), schema in ``0005_chat.sql``,
and the event helper the message store shares.

It mirrors the SQLite adapter (``storage/embedded/chat.py``); where SQLite's single writer made
something safe for free, PostgreSQL gets it from a row lock:

* Every event takes its seq with ``UPDATE channels SET last_seq = last_seq + 1 … RETURNING``
  inside the transaction that stores it (:class:`Events`). The row lock holds a channel's other
  writers until commit, and a rollback returns the seq: gap-free and strictly increasing.
* Writes that lock more than one row lock them in one order — message row, then channel row,
  then member rows — so two of them never wait for each other in a cycle.
* ``mark_read`` and ``mark_delivered`` are one conditional ``UPDATE`` of the member row: its row
  lock serializes concurrent marks, each re-checked against the position the last one committed,
  so a position never moves backwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from fanout.accounts.model import UserId
from fanout.chat import frames
from fanout.chat.model import (
    Channel,
    ChannelId,
    Event,
    EventKind,
    Membership,
    Message,
    MessageId,
    UploadId,
)
from fanout.core.errors import Conflict, Invalid, NotFound
from fanout.core.log import Publish, Topics
from fanout.storage.chat_columns import CHANNEL_COLUMNS as _CHANNEL
from fanout.storage.chat_columns import MEMBER_COLUMNS as _MEMBER
from fanout.storage.postgres.engine import PgConnection, PostgresEngine
from fanout.storage.postgres.outbox import PostgresOutbox

__all__ = ["Events", "PostgresChannelStore", "message_of"]


# One statement each: the member row's lock serializes concurrent marks, and the WHERE clause,
# re-checked on the row as the previous mark committed it, keeps the position monotonic. The
# target is clamped to the channel's last seq as committed when the statement started; that
# seq's event row committed with it, so its msg_no is always there.
_MARK_READ = (
    "UPDATE channel_members m SET last_read_seq = e.seq, read_msg_no = e.msg_no"
    " FROM channels c JOIN chat_events e ON e.channel_id = c.id AND e.seq = LEAST($3, c.last_seq)"
    " WHERE c.id = $1 AND m.channel_id = $1 AND m.user_id = $2 AND m.last_read_seq < e.seq"
    " RETURNING e.seq"
)
_MARK_DELIVERED = (
    "UPDATE channel_members m SET last_delivered_seq = LEAST($3, c.last_seq) FROM channels c"
    " WHERE c.id = $1 AND m.channel_id = $1 AND m.user_id = $2"
    " AND m.last_delivered_seq < LEAST($3, c.last_seq)"
    " RETURNING m.last_delivered_seq"
)


def _channel(row: asyncpg.Record) -> Channel:
    return Channel(
        id=ChannelId(row["id"]),
        kind=row["kind"],
        name=row["name"],
        created_by=UserId(row["created_by"]),
        created_ms=row["created_ms"],
        last_seq=row["last_seq"],
        msg_count=row["msg_count"],
        member_count=row["member_count"],
    )


def _member(row: asyncpg.Record) -> Membership:
    return Membership(
        channel_id=ChannelId(row["channel_id"]),
        user_id=UserId(row["user_id"]),
        last_read_seq=row["last_read_seq"],
        read_msg_no=row["read_msg_no"],
        last_delivered_seq=row["last_delivered_seq"],
    )


def message_of(row: asyncpg.Record) -> Message:
    """The message in a row selected with :data:`~fanout.storage.chat_columns.MESSAGE_COLUMNS`."""
    return Message(
        id=MessageId(row["id"]),
        channel_id=ChannelId(row["channel_id"]),
        seq=row["seq"],
        sender_id=UserId(row["sender_id"]),
        client_msg_id=row["client_msg_id"],
        text=row["text"],
        attachments=tuple(UploadId(a) for a in row["attachments"]),
        created_ms=row["created_ms"],
        edited_ms=row["edited_ms"],
        deleted=row["deleted"],
    )


class Events:
    """Appends events: the one place a seq is taken."""

    def __init__(self, outbox: PostgresOutbox) -> None:
        self._outbox = outbox

    async def append(
        self,
        conn: PgConnection,
        channel_id: ChannelId,
        kind: EventKind,
        at_ms: int,
        *,
        message: Message | None = None,
        user_id: UserId | None = None,
    ) -> tuple[Event, int]:
        """Take the channel's next seq, store the event and queue it for ``chat.events``, in
        the transaction open on ``conn``: the event and its ``msg_no``. Locks the channel row
        until that transaction ends. ``NotFound`` if the channel does not exist."""
        row = await conn.fetchrow(
            "UPDATE channels SET last_seq = last_seq + 1, msg_count = msg_count + $2,"
            " last_event_ms = $3 WHERE id = $1 RETURNING last_seq, msg_count",
            channel_id,
            1 if kind == "message" else 0,
            at_ms,
        )
        if row is None:
            raise NotFound("channel", channel_id)
        seq, msg_no = row["last_seq"], row["msg_count"]
        event, body = frames.sequenced(channel_id, seq, kind, at_ms, message, user_id)
        await conn.execute(
            "INSERT INTO chat_events (channel_id, seq, msg_no, body) VALUES ($1, $2, $3, $4)",
            channel_id,
            seq,
            msg_no,
            body,
        )
        # No NOTIFY (wake=False): live delivery does not go through the log, and its one
        # reader, the offline notifier, can wait for the relay's next poll.
        await self._outbox.append(
            conn, [Publish(Topics.CHAT_EVENTS, str(channel_id), body)], wake=False
        )
        return event, msg_no


class PostgresChannelStore:
    """Channels, membership and receipts; contract in :class:`fanout.chat.ports.ChannelStore`.

    Choices the port leaves open, as on SQLite: ``create`` with a taken channel id raises
    ``Conflict``; ``add_member`` on a channel that does not exist raises ``NotFound``, and a
    user already a member gets None even when the channel is full; ``remove_member``,
    ``mark_read`` and ``mark_delivered`` on an unknown channel return None.
    """

    def __init__(self, engine: PostgresEngine, outbox: PostgresOutbox) -> None:
        self._engine = engine
        self._events = Events(outbox)

    async def create(
        self, channel: Channel, members: Sequence[UserId], *, dm_pair: tuple[UserId, UserId] | None
    ) -> tuple[Channel, bool]:
        unique = list(dict.fromkeys(members))

        async def create_channel(conn: PgConnection) -> tuple[Channel, bool]:
            if dm_pair is not None:
                low, high = sorted(dm_pair)
                # A concurrent create of the same pair waits here for this one's commit, then
                # claims nothing and reads the channel this one stored (a new statement sees
                # it under READ COMMITTED).
                claimed = await conn.fetchval(
                    "INSERT INTO dm_pairs (low_id, high_id, channel_id) VALUES ($1, $2, $3)"
                    " ON CONFLICT DO NOTHING RETURNING true",
                    low,
                    high,
                    channel.id,
                )
                if not claimed:
                    found = await conn.fetchrow(
                        f"SELECT {_CHANNEL} FROM channels WHERE id ="
                        " (SELECT channel_id FROM dm_pairs WHERE low_id = $1 AND high_id = $2)",
                        low,
                        high,
                    )
                    assert found is not None  # the pair and its channel commit together
                    return _channel(found), False
            try:
                row = await conn.fetchrow(
                    "INSERT INTO channels (id, kind, name, created_by, created_ms, member_count,"
                    f" last_event_ms) VALUES ($1, $2, $3, $4, $5, $6, $5) RETURNING {_CHANNEL}",
                    channel.id,
                    channel.kind,
                    channel.name,
                    channel.created_by,
                    channel.created_ms,
                    len(unique),
                )
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(f"channel id {channel.id} is taken") from exc
            await conn.execute(
                "INSERT INTO channel_members (channel_id, user_id)"
                " SELECT $1, u FROM unnest($2::bigint[]) AS u",
                channel.id,
                unique,
            )
            assert row is not None
            return _channel(row), True

        return await self._engine.transaction(create_channel)

    async def get(self, channel_id: ChannelId) -> Channel | None:
        row = await self._engine.fetchrow(
            f"SELECT {_CHANNEL} FROM channels WHERE id = $1", channel_id
        )
        return None if row is None else _channel(row)

    async def membership(self, channel_id: ChannelId, user: UserId) -> Membership | None:
        row = await self._engine.fetchrow(
            f"SELECT {_MEMBER} FROM channel_members WHERE channel_id = $1 AND user_id = $2",
            channel_id,
            user,
        )
        return None if row is None else _member(row)

    async def of_user(self, user: UserId) -> list[tuple[Channel, Membership]]:
        rows = await self._engine.fetch(
            "SELECT c.id, c.kind, c.name, c.created_by, c.created_ms, c.last_seq, c.msg_count,"
            " c.member_count, m.channel_id, m.user_id, m.last_read_seq, m.read_msg_no,"
            " m.last_delivered_seq FROM channel_members m JOIN channels c ON c.id = m.channel_id"
            " WHERE m.user_id = $1 ORDER BY c.last_event_ms DESC, c.id DESC",
            user,
        )
        return [(_channel(r), _member(r)) for r in rows]

    async def channel_ids(self, user: UserId) -> dict[ChannelId, int]:
        rows = await self._engine.fetch(
            "SELECT m.channel_id, c.last_seq FROM channel_members m"
            " JOIN channels c ON c.id = m.channel_id WHERE m.user_id = $1",
            user,
        )
        return {ChannelId(r["channel_id"]): r["last_seq"] for r in rows}

    async def members(self, channel_id: ChannelId) -> list[UserId]:
        rows = await self._engine.fetch(
            "SELECT user_id FROM channel_members WHERE channel_id = $1 ORDER BY user_id",
            channel_id,
        )
        return [UserId(r["user_id"]) for r in rows]

    async def small_peers(self, user: UserId, up_to: int) -> set[UserId]:
        rows = await self._engine.fetch(
            "SELECT DISTINCT p.user_id FROM channel_members m"
            " JOIN channels c ON c.id = m.channel_id AND c.member_count <= $2"
            " JOIN channel_members p ON p.channel_id = m.channel_id"
            " WHERE m.user_id = $1 AND p.user_id <> $1",
            user,
            up_to,
        )
        return {UserId(r["user_id"]) for r in rows}

    async def add_member(
        self, channel_id: ChannelId, user: UserId, at_ms: int, cap: int
    ) -> Event | None:
        async def add_channel_member(conn: PgConnection) -> Event | None:
            # The channel row first: concurrent adds count members one after the other.
            count = await conn.fetchval(
                "SELECT member_count FROM channels WHERE id = $1 FOR UPDATE", channel_id
            )
            if count is None:
                raise NotFound("channel", channel_id)
            added = await conn.fetchval(
                "INSERT INTO channel_members (channel_id, user_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                channel_id,
                user,
            )
            if not added:
                return None
            if count >= cap:
                raise Invalid(f"the channel is full ({cap} members)")  # rolls the insert back
            event, msg_no = await self._events.append(conn, channel_id, "join", at_ms,
                                                      user_id=user)  # fmt: skip
            await conn.execute(
                "UPDATE channels SET member_count = member_count + 1 WHERE id = $1", channel_id
            )
            # A new member starts with nothing unread.
            await conn.execute(
                "UPDATE channel_members SET last_read_seq = $3, read_msg_no = $4,"
                " last_delivered_seq = $3 WHERE channel_id = $1 AND user_id = $2",
                channel_id,
                user,
                event.seq,
                msg_no,
            )
            return event

        return await self._engine.transaction(add_channel_member)

    async def remove_member(self, channel_id: ChannelId, user: UserId, at_ms: int) -> Event | None:
        async def remove_channel_member(conn: PgConnection) -> Event | None:
            # The channel row before the member row, in the order a send locks them.
            if not await conn.fetchval(
                "SELECT true FROM channels WHERE id = $1 FOR UPDATE", channel_id
            ):
                return None
            removed = await conn.fetchval(
                "DELETE FROM channel_members WHERE channel_id = $1 AND user_id = $2 RETURNING true",
                channel_id,
                user,
            )
            if not removed:
                return None
            await conn.execute(
                "UPDATE channels SET member_count = member_count - 1 WHERE id = $1", channel_id
            )
            event, _ = await self._events.append(conn, channel_id, "leave", at_ms, user_id=user)
            return event

        return await self._engine.transaction(remove_channel_member)

    async def mark_read(self, channel_id: ChannelId, user: UserId, seq: int) -> int | None:
        moved = await self._engine.fetchval(_MARK_READ, channel_id, user, seq)
        return None if moved is None else int(moved)

    async def mark_delivered(self, channel_id: ChannelId, user: UserId, seq: int) -> int | None:
        moved = await self._engine.fetchval(_MARK_DELIVERED, channel_id, user, seq)
        return None if moved is None else int(moved)
