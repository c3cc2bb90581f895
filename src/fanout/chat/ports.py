"""Ports of the chat product.

Adapters: ``storage/embedded/chat*.py`` (SQLite), ``storage/postgres/chat*.py``,
``storage/redis/presence.py`` and ``storage/redis/routing.py``; their contract:
``tests/contract/test_chat_*.py``.

Every write that creates an event assigns the channel's next ``seq`` in the same transaction
and appends the encoded event to ``chat.events`` (keyed by channel id) with it, so the sequence
has no gaps and the log holds every event exactly as committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from fanout.accounts.model import UserId
from fanout.chat.model import (
    Channel,
    ChannelId,
    Event,
    Membership,
    Message,
    MessageId,
    NewMessage,
    Upload,
    UploadId,
)

__all__ = [
    "BlobStore",
    "ChannelStore",
    "ChatStores",
    "Live",
    "MessageStore",
    "PresenceStore",
    "Router",
    "UploadStore",
]


class ChannelStore(Protocol):
    """Channels, membership and each member's receipts."""

    async def create(
        self, channel: Channel, members: Sequence[UserId], *, dm_pair: tuple[UserId, UserId] | None
    ) -> tuple[Channel, bool]:
        """Store a new channel with its first members (no events: ``last_seq`` stays 0).
        With ``dm_pair`` the channel is the pair's DM: if the pair has one already, that one is
        returned with ``False`` and nothing is stored."""
        ...

    async def get(self, channel_id: ChannelId) -> Channel | None: ...

    async def membership(self, channel_id: ChannelId, user: UserId) -> Membership | None: ...

    async def of_user(self, user: UserId) -> list[tuple[Channel, Membership]]:
        """The user's channels with their membership, newest activity first."""
        ...

    async def channel_ids(self, user: UserId) -> dict[ChannelId, int]:
        """The user's channels, each with its last seq (where live delivery takes over)."""
        ...

    async def members(self, channel_id: ChannelId) -> list[UserId]: ...

    async def small_peers(self, user: UserId, up_to: int) -> set[UserId]:
        """Everyone sharing a channel of at most ``up_to`` members with ``user`` (not the user)."""
        ...

    async def add_member(
        self, channel_id: ChannelId, user: UserId, at_ms: int, cap: int
    ) -> Event | None:
        """Add a member: the ``join`` event, or None if already one. ``Invalid`` over ``cap``."""
        ...

    async def remove_member(self, channel_id: ChannelId, user: UserId, at_ms: int) -> Event | None:
        """Remove a member: the ``leave`` event, or None if not one."""
        ...

    async def mark_read(self, channel_id: ChannelId, user: UserId, seq: int) -> int | None:
        """Move the user's read position up to ``seq`` (clamped to the channel's last seq): the
        new position, or None if it did not move (it never moves backwards)."""
        ...

    async def mark_delivered(self, channel_id: ChannelId, user: UserId, seq: int) -> int | None:
        """Like :meth:`mark_read`, for the delivered position."""
        ...


class MessageStore(Protocol):
    async def send(self, message: NewMessage) -> tuple[Message, Event | None]:
        """Store a message and its ``message`` event, and move the sender's read position to
        it. Idempotent on (channel, sender, client_msg_id): a repeat returns the stored message
        and None, storing nothing. ``Forbidden`` if the sender is not a member and ``NotFound``
        if the channel does not exist — checked in the same transaction."""
        ...

    async def get(self, message_id: MessageId) -> Message | None: ...

    async def edit(self, message_id: MessageId, text: str, at_ms: int) -> tuple[Message, Event]:
        """Replace the text: the ``edit`` event. ``NotFound`` for an unknown message,
        ``Gone`` for a deleted one."""
        ...

    async def delete(self, message_id: MessageId, at_ms: int) -> Event | None:
        """Mark deleted and clear the text: the ``delete`` event, None if already deleted."""
        ...

    async def history(
        self, channel_id: ChannelId, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        """The latest ``limit`` messages below ``before_seq``, ascending seq, and has_more."""
        ...

    async def events(
        self, channel_id: ChannelId, after_seq: int, limit: int
    ) -> tuple[list[Event], bool]:
        """The events after ``after_seq``, ascending seq (at most ``limit``), and has_more."""
        ...

    async def search(
        self, user: UserId, query: str, channel_id: ChannelId | None, limit: int
    ) -> list[Message]:
        """Live messages matching every word of ``query`` in channels ``user`` belongs to,
        newest first."""
        ...

    async def attachment_visible(self, upload_id: UploadId, user: UserId) -> bool:
        """Whether ``user`` is a member of a channel where ``upload_id`` is attached."""
        ...


class UploadStore(Protocol):
    async def create(self, upload: Upload) -> None: ...

    async def get(self, upload_id: UploadId) -> Upload | None: ...


class PresenceStore(Protocol):
    """Who is online: each node (gateway process) holding a user's connections refreshes a
    lease; the user is online while any lease lives."""

    async def touch(self, user: UserId, node: str, ttl_ms: int) -> bool:
        """Refresh ``node``'s lease on ``user``: True if the user was offline before."""
        ...

    async def leave(self, user: UserId, node: str) -> bool:
        """Drop ``node``'s lease: True if the user is now offline."""
        ...

    async def online(self, users: Sequence[UserId]) -> set[UserId]: ...

    async def sweep(self) -> list[UserId]:
        """Users whose every lease expired (a node died): each is returned once, to one caller."""
        ...


class Router(Protocol):
    """Carries encoded frames between gateway processes. Topics are strings: ``c<id>`` for a
    channel's events, ``u<id>`` for one user, ``p<id>`` for one user's presence. A process
    receives what is published to the topics it subscribed to (its own publishes included)."""

    async def start(self, handler: Callable[[str, bytes], None]) -> None: ...

    async def publish(self, topic: str, payload: bytes) -> None: ...

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None: ...

    async def subscribe(self, topics: Sequence[str]) -> None: ...

    async def unsubscribe(self, topics: Sequence[str]) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ChatStores:
    channels: ChannelStore
    messages: MessageStore
    uploads: UploadStore
    presence: PresenceStore


class BlobStore(Protocol):
    """Upload bytes by id (claim check: messages carry the id, never the bytes)."""

    async def put(self, upload_id: UploadId, data: bytes) -> None: ...

    async def get(self, upload_id: UploadId) -> bytes | None: ...


class Live(Protocol):
    """Delivers committed events and receipts to online users (the gateway hub)."""

    async def event(self, event: Event) -> None: ...

    async def receipt(self, channel: Channel, user: UserId, kind: str, seq: int) -> None: ...

    async def created(self, channel_id: ChannelId, members: Sequence[UserId]) -> None:
        """A channel was created with these members (it has no join events to say so)."""
        ...
