"""Chat's operations over HTTP and WebSocket alike: who may do what, then the stores, then live
delivery of what was committed (``Live``: the gateway hub; None in a process that serves none).

Decisions the contract leaves open: a channel starts with its members and no events (joins and
leaves later on are events); anyone may create a channel with anyone; DM membership is fixed;
members of groups and large channels may add members, members remove themselves and the
creator removes anyone; every member sees the whole history; attachments must be the sender's
own uploads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fanout.accounts.model import UserId
from fanout.chat.model import (
    Channel,
    ChannelId,
    ChannelKind,
    Event,
    Membership,
    Message,
    MessageId,
    NewMessage,
    Upload,
    UploadId,
)
from fanout.chat.ports import BlobStore, ChatStores, Live
from fanout.core.clock import Clock
from fanout.core.errors import Forbidden, Invalid, NotFound, TooLarge

__all__ = ["ChatService"]


class ChatService:
    def __init__(
        self,
        stores: ChatStores,
        blobs: BlobStore,
        clock: Clock,
        next_id: Callable[[], int],
        *,
        group_cap: int = 500,
        large_cap: int = 10_000,
        upload_max_bytes: int = 10 * 1_048_576,
    ) -> None:
        self.stores = stores
        self._blobs = blobs
        self._clock = clock
        self._next_id = next_id
        self._caps: dict[ChannelKind, int] = {"dm": 2, "group": group_cap, "large": large_cap}
        self.upload_max_bytes = upload_max_bytes
        self.live: Live | None = None

    async def _publish(self, event: Event | None) -> None:
        if event is not None and self.live is not None:
            await self.live.event(event)

    # -- channels ------------------------------------------------------------------------------

    async def create_channel(
        self, creator: UserId, kind: ChannelKind, name: str, others: Sequence[UserId]
    ) -> tuple[Channel, bool]:
        members = list(dict.fromkeys([creator, *others]))
        if kind == "dm":
            if len(others) != 1 or others[0] == creator:
                raise Invalid("a DM names exactly one other user in member_ids")
            pair = (creator, others[0])
        else:
            pair = None
            if not name.strip():
                raise Invalid("a group needs a name", details=[{"field": "name"}])
        if len(members) > self._caps[kind]:
            raise Invalid(f"a {kind} channel has at most {self._caps[kind]} members")
        now = self._clock.now_ms()
        draft = Channel(ChannelId(self._next_id()), kind, name if pair is None else "", creator,
                        now, 0, 0, len(members))  # fmt: skip
        channel, created = await self.stores.channels.create(draft, members, dm_pair=pair)
        if created and self.live is not None:
            await self.live.created(channel.id, members)
        return channel, created

    async def channels(self, user: UserId) -> list[tuple[Channel, Membership]]:
        return await self.stores.channels.of_user(user)

    async def channel(self, user: UserId, channel_id: ChannelId) -> tuple[Channel, Membership]:
        """The channel and the caller's membership: 404 unknown, 403 not a member."""
        channel = await self.stores.channels.get(channel_id)
        if channel is None:
            raise NotFound("channel", channel_id)
        membership = await self.stores.channels.membership(channel_id, user)
        if membership is None:
            raise Forbidden("you are not a member of this channel")
        return channel, membership

    async def add_member(self, actor: UserId, channel_id: ChannelId, user: UserId) -> None:
        channel, _ = await self.channel(actor, channel_id)
        if channel.kind == "dm":
            raise Forbidden("a DM's members cannot change")
        now = self._clock.now_ms()
        cap = self._caps[channel.kind]
        await self._publish(await self.stores.channels.add_member(channel_id, user, now, cap))

    async def remove_member(self, actor: UserId, channel_id: ChannelId, user: UserId) -> None:
        channel = await self.stores.channels.get(channel_id)
        if channel is None:
            raise NotFound("channel", channel_id)
        if channel.kind == "dm":
            raise Forbidden("a DM's members cannot change")
        if actor != user and actor != channel.created_by:
            raise Forbidden("only the channel's creator removes other members")
        if actor == user and await self.stores.channels.membership(channel_id, user) is None:
            raise Forbidden("you are not a member of this channel")
        now = self._clock.now_ms()
        await self._publish(await self.stores.channels.remove_member(channel_id, user, now))

    # -- messages ------------------------------------------------------------------------------

    async def send(
        self,
        sender: UserId,
        channel_id: ChannelId,
        client_msg_id: str,
        text: str,
        attachments: Sequence[UploadId] = (),
    ) -> tuple[Message, bool]:
        """The message and whether it is new (False: a retry of a stored one). Membership is
        checked by the store, in the transaction that writes (no reads before it)."""
        unique = tuple(dict.fromkeys(attachments))
        for upload_id in unique:
            upload = await self.stores.uploads.get(upload_id)
            if upload is None or upload.owner_id != sender:
                raise Invalid(f"upload {upload_id} is not one of yours",
                              details=[{"field": "attachment_ids"}])  # fmt: skip
        draft = NewMessage(MessageId(self._next_id()), channel_id, sender, client_msg_id, text,
                           unique, self._clock.now_ms())  # fmt: skip
        message, event = await self.stores.messages.send(draft)
        await self._publish(event)
        return message, event is not None

    async def _own(self, user: UserId, channel_id: ChannelId, message_id: MessageId) -> Message:
        await self.channel(user, channel_id)
        message = await self.stores.messages.get(message_id)
        if message is None or message.channel_id != channel_id:
            raise NotFound("message", message_id)
        if message.sender_id != user:
            raise Forbidden("only the sender changes a message")
        return message

    async def edit(
        self, user: UserId, channel_id: ChannelId, message_id: MessageId, text: str
    ) -> Message:
        await self._own(user, channel_id, message_id)
        edited, event = await self.stores.messages.edit(message_id, text, self._clock.now_ms())
        await self._publish(event)
        return edited

    async def delete(self, user: UserId, channel_id: ChannelId, message_id: MessageId) -> None:
        await self._own(user, channel_id, message_id)
        await self._publish(await self.stores.messages.delete(message_id, self._clock.now_ms()))

    async def history(
        self, user: UserId, channel_id: ChannelId, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        await self.channel(user, channel_id)
        return await self.stores.messages.history(channel_id, before_seq, limit)

    async def events(
        self, user: UserId, channel_id: ChannelId, after_seq: int, limit: int
    ) -> tuple[list[Event], bool]:
        await self.channel(user, channel_id)
        return await self.stores.messages.events(channel_id, after_seq, limit)

    async def search(
        self, user: UserId, query: str, channel_id: ChannelId | None, limit: int
    ) -> list[Message]:
        if channel_id is not None:
            await self.channel(user, channel_id)
        return await self.stores.messages.search(user, query, channel_id, limit)

    # -- receipts and presence -----------------------------------------------------------------

    async def mark(self, user: UserId, channel_id: ChannelId, seq: int, kind: str) -> None:
        """Move the read or delivered position; never backwards; others hear of it."""
        channel, _ = await self.channel(user, channel_id)
        store = self.stores.channels
        mark = store.mark_read if kind == "read" else store.mark_delivered
        moved = await mark(channel_id, user, seq)
        if moved is not None and self.live is not None:
            await self.live.receipt(channel, user, kind, moved)

    async def presence(self, user: UserId, channel_id: ChannelId) -> list[UserId]:
        """The channel's online members, computed now (cheap enough on request, even large)."""
        await self.channel(user, channel_id)
        members = await self.stores.channels.members(channel_id)
        online = await self.stores.presence.online(members)
        return [m for m in members if m in online]

    # -- uploads -------------------------------------------------------------------------------

    async def upload(self, owner: UserId, data: bytes, content_type: str, filename: str) -> Upload:
        if len(data) > self.upload_max_bytes:
            raise TooLarge(f"uploads are at most {self.upload_max_bytes} bytes")
        upload = Upload(UploadId(self._next_id()), owner, len(data), content_type, filename,
                        self._clock.now_ms())  # fmt: skip
        await self._blobs.put(upload.id, data)  # bytes first: a stored upload always has them
        await self.stores.uploads.create(upload)
        return upload

    async def download(self, user: UserId, upload_id: UploadId) -> tuple[Upload, bytes]:
        upload = await self.stores.uploads.get(upload_id)
        if upload is None:
            raise NotFound("upload", upload_id)
        if upload.owner_id != user and not await self.stores.messages.attachment_visible(
            upload_id, user
        ):
            raise Forbidden("this upload is not shared with you")
        data = await self._blobs.get(upload_id)
        if data is None:
            raise NotFound("upload", upload_id)
        return upload, data
