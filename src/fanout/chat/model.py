"""The chat model (DESIGN.md §5.2).

A channel is an ordered list of *events*: every message, edit, delete, join and leave takes the
next ``seq`` of its channel — gap-free and strictly increasing, assigned in the transaction that
stores the event. Messages keep their current state (text, edited, deleted) beside the events;
an event keeps the message as it was when the event happened, so a replay shows every edit.

Unread counts are O(1): every event row carries ``msg_no``, the number of messages in the
channel up to and including it, and a member keeps ``read_msg_no`` (the ``msg_no`` at their read
position), so ``unread = channel.msg_count - member.read_msg_no`` — deleted messages included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NewType

from fanout.accounts.model import UserId

__all__ = [
    "Channel",
    "ChannelId",
    "ChannelKind",
    "Event",
    "EventKind",
    "Membership",
    "Message",
    "MessageId",
    "NewMessage",
    "Upload",
    "UploadId",
]

ChannelId = NewType("ChannelId", int)
MessageId = NewType("MessageId", int)
UploadId = NewType("UploadId", int)
ChannelKind = Literal["dm", "group", "large"]
EventKind = Literal["message", "edit", "delete", "join", "leave"]


@dataclass(frozen=True, slots=True)
class Channel:
    id: ChannelId
    kind: ChannelKind
    name: str
    created_by: UserId
    created_ms: int
    last_seq: int
    msg_count: int
    member_count: int


@dataclass(frozen=True, slots=True)
class Membership:
    """One member's state in a channel: receipts and the unread baseline."""

    channel_id: ChannelId
    user_id: UserId
    last_read_seq: int
    read_msg_no: int
    last_delivered_seq: int


@dataclass(frozen=True, slots=True)
class Message:
    id: MessageId
    channel_id: ChannelId
    seq: int  # the seq of the event that created it
    sender_id: UserId
    client_msg_id: str
    text: str
    attachments: tuple[UploadId, ...]
    created_ms: int
    edited_ms: int | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class NewMessage:
    id: MessageId
    channel_id: ChannelId
    sender_id: UserId
    client_msg_id: str
    text: str
    attachments: tuple[UploadId, ...]
    created_ms: int


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a channel's sequence. ``message`` for message/edit/delete (as it was then),
    ``user_id`` for join/leave (who joined or left)."""

    channel_id: ChannelId
    seq: int
    kind: EventKind
    at_ms: int
    message: Message | None = None
    user_id: UserId | None = None


@dataclass(frozen=True, slots=True)
class Upload:
    id: UploadId
    owner_id: UserId
    size: int
    content_type: str
    filename: str
    created_ms: int
