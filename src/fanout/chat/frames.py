"""Chat's wire format: the JSON of messages, events and every WebSocket frame (API.md "Chat").

One encoding serves the HTTP answers, the WebSocket frames and the ``chat.events`` log records,
so an event is encoded once, when it is committed, and the same bytes travel everywhere.
Client frames are decoded into tagged Structs: a frame that does not match gets an ``error``
frame naming the problem, never a closed connection.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import msgspec

from fanout.accounts.model import UserId
from fanout.chat.model import ChannelId, Event, EventKind, Message, MessageId, UploadId
from fanout.core.times import iso, parse_iso

__all__ = [
    "NO_NUL",
    "ClientFrame",
    "ClientMsgId",
    "ErrorFrame",
    "EventFrame",
    "Id",
    "MessageOut",
    "PongFrame",
    "PresenceFrame",
    "ReceiptFrame",
    "ResyncFrame",
    "SentFrame",
    "Seq",
    "Text",
    "TypingFrame",
    "decode_client",
    "decode_event",
    "encode",
    "event_frame",
    "message_out",
    "seq_slots",
    "sequenced",
    "sequenced_event",
]

MAX_ID = 2**63 - 1  # ids are signed 64-bit in every store


def _at_most(limit: int) -> str:
    """A regex of the decimal numbers from 0 to ``limit``: shorter ones, or as long and not
    greater, digit by digit."""
    digits = str(limit)
    same_length = [
        digits[:i] + f"[0-{int(d) - 1}]" + f"[0-9]{{{len(digits) - i - 1}}}"
        for i, d in enumerate(digits)
        if d != "0"
    ]
    return f"^(?:[0-9]{{1,{len(digits) - 1}}}|{'|'.join([*same_length, digits])})$"


Id = Annotated[str, msgspec.Meta(pattern=_at_most(MAX_ID))]  # over 2^63 - 1 is no id: 422
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold U+0000: refused alike on every backend
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=4000, pattern=NO_NUL)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class MessageOut(msgspec.Struct):
    id: str
    channel_id: str
    seq: int
    sender_id: str
    client_msg_id: str
    text: str
    attachments: list[str]
    created_at: str
    edited_at: str | None
    deleted: bool


class EventFrame(msgspec.Struct, tag_field="type", tag="event", omit_defaults=True):
    channel_id: str
    seq: int
    kind: EventKind
    at: str
    message: MessageOut | None = None
    user_id: str | None = None


# -- server → client (besides events) -----------------------------------------------------------


class SentFrame(msgspec.Struct, tag_field="type", tag="sent"):
    client_msg_id: str
    message: MessageOut


class ReceiptFrame(msgspec.Struct, tag_field="type", tag="receipt"):
    channel_id: str
    user_id: str
    kind: str
    seq: int


class PresenceFrame(msgspec.Struct, tag_field="type", tag="presence"):
    user_id: str
    status: str
    at: str


class TypingFrame(msgspec.Struct, tag_field="type", tag="typing"):
    channel_id: str
    user_id: str


class ResyncFrame(msgspec.Struct, tag_field="type", tag="resync"):
    channel_id: str
    after_seq: int


class PongFrame(msgspec.Struct, tag_field="type", tag="pong"):
    pass


class ErrorFrame(msgspec.Struct, tag_field="type", tag="error", omit_defaults=True):
    code: str
    message: str
    client_msg_id: str | None = None


# -- client → server ---------------------------------------------------------------------------


class Resume(msgspec.Struct, tag_field="type", tag="resume", forbid_unknown_fields=True):
    channels: dict[Id, Seq]


class Send(msgspec.Struct, tag_field="type", tag="send", forbid_unknown_fields=True):
    channel_id: Id
    client_msg_id: ClientMsgId
    text: Text
    attachment_ids: Annotated[list[Id], msgspec.Meta(max_length=10)] = []


class Delivered(msgspec.Struct, tag_field="type", tag="delivered", forbid_unknown_fields=True):
    channel_id: Id
    seq: Seq


class Read(msgspec.Struct, tag_field="type", tag="read", forbid_unknown_fields=True):
    channel_id: Id
    seq: Seq


class Typing(msgspec.Struct, tag_field="type", tag="typing", forbid_unknown_fields=True):
    channel_id: Id


class Ping(msgspec.Struct, tag_field="type", tag="ping", forbid_unknown_fields=True):
    pass


class PresenceSubscribe(
    msgspec.Struct, tag_field="type", tag="presence_subscribe", forbid_unknown_fields=True
):
    user_ids: Annotated[list[Id], msgspec.Meta(max_length=500)]


ClientFrame = Resume | Send | Delivered | Read | Typing | Ping | PresenceSubscribe
_client: msgspec.json.Decoder[ClientFrame] = msgspec.json.Decoder(ClientFrame)
_event = msgspec.json.Decoder(EventFrame)
_encoder = msgspec.json.Encoder()


def encode(value: object) -> bytes:
    return _encoder.encode(value)


def decode_client(raw: str | bytes) -> ClientFrame:
    """A client frame; ``msgspec.DecodeError`` / ``ValidationError`` when it is not one."""
    return _client.decode(raw)


def message_out(m: Message) -> MessageOut:
    return MessageOut(
        str(m.id), str(m.channel_id), m.seq, str(m.sender_id), m.client_msg_id, m.text,
        [str(a) for a in m.attachments], iso(m.created_ms),
        None if m.edited_ms is None else iso(m.edited_ms), m.deleted,
    )  # fmt: skip


def event_frame(e: Event) -> EventFrame:
    return EventFrame(
        str(e.channel_id), e.seq, e.kind, iso(e.at_ms),
        None if e.message is None else message_out(e.message),
        None if e.user_id is None else str(e.user_id),
    )  # fmt: skip


def event_bytes(e: Event) -> bytes:
    """An event's frame as JSON: what is stored, logged and sent to connections."""
    return _encoder.encode(event_frame(e))


