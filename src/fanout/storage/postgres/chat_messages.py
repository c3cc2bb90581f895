"""PostgreSQL adapters of chat's MessageStore and UploadStore; see :mod:`.chat`.

* **Idempotent send, in one round trip** (joined with the sends made meanwhile:
  :mod:`.chat_sends`). ``chat_send`` (migration ``0006_chat_send.sql``) runs the whole send
  in the server: it locks the channel row, checks membership and looks for
  a stored message with the same (channel, sender, client_msg_id) under that lock — a repeat,
  earlier or concurrent and committed first, is found and nothing is written — then takes the
  seq and stores the event, its outbox record, the message and the sender's read position. The
  event's JSON is sent cut where its seq goes (:func:`fanout.chat.frames.seq_slots`), since the
  seq is known only inside. One message, one event, whatever the timing.
* **Search.** ``chat_messages.search`` is a ``tsvector`` (GIN index, ``'simple'`` configuration)
  of the message's words as :func:`_folded` writes them — letters and digits, lower-cased and
  without diacritics in Python — so matching is case- and accent-insensitive as on SQLite's FTS5
  ``unicode61 remove_diacritics 2`` (PostgreSQL itself lower-cases only ASCII under the C
  locale). A query is the words of :func:`fanout.chat.search.terms`, folded the same way, one
  ``plainto_tsquery`` per term joined with ``&&``; the terms travel as parameters and hold only
  letters, digits and spaces, so no user text is ever parsed as tsquery syntax.
"""

from __future__ import annotations

import re
import unicodedata

import asyncpg

from fanout.accounts.model import UserId
from fanout.chat import frames
from fanout.chat.model import ChannelId, Event, Message, MessageId, NewMessage, Upload, UploadId
from fanout.chat.search import terms
from fanout.core.errors import Conflict, Forbidden, Gone, NotFound
from fanout.storage.chat_columns import MESSAGE_COLUMNS as _MESSAGE
from fanout.storage.postgres.chat import Events, message_of
from fanout.storage.postgres.chat_sends import Send, Sends
from fanout.storage.postgres.engine import PgConnection, PostgresEngine
from fanout.storage.postgres.outbox import PostgresOutbox

__all__ = ["PostgresMessageStore", "PostgresUploadStore"]

_NEWEST_SEQ = 2**62  # ``before_seq=None``: above any seq (frames cap a seq at 2**62)
# Letters and digits: what fanout.chat.search calls a word, less the underscore, which neither
# FTS5 nor PostgreSQL's parser takes as part of a word ("foo_bar" is "foo" and "bar").
_WORD = re.compile(r"[^\W_]+")


