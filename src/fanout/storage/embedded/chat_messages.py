"""SQLite adapters of chat's MessageStore and UploadStore; see :mod:`.chat`.

Search indexing is deferred: an FTS5 insert flushes the index's pending terms at every savepoint
(each message would be a new index segment, then merges), the costliest part of a send. A send
records the message id in ``chat_search_pending``; every ``INDEX_EVERY``-th send moves all that
is pending into the index in its own transaction (one segment for the lot), and a search first
indexes what is pending, so it never misses a message that was sent before it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

from fanout.accounts.model import UserId
from fanout.chat import frames
from fanout.chat.model import ChannelId, Event, Message, MessageId, NewMessage, Upload, UploadId
from fanout.chat.search import terms
from fanout.core.errors import Conflict, Forbidden, Gone, NotFound
from fanout.storage.chat_columns import MESSAGE_COLUMNS as _MESSAGE
from fanout.storage.embedded.chat import Events, message_row
from fanout.storage.embedded.engine import SqliteEngine, WriteTx
from fanout.storage.embedded.log import SqliteLog

__all__ = ["SqliteMessageStore", "SqliteUploadStore"]

INDEX_EVERY = 64  # sends per batch moved into the search index


class _Repeat(Exception):
    """A send's (channel, sender, client_msg_id) is taken: its job is undone, and the stored
    message is the answer."""

    def __init__(self, message: Message) -> None:
        super().__init__(message.id)
        self.message = message


# The sender's read position moves to its own message; no row means no member. Checked in the
# writing transaction, so a member removed meanwhile cannot slip through.
_SENDER_READ = (
    "UPDATE channel_members SET read_msg_no = CASE WHEN last_read_seq < ?1"
    " THEN (SELECT msg_count FROM channels WHERE id = ?2) ELSE read_msg_no END,"
    " last_read_seq = max(last_read_seq, ?1) WHERE channel_id = ?2 AND user_id = ?3 RETURNING 1"
)


# CROSS JOIN fixes the join order: pending ids first, each message looked up by id. Left to
# itself, the planner scanned every message and probed the pending table for each.
# A channel's events after a seq, oldest first: a range of the (channel_id, seq) index
# (tests/contract/test_sqlite_plans.py keeps it one).
EVENTS_AFTER = "SELECT body FROM chat_events WHERE channel_id = ? AND seq > ? ORDER BY seq LIMIT ?"
INDEX_PENDING = (
    "INSERT INTO chat_search (rowid, text) SELECT m.id, m.text FROM chat_search_pending p"
    " CROSS JOIN chat_messages m ON m.id = p.message_id WHERE m.deleted = 0"
)


def _index_pending(tx: WriteTx) -> None:
    """Move every pending message into the search index (deleted ones go nowhere; edited ones
    go in with their current text)."""
    tx.execute(INDEX_PENDING)
    tx.execute("DELETE FROM chat_search_pending")


class SqliteMessageStore:
    def __init__(self, engine: SqliteEngine, log: SqliteLog) -> None:
        self._engine = engine
        self._events = Events(log)
        self._sends = 0  # since this process started: every INDEX_EVERY-th indexes

    async def send(self, message: NewMessage) -> tuple[Message, Event | None]:
        m = message

        def job(tx: WriteTx) -> tuple[Message, Event | None]:
            """Written first and checked as it goes — no channel (``NotFound``), not a member
            (``Forbidden``), a repeat (the stored message) — each undoing the job: two reads
            fewer per send than checking first, and the same answers in the same order."""
            draft = Message(m.id, m.channel_id, 0, m.sender_id, m.client_msg_id, m.text,
                            m.attachments, m.created_ms)  # fmt: skip
            event = self._events.append(tx, m.channel_id, "message", m.created_ms, message=draft)
            assert event.message is not None
            if tx.execute(_SENDER_READ, (event.seq, m.channel_id, m.sender_id)).fetchone() is None:
                raise Forbidden("you are not a member of this channel")
            try:
                tx.execute(
                    "INSERT INTO chat_messages (id, channel_id, seq, sender_id, client_msg_id,"
                    " text, attachments, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (m.id, m.channel_id, event.seq, m.sender_id, m.client_msg_id, m.text,
                     json.dumps(list(m.attachments)), m.created_ms),
                )  # fmt: skip
            except sqlite3.IntegrityError as exc:
                found = tx.execute(
                    f"SELECT {_MESSAGE} FROM chat_messages"
                    " WHERE channel_id = ? AND sender_id = ? AND client_msg_id = ?",
                    (m.channel_id, m.sender_id, m.client_msg_id),
                ).fetchone()
                if found is not None:
                    raise _Repeat(message_row(found)) from exc
                raise Conflict(f"message id {m.id} is taken") from exc
            tx.execute("INSERT INTO chat_search_pending (message_id) VALUES (?)", (m.id,))
            self._sends += 1
            if self._sends % INDEX_EVERY == 0:
                _index_pending(tx)
            if m.attachments:
                tx.executemany(
                    "INSERT OR IGNORE INTO chat_attachments (upload_id, message_id, channel_id)"
                    " VALUES (?, ?, ?)",
                    [(a, m.id, m.channel_id) for a in m.attachments],
                )
            return event.message, event

        try:
            return await self._engine.write(job)
        except _Repeat as repeat:
            return repeat.message, None

    async def get(self, message_id: MessageId) -> Message | None:
        row = await self._engine.read(
            lambda c: c.execute(
                f"SELECT {_MESSAGE} FROM chat_messages WHERE id = ?", (message_id,)
            ).fetchone()
        )
        return None if row is None else message_row(row)

    def _current(self, tx: WriteTx, message_id: MessageId) -> Message:
        row = tx.execute(
            f"SELECT {_MESSAGE} FROM chat_messages WHERE id = ?", (message_id,)
        ).fetchone()
        if row is None:
            raise NotFound("message", message_id)
        return message_row(row)

    async def edit(self, message_id: MessageId, text: str, at_ms: int) -> tuple[Message, Event]:
        def job(tx: WriteTx) -> tuple[Message, Event]:
            current = self._current(tx, message_id)
            if current.deleted:
                raise Gone(f"message {message_id} was deleted")
            edited = replace(current, text=text, edited_ms=at_ms)
            tx.execute(
                "UPDATE chat_messages SET text = ?, edited_ms = ? WHERE id = ?",
                (text, at_ms, message_id),
            )
            tx.execute("UPDATE chat_search SET text = ? WHERE rowid = ?", (text, message_id))
            return edited, self._events.append(tx, current.channel_id, "edit", at_ms,
                                               message=edited)  # fmt: skip

        return await self._engine.write(job)

    async def delete(self, message_id: MessageId, at_ms: int) -> Event | None:
        def job(tx: WriteTx) -> Event | None:
            current = self._current(tx, message_id)
            if current.deleted:
                return None
            tx.execute(
                "UPDATE chat_messages SET text = '', deleted = 1 WHERE id = ?", (message_id,)
            )
            tx.execute("DELETE FROM chat_search WHERE rowid = ?", (message_id,))
            gone = replace(current, text="", deleted=True)
            return self._events.append(tx, current.channel_id, "delete", at_ms, message=gone)

        return await self._engine.write(job)

    async def history(
        self, channel_id: ChannelId, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        below = 2**62 if before_seq is None else before_seq
        rows = await self._engine.read(
            lambda c: c.execute(
                f"SELECT {_MESSAGE} FROM chat_messages WHERE channel_id = ? AND seq < ?"
                " ORDER BY seq DESC LIMIT ?",
                (channel_id, below, limit + 1),
            ).fetchall()
        )
        return [message_row(r) for r in reversed(rows[:limit])], len(rows) > limit

    async def events(
        self, channel_id: ChannelId, after_seq: int, limit: int
    ) -> tuple[list[Event], bool]:
        rows = await self._engine.read(
            lambda c: c.execute(EVENTS_AFTER, (channel_id, after_seq, limit + 1)).fetchall()
        )
        found = [frames.event_of(frames.decode_event(r[0])) for r in rows[:limit]]
        return found, len(rows) > limit

    async def search(
        self, user: UserId, query: str, channel_id: ChannelId | None, limit: int
    ) -> list[Message]:
        words = terms(query)
        if not words:
            return []
        match = " ".join('"' + w.replace('"', '""') + '"' for w in words)
        columns = ", ".join(f"m.{c.strip()}" for c in _MESSAGE.split(","))
        sql = (
            f"SELECT {columns} FROM chat_search s JOIN chat_messages m ON m.id = s.rowid"
            " JOIN channel_members cm ON cm.channel_id = m.channel_id AND cm.user_id = ?"
            " WHERE chat_search MATCH ?"
        )
        params: list[object] = [user, match]
        if channel_id is not None:
            sql += " AND m.channel_id = ?"
            params.append(channel_id)
        params.append(limit)

        def query_(c: sqlite3.Connection) -> list[Message]:
            rows = c.execute(sql + " ORDER BY m.id DESC LIMIT ?", params).fetchall()
            return [message_row(r) for r in rows]

        await self._engine.write(_index_pending)  # everything sent so far can be found
        return await self._engine.read(query_)

    async def attachment_visible(self, upload_id: UploadId, user: UserId) -> bool:
        row = await self._engine.read(
            lambda c: c.execute(
                "SELECT 1 FROM chat_attachments a JOIN channel_members m"
                " ON m.channel_id = a.channel_id AND m.user_id = ? WHERE a.upload_id = ? LIMIT 1",
                (user, upload_id),
            ).fetchone()
        )
        return row is not None


class SqliteUploadStore:
    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def create(self, upload: Upload) -> None:
        u = upload
        try:
            await self._engine.write(
                lambda tx: tx.execute(
                    "INSERT INTO uploads (id, owner_id, size, content_type, filename, created_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (u.id, u.owner_id, u.size, u.content_type, u.filename, u.created_ms),
                )
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"upload id {u.id} is taken") from exc

    async def get(self, upload_id: UploadId) -> Upload | None:
        row = await self._engine.read(
            lambda c: c.execute(
                "SELECT id, owner_id, size, content_type, filename, created_ms FROM uploads"
                " WHERE id = ?",
                (upload_id,),
            ).fetchone()
        )
        if row is None:
            return None
        return Upload(UploadId(row[0]), UserId(row[1]), row[2], row[3], row[4], row[5])
