"""Members with no live connection hear of a message through ``notify.requests``.

A consumer of ``chat.events`` (role ``chat``): for each new message of a DM or group it asks
presence who of the other members is online and publishes one notification request for the rest.
Members are read once per channel and then kept up to date from the join and leave events of
the same stream (a partition is read in order), so a message costs no store read.
Large channels are skipped — their offline members catch up by pulling, and a send costs nothing
per offline member (DESIGN.md §5.2). Redelivery publishes the same ``event_id`` again, which the
notification service deduplicates.
"""

from __future__ import annotations

from collections import OrderedDict

from fanout.accounts.model import UserId
from fanout.chat.frames import decode_event
from fanout.chat.model import ChannelId, Event
from fanout.chat.ports import ChatStores
from fanout.core.consumer import Subscription
from fanout.core.events import NotifyRequest
from fanout.core.log import Log, LogRecord, Topics

__all__ = ["GROUP", "PREVIEW_CHARS", "OfflineNotifier"]

GROUP = "chat.offline"
PREVIEW_CHARS = 140


CACHED_CHANNELS = 10_000
# A partition is read again this long after a short batch. Read at once, every message was a
# read of its own (claim and acknowledgement: SQLite writes, or Redis round trips), plus empty
# reads woken by other partitions' messages: ~4 700 reads/s at 2 000 msg/s, 70 % of them empty
# (embedded, ``fanout bench chat``). An offline notice can wait this long.
LINGER_S = 0.05
PAGE = 1_000  # events read at once when catching a channel's members up


class OfflineNotifier:
    def __init__(self, stores: ChatStores, log: Log) -> None:
        self._stores = stores
        self._log = log
        # channel → its members, or None for a large channel (never notified); LRU.
        self._members: OrderedDict[ChannelId, set[UserId] | None] = OrderedDict()

    async def _members_of(self, channel_id: ChannelId, seq: int) -> set[UserId] | None:
        """The members as of event ``seq``: cached, or read from the store — which may be ahead
        of this stream, so joins and leaves after ``seq`` are undone from the events."""
        if channel_id in self._members:
            self._members.move_to_end(channel_id)
            return self._members[channel_id]
        # Members first, then the channel's last seq: a change committed between the two reads
        # is within the undone range, and undoing one the members read missed is a no-op.
        members = set(await self._stores.channels.members(channel_id))
        channel = await self._stores.channels.get(channel_id)
        changes: list[Event] = []  # membership changes after ``seq``, read in bounded pages
        after = seq
        while channel is not None and after < channel.last_seq:
            page, _ = await self._stores.messages.events(channel_id, after, PAGE)
            if not page:
                break
            changes += [e for e in page if e.kind in ("join", "leave")]
            after = page[-1].seq
        for event in reversed(changes):
            if event.user_id is not None and event.kind == "join":
                members.discard(event.user_id)
            elif event.user_id is not None and event.kind == "leave":
                members.add(event.user_id)
        found = None if channel is None or channel.kind == "large" else members
        self._members[channel_id] = found
        if len(self._members) > CACHED_CHANNELS:
            self._members.popitem(last=False)
        return found

    def subscription(self) -> Subscription:
        return Subscription(Topics.CHAT_EVENTS, GROUP, self.handle, linger_s=LINGER_S)

    async def handle(self, record: LogRecord) -> None:
        frame = decode_event(record.payload)
        channel_id = ChannelId(int(frame.channel_id))
        if frame.kind in ("join", "leave"):
            cached = self._members.get(channel_id)
            if cached is not None and frame.user_id is not None:
                user = UserId(int(frame.user_id))
                if frame.kind == "join":
                    cached.add(user)
                else:
                    cached.discard(user)
            return
        message = frame.message
        if frame.kind != "message" or message is None:
            return
        members = await self._members_of(channel_id, frame.seq)
        if members is None:
            return
        sender = int(message.sender_id)
        others = [m for m in members if m != sender]
        online = await self._stores.presence.online(others)
        offline = tuple(sorted(m for m in others if m not in online))
        if not offline:
            return
        request = NotifyRequest(
            f"chat:{channel_id}:{frame.seq}", "chat_message", offline,
            {"channel_id": frame.channel_id, "message_id": message.id,
             "sender_id": message.sender_id, "seq": frame.seq,
             "preview": message.text[:PREVIEW_CHARS]},
        )  # fmt: skip
        await self._log.publish(*_fields(request))


def _fields(request: NotifyRequest) -> tuple[str, str, bytes]:
    record = request.publish()
    return record.topic, record.key, record.payload