def _folded(text: str) -> str:
    """The words of ``text`` as indexed and searched: lower case, diacritics removed."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_WORD.findall(bare))


class PostgresMessageStore:
    """Messages, the event history and search; contract in
    :class:`fanout.chat.ports.MessageStore`.

    Choices the port leaves open, as on SQLite: ``send`` with a taken message id (and a new
    client_msg_id) raises ``Conflict``; a query without words finds nothing.
    """

    def __init__(self, engine: PostgresEngine, outbox: PostgresOutbox) -> None:
        self._engine = engine
        self._events = Events(outbox)
        self._sends = Sends(engine)

    async def send(self, message: NewMessage) -> tuple[Message, Event | None]:
        m = message
        draft = Message(m.id, m.channel_id, 0, m.sender_id, m.client_msg_id, m.text,
                        m.attachments, m.created_ms)  # fmt: skip
        slots = frames.seq_slots(m.channel_id, "message", m.created_ms, draft, None)
        send = Send(m, _folded(m.text), slots)
        await self._sends.make(send)
        outcome = send.outcome
        if outcome == "sent":
            event = frames.sequenced_event(m.channel_id, send.seq, "message", m.created_ms,
                                           draft, None)  # fmt: skip
            assert event.message is not None
            return event.message, event
        if outcome == "no_channel":
            raise NotFound("channel", m.channel_id)
        if outcome == "not_member":
            raise Forbidden("you are not a member of this channel")
        row = await self._engine.fetchrow(
            f"SELECT {_MESSAGE} FROM chat_messages"
            " WHERE channel_id = $1 AND sender_id = $2 AND client_msg_id = $3",
            m.channel_id,
            m.sender_id,
            m.client_msg_id,
        )
        assert row is not None  # messages are never removed, only marked deleted
        return message_of(row), None

    async def get(self, message_id: MessageId) -> Message | None:
        row = await self._engine.fetchrow(
            f"SELECT {_MESSAGE} FROM chat_messages WHERE id = $1", message_id
        )
        return None if row is None else message_of(row)

    async def _missing(self, conn: PgConnection, message_id: MessageId) -> NotFound | None:
        """After a change matched no live message: NotFound, or None if it is deleted."""
        found = await conn.fetchval("SELECT true FROM chat_messages WHERE id = $1", message_id)
        return None if found else NotFound("message", message_id)

    async def edit(self, message_id: MessageId, text: str, at_ms: int) -> tuple[Message, Event]:
        async def edit_message(conn: PgConnection) -> tuple[Message, Event]:
            # The message row's lock, then the channel's (in Events.append): concurrent edits
            # and deletes of one message get seqs in the order they changed it.
            row = await conn.fetchrow(
                "UPDATE chat_messages SET text = $2, edited_ms = $3,"
                " search = to_tsvector('simple', $4) WHERE id = $1 AND NOT deleted"
                f" RETURNING {_MESSAGE}",
                message_id,
                text,
                at_ms,
                _folded(text),
            )
            if row is None:
                missing = await self._missing(conn, message_id)
                raise missing or Gone(f"message {message_id} was deleted")
            edited = message_of(row)
            event, _ = await self._events.append(conn, edited.channel_id, "edit", at_ms,
                                                 message=edited)  # fmt: skip
            return edited, event

        return await self._engine.transaction(edit_message)

    async def delete(self, message_id: MessageId, at_ms: int) -> Event | None:
        async def delete_message(conn: PgConnection) -> Event | None:
            row = await conn.fetchrow(
                "UPDATE chat_messages SET text = '', deleted = true, search = ''::tsvector"
                f" WHERE id = $1 AND NOT deleted RETURNING {_MESSAGE}",
                message_id,
            )
            if row is None:
                missing = await self._missing(conn, message_id)
                if missing is not None:
                    raise missing
                return None
            gone = message_of(row)
            event, _ = await self._events.append(conn, gone.channel_id, "delete", at_ms,
                                                 message=gone)  # fmt: skip
            return event

        return await self._engine.transaction(delete_message)

    async def history(
        self, channel_id: ChannelId, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        limit = max(limit, 0)
        rows = await self._engine.fetch(
            f"SELECT {_MESSAGE} FROM chat_messages WHERE channel_id = $1 AND seq < $2"
            " ORDER BY seq DESC LIMIT $3",
            channel_id,
            _NEWEST_SEQ if before_seq is None else before_seq,
            limit + 1,
        )
        return [message_of(r) for r in reversed(rows[:limit])], len(rows) > limit

    async def events(
        self, channel_id: ChannelId, after_seq: int, limit: int
    ) -> tuple[list[Event], bool]:
        limit = max(limit, 0)
        rows = await self._engine.fetch(
            "SELECT body FROM chat_events WHERE channel_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            channel_id,
            after_seq,
            limit + 1,
        )
        found = [frames.event_of(frames.decode_event(r["body"])) for r in rows[:limit]]
        return found, len(rows) > limit

    async def search(
        self, user: UserId, query: str, channel_id: ChannelId | None, limit: int
    ) -> list[Message]:
        words = [w for w in (_folded(t) for t in terms(query)) if w]
        if not words or limit <= 0:
            return []
        # $1 user, $2 limit, $3 channel (NULL: any), then one parameter per word.
        matches = " && ".join(f"plainto_tsquery('simple', ${n})" for n in range(4, 4 + len(words)))
        columns = ", ".join(f"m.{c.strip()}" for c in _MESSAGE.split(","))
        rows = await self._engine.fetch(
            f"SELECT {columns} FROM chat_messages m JOIN channel_members cm"
            " ON cm.channel_id = m.channel_id AND cm.user_id = $1"
            f" WHERE m.search @@ ({matches}) AND NOT m.deleted"
            " AND ($3::bigint IS NULL OR m.channel_id = $3)"
            " ORDER BY m.id DESC LIMIT $2",
            user,
            limit,
            channel_id,
            *words,
        )
        return [message_of(r) for r in rows]

    async def attachment_visible(self, upload_id: UploadId, user: UserId) -> bool:
        found = await self._engine.fetchval(
            "SELECT true FROM chat_attachments a JOIN channel_members m"
            " ON m.channel_id = a.channel_id AND m.user_id = $2 WHERE a.upload_id = $1 LIMIT 1",
            upload_id,
            user,
        )
        return bool(found)


class PostgresUploadStore:
    """Upload metadata; contract in :class:`fanout.chat.ports.UploadStore`. ``create`` with a
    taken id raises ``Conflict``."""

    def __init__(self, engine: PostgresEngine) -> None:
        self._engine = engine

    async def create(self, upload: Upload) -> None:
        u = upload
        try:
            await self._engine.execute(
                "INSERT INTO uploads (id, owner_id, size, content_type, filename, created_ms)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                u.id, u.owner_id, u.size, u.content_type, u.filename, u.created_ms,
            )  # fmt: skip
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"upload id {u.id} is taken") from exc

    async def get(self, upload_id: UploadId) -> Upload | None:
        row = await self._engine.fetchrow(
            "SELECT id, owner_id, size, content_type, filename, created_ms FROM uploads"
            " WHERE id = $1",
            upload_id,
        )
        if row is None:
            return None
        return Upload(UploadId(row["id"]), UserId(row["owner_id"]), row["size"],
                      row["content_type"], row["filename"], row["created_ms"])  # fmt: skip