def sequenced_event(
    channel_id: ChannelId,
    seq: int,
    kind: EventKind,
    at_ms: int,
    message: Message | None,
    user_id: UserId | None,
) -> Event:
    """The event a store has just given ``seq`` (a new message takes it as its own)."""
    if message is not None and kind == "message":
        message = replace(message, seq=seq)
    return Event(channel_id, seq, kind, at_ms, message, user_id)


def sequenced(
    channel_id: ChannelId,
    seq: int,
    kind: EventKind,
    at_ms: int,
    message: Message | None,
    user_id: UserId | None,
) -> tuple[Event, bytes]:
    """:func:`sequenced_event` and its frame's bytes."""
    event = sequenced_event(channel_id, seq, kind, at_ms, message, user_id)
    return event, event_bytes(event)


_SEQ_SLOT = 2**62 + 1  # above any seq a frame carries (Seq caps at 2**62): marks where it goes
_SEQ_KEY = b'"seq":'


def seq_slots(
    channel_id: ChannelId,
    kind: EventKind,
    at_ms: int,
    message: Message | None,
    user_id: UserId | None,
) -> list[bytes]:
    """The frame :func:`sequenced` would encode, before its seq is known, cut where the seq's
    digits go: joined with ``str(seq).encode()`` the pieces are that frame's bytes (for a
    store that takes the seq and stores the frame in one server-side statement).

    The cut is exact: ``"seq":`` followed by a number occurs in the JSON only as a key (a quote
    inside a string value is escaped, ``\"``), and the marked number no real seq reaches.
    """
    _, body = sequenced(channel_id, _SEQ_SLOT, kind, at_ms, message, user_id)
    pieces = body.split(_SEQ_KEY + str(_SEQ_SLOT).encode())
    return [piece + _SEQ_KEY for piece in pieces[:-1]] + pieces[-1:]


def decode_event(raw: bytes) -> EventFrame:
    return _event.decode(raw)


def message_of(frame: MessageOut) -> Message:
    """The model of a wire message (the reverse of :func:`message_out`)."""
    return Message(
        MessageId(int(frame.id)), ChannelId(int(frame.channel_id)), frame.seq,
        UserId(int(frame.sender_id)), frame.client_msg_id, frame.text,
        tuple(UploadId(int(a)) for a in frame.attachments), parse_iso(frame.created_at),
        None if frame.edited_at is None else parse_iso(frame.edited_at), frame.deleted,
    )  # fmt: skip


def event_of(frame: EventFrame) -> Event:
    """The model of a wire event; stores keep events as these bytes."""
    return Event(
        ChannelId(int(frame.channel_id)), frame.seq, frame.kind, parse_iso(frame.at),
        None if frame.message is None else message_of(frame.message),
        None if frame.user_id is None else UserId(int(frame.user_id)),
    )  # fmt: skip
