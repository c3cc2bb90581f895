"""SQLite adapters of chat's ChannelStore, MessageStore and UploadStore (``fanout.chat.ports``).

Every event is written by one write job that takes the channel's next seq (``UPDATE … RETURNING``
on the channel row, inside the job's transaction), stores the event's JSON and appends it to the
``chat.events`` log: the sequence cannot have gaps, and the log holds what was committed.
Search is an FTS5 table kept in step with the messages (rowid = message id).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import cast

from fanout.accounts.model import UserId
from fanout.chat import frames
from fanout.chat.model import (
    Channel,
    ChannelId,
    ChannelKind,
    Event,
    EventKind,
    Membership,
    Message,
    MessageId,
    UploadId,
)
from fanout.core.errors import Conflict, Invalid, NotFound
from fanout.core.log import Topics
from fanout.storage.chat_columns import CHANNEL_COLUMNS as _CHANNEL
from fanout.storage.chat_columns import MEMBER_COLUMNS as _MEMBER
from fanout.storage.embedded.engine import SqliteEngine, WriteTx
from fanout.storage.embedded.log import SqliteLog

__all__ = ["Events", "SqliteChannelStore", "message_row"]


def _channel(r: tuple[int, str, str, int, int, int, int, int]) -> Channel:
    kind = cast(ChannelKind, r[1])  # only create() writes it, from a Channel's kind
    return Channel(ChannelId(r[0]), kind, r[2], UserId(r[3]), r[4], r[5], r[6], r[7])


def _member(r: tuple[int, int, int, int, int]) -> Membership:
    return Membership(ChannelId(r[0]), UserId(r[1]), r[2], r[3], r[4])


def message_row(r: tuple[int, int, int, int, str, str, str, int, int | None, int]) -> Message:
    return Message(
        MessageId(r[0]), ChannelId(r[1]), r[2], UserId(r[3]), r[4], r[5],
        tuple(UploadId(a) for a in json.loads(r[6])), r[7], r[8], bool(r[9]),
    )  # fmt: skip


class Events:
    """Appends events: the one place a seq is taken."""

    def __init__(self, log: SqliteLog) -> None:
        self._log = log

    def append(
        self,
        tx: WriteTx,
        channel_id: ChannelId,
        kind: EventKind,
        at_ms: int,
        *,
        message: Message | None = None,
        user_id: UserId | None = None,
    ) -> Event:
        row = tx.execute(
            "UPDATE channels SET last_seq = last_seq + 1, msg_count = msg_count + ?,"
            " last_event_ms = ? WHERE id = ? RETURNING last_seq, msg_count",
            (1 if kind == "message" else 0, at_ms, channel_id),
        ).fetchone()
        if row is None:
            raise NotFound("channel", channel_id)
        seq, msg_no = row
        event, body = frames.sequenced(channel_id, seq, kind, at_ms, message, user_id)
        tx.execute(
            "INSERT INTO chat_events (channel_id, seq, msg_no, body) VALUES (?, ?, ?, ?)",
            (channel_id, seq, msg_no, body),
        )
        self._log.append(tx, Topics.CHAT_EVENTS, str(channel_id), body)
        return event


def _mark(tx: WriteTx, channel_id: ChannelId, user: UserId, seq: int, read: bool) -> int | None:
    row = tx.execute("SELECT last_seq FROM channels WHERE id = ?", (channel_id,)).fetchone()
    if row is None:
        return None
    seq = min(seq, row[0])
    if seq <= 0:
        return None
    if read:
        msg_no = tx.execute(
            "SELECT msg_no FROM chat_events WHERE channel_id = ? AND seq = ?", (channel_id, seq)
        ).fetchone()[0]
        moved = tx.execute(
            "UPDATE channel_members SET last_read_seq = ?, read_msg_no = ?"
            " WHERE channel_id = ? AND user_id = ? AND last_read_seq < ?",
            (seq, msg_no, channel_id, user, seq),
        ).rowcount
    else:
        moved = tx.execute(
            "UPDATE channel_members SET last_delivered_seq = ?"
            " WHERE channel_id = ? AND user_id = ? AND last_delivered_seq < ?",
            (seq, channel_id, user, seq),
        ).rowcount
    return seq if moved else None


class SqliteChannelStore:
    def __init__(self, engine: SqliteEngine, log: SqliteLog) -> None:
        self._engine = engine
        self._events = Events(log)

    async def create(
        self, channel: Channel, members: Sequence[UserId], *, dm_pair: tuple[UserId, UserId] | None
    ) -> tuple[Channel, bool]:
        unique = list(dict.fromkeys(members))

        def job(tx: WriteTx) -> tuple[Channel, bool]:
            if dm_pair is not None:
                low, high = sorted(dm_pair)
                found = tx.execute(
                    f"SELECT {_CHANNEL} FROM channels WHERE id ="
                    " (SELECT channel_id FROM dm_pairs WHERE low_id = ? AND high_id = ?)",
                    (low, high),
                ).fetchone()
                if found is not None:
                    return _channel(found), False
                tx.execute(
                    "INSERT INTO dm_pairs (low_id, high_id, channel_id) VALUES (?, ?, ?)",
                    (low, high, channel.id),
                )
            try:
                tx.execute(
                    "INSERT INTO channels (id, kind, name, created_by, created_ms, member_count,"
                    " last_event_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (channel.id, channel.kind, channel.name, channel.created_by,
                     channel.created_ms, len(unique), channel.created_ms),
                )  # fmt: skip
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"channel id {channel.id} is taken") from exc
            tx.executemany(
                "INSERT INTO channel_members (channel_id, user_id) VALUES (?, ?)",
                [(channel.id, u) for u in unique],
            )
            row = tx.execute(f"SELECT {_CHANNEL} FROM channels WHERE id = ?", (channel.id,))
            return _channel(row.fetchone()), True

        return await self._engine.write(job)

    async def get(self, channel_id: ChannelId) -> Channel | None:
        row = await self._engine.read(
            lambda c: c.execute(
                f"SELECT {_CHANNEL} FROM channels WHERE id = ?", (channel_id,)
            ).fetchone()
        )
        return None if row is None else _channel(row)

    async def membership(self, channel_id: ChannelId, user: UserId) -> Membership | None:
        row = await self._engine.read(
            lambda c: c.execute(
                f"SELECT {_MEMBER} FROM channel_members WHERE channel_id = ? AND user_id = ?",
                (channel_id, user),
            ).fetchone()
        )
        return None if row is None else _member(row)

    async def of_user(self, user: UserId) -> list[tuple[Channel, Membership]]:
        columns = ", ".join(f"c.{c.strip()}" for c in _CHANNEL.split(","))
        members = ", ".join(f"m.{c.strip()}" for c in _MEMBER.split(","))
        rows = await self._engine.read(
            lambda c: c.execute(
                f"SELECT {columns}, {members} FROM channel_members m"
                " JOIN channels c ON c.id = m.channel_id WHERE m.user_id = ?"
                " ORDER BY c.last_event_ms DESC, c.id DESC",
                (user,),
            ).fetchall()
        )
        return [(_channel(r[:8]), _member(r[8:])) for r in rows]

    async def channel_ids(self, user: UserId) -> dict[ChannelId, int]:
        rows = await self._engine.read(
            lambda c: c.execute(
                "SELECT m.channel_id, c.last_seq FROM channel_members m"
                " JOIN channels c ON c.id = m.channel_id WHERE m.user_id = ?",
                (user,),
            ).fetchall()
        )
        return {ChannelId(r[0]): r[1] for r in rows}

    async def members(self, channel_id: ChannelId) -> list[UserId]:
        rows = await self._engine.read(
            lambda c: c.execute(
                "SELECT user_id FROM channel_members WHERE channel_id = ? ORDER BY user_id",
                (channel_id,),
            ).fetchall()
        )
        return [UserId(r[0]) for r in rows]

    async def small_peers(self, user: UserId, up_to: int) -> set[UserId]:
        rows = await self._engine.read(
            lambda c: c.execute(
                "SELECT DISTINCT p.user_id FROM channel_members m"
                " JOIN channels c ON c.id = m.channel_id AND c.member_count <= ?"
                " JOIN channel_members p ON p.channel_id = m.channel_id"
                " WHERE m.user_id = ? AND p.user_id != ?",
                (up_to, user, user),
            ).fetchall()
        )
        return {UserId(r[0]) for r in rows}

    async def add_member(
        self, channel_id: ChannelId, user: UserId, at_ms: int, cap: int
    ) -> Event | None:
        def job(tx: WriteTx) -> Event | None:
            row = tx.execute(
                "SELECT member_count FROM channels WHERE id = ?", (channel_id,)
            ).fetchone()
            if row is None:
                raise NotFound("channel", channel_id)
            added = tx.execute(
                "INSERT INTO channel_members (channel_id, user_id) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                (channel_id, user),
            ).rowcount
            if not added:
                return None
            if row[0] >= cap:
                raise Invalid(f"the channel is full ({cap} members)")
            event = self._events.append(tx, channel_id, "join", at_ms, user_id=user)
            tx.execute(
                "UPDATE channels SET member_count = member_count + 1 WHERE id = ?", (channel_id,)
            )
            # A new member starts with nothing unread.
            tx.execute(
                "UPDATE channel_members SET last_read_seq = ?, read_msg_no ="
                " (SELECT msg_count FROM channels WHERE id = ?), last_delivered_seq = ?"
                " WHERE channel_id = ? AND user_id = ?",
                (event.seq, channel_id, event.seq, channel_id, user),
            )
            return event

        return await self._engine.write(job)

    async def remove_member(self, channel_id: ChannelId, user: UserId, at_ms: int) -> Event | None:
        def job(tx: WriteTx) -> Event | None:
            removed = tx.execute(
                "DELETE FROM channel_members WHERE channel_id = ? AND user_id = ?",
                (channel_id, user),
            ).rowcount
            if not removed:
                return None
            tx.execute(
                "UPDATE channels SET member_count = member_count - 1 WHERE id = ?", (channel_id,)
            )
            return self._events.append(tx, channel_id, "leave", at_ms, user_id=user)

        return await self._engine.write(job)

    async def mark_read(self, channel_id: ChannelId, user: UserId, seq: int) -> int | None:
        return await self._engine.write(lambda tx: _mark(tx, channel_id, user, seq, True))

    async def mark_delivered(self, channel_id: ChannelId, user: UserId, seq: int) -> int | None:
        return await self._engine.write(lambda tx: _mark(tx, channel_id, user, seq, False))
