"""Chat routes (API.md "Chat"); the WebSocket endpoint is in ``api/ws.py``.

``member_ids`` lists every member of DMs and groups; a large channel's list would be up to
10 000 ids on every answer, so for those it is empty and ``member_count`` (an extension) counts.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

import msgspec
from starlette.responses import Response

from fanout.accounts.model import UserId
from fanout.api import wire
from fanout.api.routing import Context, Operation
from fanout.api.wire import Limit
from fanout.chat.frames import (
    NO_NUL,
    ClientMsgId,
    EventFrame,
    Id,
    MessageOut,
    Seq,
    Text,
    event_frame,
    message_out,
)
from fanout.chat.model import Channel, ChannelId, Membership, MessageId, UploadId
from fanout.core.errors import Invalid

__all__ = ["OPERATIONS"]

Name = Annotated[str, msgspec.Meta(max_length=100, pattern=NO_NUL)]


class CreateChannel(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["dm", "group", "large"]
    member_ids: Annotated[list[Id], msgspec.Meta(max_length=10_000)]
    name: Name = ""


class ChannelOut(msgspec.Struct):
    id: str
    kind: str
    name: str
    member_ids: list[str]
    created_at: str
    last_seq: int
    last_read_seq: int
    unread: int
    member_count: int


class ChannelList(msgspec.Struct):
    items: list[ChannelOut]


class SendMessage(msgspec.Struct, forbid_unknown_fields=True):
    client_msg_id: ClientMsgId
    text: Text
    attachment_ids: Annotated[list[Id], msgspec.Meta(max_length=10)] = []


class EditMessage(msgspec.Struct, forbid_unknown_fields=True):
    text: Text


class MarkRead(msgspec.Struct, forbid_unknown_fields=True):
    seq: Seq


class HistoryQuery(msgspec.Struct, forbid_unknown_fields=True):
    before_seq: Seq | None = None
    limit: Limit = 20


class EventsQuery(msgspec.Struct, forbid_unknown_fields=True):
    after_seq: Seq = 0
    limit: Limit = 20


class SearchQuery(msgspec.Struct, forbid_unknown_fields=True):
    q: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    channel_id: Id | None = None
    limit: Limit = 20


class MessageList(msgspec.Struct):
    items: list[MessageOut]
    has_more: bool


class SearchResults(msgspec.Struct):
    items: list[MessageOut]


class EventList(msgspec.Struct):
    items: list[EventFrame]
    has_more: bool


class Presence(msgspec.Struct):
    online: list[str]


class UploadQuery(msgspec.Struct, forbid_unknown_fields=True):
    filename: Annotated[str, msgspec.Meta(max_length=255, pattern=NO_NUL)] = ""


class UploadOut(msgspec.Struct):
    id: str
    url: str
    size: int
    content_type: str


async def _channel_out(ctx: Context, channel: Channel, membership: Membership) -> ChannelOut:
    members = []
    if channel.kind != "large":
        members = [str(m) for m in await ctx.platform.chat.stores.channels.members(channel.id)]
    return ChannelOut(
        str(channel.id), channel.kind, channel.name, members, wire.iso(channel.created_ms),
        channel.last_seq, membership.last_read_seq, channel.msg_count - membership.read_msg_no,
        channel.member_count,
    )  # fmt: skip


def _channel_id(ctx: Context) -> ChannelId:
    return ChannelId(ctx.path_id("id", "channel"))


async def create_channel(ctx: Context, body: CreateChannel) -> Response:
    others = [UserId(int(m)) for m in body.member_ids]
    known = await ctx.platform.accounts.get_many(others)
    unknown = [str(o) for o in others if o not in known]
    if unknown:
        raise Invalid("unknown users in member_ids", details=[{"field": "member_ids",
                                                               "unknown": unknown}])  # fmt: skip
    chat = ctx.platform.chat
    channel, created = await chat.create_channel(ctx.user_id, body.kind, body.name, others)
    _, membership = await chat.channel(ctx.user_id, channel.id)
    out = await _channel_out(ctx, channel, membership)
    return Response(wire.encode(out), 201 if created else 200, media_type="application/json")


async def list_channels(ctx: Context) -> ChannelList:
    found = await ctx.platform.chat.channels(ctx.user_id)
    return ChannelList(list(await asyncio.gather(*(_channel_out(ctx, c, m) for c, m in found))))


async def get_channel(ctx: Context) -> ChannelOut:
    channel, membership = await ctx.platform.chat.channel(ctx.user_id, _channel_id(ctx))
    return await _channel_out(ctx, channel, membership)


async def add_member(ctx: Context) -> None:
    user = UserId(ctx.path_id("user_id", "user"))
    await ctx.platform.accounts.get(user)  # 404 for an unknown user
    await ctx.platform.chat.add_member(ctx.user_id, _channel_id(ctx), user)


async def remove_member(ctx: Context) -> None:
    user = UserId(ctx.path_id("user_id", "user"))
    await ctx.platform.chat.remove_member(ctx.user_id, _channel_id(ctx), user)


async def send_message(ctx: Context, body: SendMessage) -> Response:
    message, created = await ctx.platform.chat.send(
        ctx.user_id, _channel_id(ctx), body.client_msg_id, body.text,
        [UploadId(int(a)) for a in body.attachment_ids],
    )  # fmt: skip
    return Response(wire.encode(message_out(message)), 201 if created else 200,
                    media_type="application/json")  # fmt: skip


async def history(ctx: Context) -> MessageList:
    query = ctx.query(HistoryQuery)
    found, more = await ctx.platform.chat.history(
        ctx.user_id, _channel_id(ctx), query.before_seq, query.limit
    )
    return MessageList([message_out(m) for m in found], more)


async def events(ctx: Context) -> EventList:
    query = ctx.query(EventsQuery)
    found, more = await ctx.platform.chat.events(
        ctx.user_id, _channel_id(ctx), query.after_seq, query.limit
    )
    return EventList([event_frame(e) for e in found], more)


def _message_id(ctx: Context) -> MessageId:
    return MessageId(ctx.path_id("message_id", "message"))


async def edit_message(ctx: Context, body: EditMessage) -> MessageOut:
    chat = ctx.platform.chat
    return message_out(await chat.edit(ctx.user_id, _channel_id(ctx), _message_id(ctx), body.text))


async def delete_message(ctx: Context) -> None:
    await ctx.platform.chat.delete(ctx.user_id, _channel_id(ctx), _message_id(ctx))


async def mark_read(ctx: Context, body: MarkRead) -> None:
    await ctx.platform.chat.mark(ctx.user_id, _channel_id(ctx), body.seq, "read")


async def presence(ctx: Context) -> Presence:
    online = await ctx.platform.chat.presence(ctx.user_id, _channel_id(ctx))
    return Presence([str(u) for u in online])


async def search(ctx: Context) -> SearchResults:
    query = ctx.query(SearchQuery)
    channel = None if query.channel_id is None else ChannelId(int(query.channel_id))
    found = await ctx.platform.chat.search(ctx.user_id, query.q, channel, query.limit)
    return SearchResults([message_out(m) for m in found])


async def upload(ctx: Context) -> Response:
    query = ctx.query(UploadQuery)
    content_type = ctx.request.headers.get("content-type", "application/octet-stream")[:255]
    data = await ctx.request.body()
    made = await ctx.platform.chat.upload(ctx.user_id, data, content_type, query.filename)
    out = UploadOut(str(made.id), f"/v1/uploads/{made.id}", made.size, made.content_type)
    return Response(wire.encode(out), 201, media_type="application/json")


async def download(ctx: Context) -> Response:
    upload_id = UploadId(ctx.path_id("id", "upload"))
    found, data = await ctx.platform.chat.download(ctx.user_id, upload_id)
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
    if found.filename:
        safe = "".join(c for c in found.filename if c.isalnum() or c in "._- ")[:100]
        headers["Content-Disposition"] = f'attachment; filename="{safe}"'
    return Response(data, 200, media_type=found.content_type, headers=headers)


OPERATIONS = [
    Operation("POST", "/v1/channels", create_channel, "Create a channel (a DM that exists: 200)",
              body=CreateChannel, response=ChannelOut, status=201, tag="chat"),
    Operation("GET", "/v1/channels", list_channels, "Your channels with unread counts",
              response=ChannelList, tag="chat"),
    Operation("GET", "/v1/channels/{id}", get_channel, "A channel you belong to",
              response=ChannelOut, tag="chat"),
    Operation("PUT", "/v1/channels/{id}/members/{user_id}", add_member, "Add a member",
              tag="chat"),
    Operation("DELETE", "/v1/channels/{id}/members/{user_id}", remove_member,
              "Leave, or remove a member of a group you created", tag="chat"),
    Operation("POST", "/v1/channels/{id}/messages", send_message,
              "Send a message (idempotent on client_msg_id)", body=SendMessage,
              response=MessageOut, status=201, tag="chat"),
    Operation("GET", "/v1/channels/{id}/messages", history, "Messages below before_seq",
              query=HistoryQuery, response=MessageList, tag="chat"),
    Operation("GET", "/v1/channels/{id}/events", events, "Every event after after_seq",
              query=EventsQuery, response=EventList, tag="chat"),
    Operation("PATCH", "/v1/channels/{id}/messages/{message_id}", edit_message,
              "Edit your message", body=EditMessage, response=MessageOut, tag="chat"),
    Operation("DELETE", "/v1/channels/{id}/messages/{message_id}", delete_message,
              "Delete your message", tag="chat"),
    Operation("POST", "/v1/channels/{id}/read", mark_read, "Move your read position",
              body=MarkRead, tag="chat"),
    Operation("GET", "/v1/channels/{id}/presence", presence, "Members online now",
              response=Presence, tag="chat"),
    Operation("GET", "/v1/search/messages", search, "Search messages you can see",
              query=SearchQuery, response=SearchResults, tag="chat"),
    Operation("POST", "/v1/uploads", upload, "Upload a file (raw body)", query=UploadQuery,
              response=UploadOut, status=201, tag="chat"),
    Operation("GET", "/v1/uploads/{id}", download, "An uploaded file", tag="chat"),
]  # fmt: skip
