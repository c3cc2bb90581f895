"""The gateway hub: user → connections, channel → local members, and delivery through a router.

Every process holding WebSockets runs one. A committed event is published once to its channel's
topic and reaches every process holding a member, which shares one encoded frame among its local
connections; frames for one user go to the user's topic, presence to the user's presence topic.
Connections see each channel in seq order, without gaps: :mod:`fanout.chat.ordering`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fanout.accounts.model import UserId
from fanout.chat import frames
from fanout.chat.connection import Connection, Outgoing
from fanout.chat.model import Channel, ChannelId, Event
from fanout.chat.ordering import ChannelOrder, about
from fanout.chat.ports import Router
from fanout.chat.presence import Announcer
from fanout.chat.routing import TopicRefs, channel_payload, parse_channel_payload
from fanout.chat.service import ChatService
from fanout.core.clock import Clock
from fanout.core.errors import Invalid
from fanout.core.times import iso

__all__ = ["Hub"]

log = logging.getLogger(__name__)

TYPING_EVERY_MS = 3_000  # one typing frame per user and channel per this
HOLD_FIRST_FRAME_S = 1.0  # events wait this long at most for a new connection's resume
WATCH_MAX = 2_000  # presences one connection may watch (its small peers included)


class Hub:
    def __init__(
        self,
        service: ChatService,
        router: Router,
        clock: Clock,
        node: str,
        *,
        presence_ttl_s: int = 90,
        queue_frames: int = 1_000,
        replay_cap: int = 1_000,
        small_up_to: int = 100,
        frame_rate: float = 0.0,
    ) -> None:
        self.service = service
        self._router = router
        self._clock = clock
        self.node = node
        self._ttl_ms = presence_ttl_s * 1000
        self.queue_frames = queue_frames
        self.replay_cap = replay_cap
        self.small_up_to = small_up_to
        self.frame_rate = frame_rate  # frames/s a connection may send (burst 5x); 0: no limit
        self._users: dict[UserId, list[Connection]] = {}
        self._members: dict[ChannelId, set[UserId]] = {}
        self._channels_of: dict[UserId, set[ChannelId]] = {}
        self._loading: dict[UserId, asyncio.Future[None]] = {}  # first connections indexing
        self._watchers: dict[UserId, set[Connection]] = {}
        self._topics = TopicRefs(router)
        self.order = ChannelOrder(self._deliver, self._events, self._spawn, replay_cap)
        self._typing: dict[tuple[UserId, ChannelId], int] = {}
        self._presence = Announcer(service.stores.presence, router, clock, node, self._ttl_ms,
                                   lambda user: user in self._users)  # fmt: skip
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self.frames_out = 0  # frames handed to local connections (a metric, read at scrape)
        # Seconds from an event's commit to its arrival at this hub (a metric's observer).
        self.on_delivery: Callable[[float], None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self._router.start(self._on_payload)
        self._loop = asyncio.create_task(
            self._presence.run_forever(self._forget_typing), name="hub-presence"
        )

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        await self._presence.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conns in list(self._users.values()):
            for conn in conns:
                conn.close(1001, "server shutting down")
        await self._router.close()

    @property
    def connections(self) -> int:
        return sum(len(c) for c in self._users.values())

    async def _events(
        self, channel_id: ChannelId, after_seq: int, limit: int
    ) -> tuple[list[Event], bool]:
        return await self.service.stores.messages.events(channel_id, after_seq, limit)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- topics --------------------------------------------------------------------------------

    def _join_locally(self, user: UserId, channel_id: ChannelId, next_seq: int) -> list[str]:
        """Index a local user as a member; the topics to subscribe to. ``next_seq`` is the first
        seq this hub must deliver if it does not follow the channel yet: anything below was
        committed before (the client resumes it), anything between it and a later arrival is
        a gap the hub fills — so the first event seen never fixes where a channel starts."""
        mine = self._channels_of.get(user)
        if mine is None or channel_id in mine:
            return []
        mine.add(channel_id)
        if channel_id not in self._members:  # the first here: start afresh
            self._members[channel_id] = set()
            self.order.start(channel_id, next_seq)
        self._members[channel_id].add(user)
        return [f"c{channel_id}"]

    def _leave_locally(self, user: UserId, channel_id: ChannelId) -> list[str]:
        mine = self._channels_of.get(user)
        if mine is None or channel_id not in mine:
            return []
        mine.discard(channel_id)
        members = self._members.get(channel_id)
        if members is not None:
            members.discard(user)
            if not members:  # nobody here follows it now: forget its order state too
                del self._members[channel_id]
                self.order.forget(channel_id)
        return [f"c{channel_id}"]

    # -- connections ---------------------------------------------------------------------------

    async def attach(self, conn: Connection) -> None:
        """Register a connection: its channels, its user topic, presence, peers' presence."""
        user = conn.user_id
        conns = self._users.setdefault(user, [])
        conns.append(conn)
        asyncio.get_running_loop().call_later(HOLD_FIRST_FRAME_S, self._stop_holding, conn)
        if len(conns) == 1:
            loaded = asyncio.get_running_loop().create_future()
            self._loading[user] = loaded
            try:
                await self._load_channels(user)
            finally:
                self._loading.pop(user, None)
                loaded.set_result(None)
        elif (loading := self._loading.get(user)) is not None:
            await asyncio.shield(loading)  # the user's first connection is still indexing
        peers = await self.service.stores.channels.small_peers(user, self.small_up_to)
        await self._watch(conn, set(sorted(peers)[: WATCH_MAX // 2]))  # room for explicit ones
        await self._heartbeat(conn)

    async def _load_channels(self, user: UserId) -> None:
        self._channels_of[user] = set()
        await self._topics.ref(
            [f"u{user}"]
        )  # first: what is created or joined while we read arrives
        channels = self.service.stores.channels
        topics: list[str] = []
        for channel_id, last_seq in (await channels.channel_ids(user)).items():
            topics += self._join_locally(user, channel_id, last_seq + 1)
        await self._topics.ref(topics)
        if topics:  # what was committed between that read and subscribing reached nobody here
            for channel_id, last_seq in (await channels.channel_ids(user)).items():
                if last_seq >= self.order.next.get(channel_id, last_seq + 1):
                    self._spawn(self.order.catch_up(channel_id))

    def _stop_holding(self, conn: Connection) -> None:
        if conn.holding is not None and not conn.closed and not conn.resuming:
            conn.release()

    async def detach(self, conn: Connection) -> None:
        user = conn.user_id
        conns = self._users.get(user, [])
        if conn in conns:
            conns.remove(conn)
        topics = [f"p{p}" for p in conn.watching]
        for peer in conn.watching:
            watchers = self._watchers.get(peer)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self._watchers[peer]
        if not conns:
            self._users.pop(user, None)
            topics.append(f"u{user}")
            for channel_id in list(self._channels_of.get(user, ())):
                topics += self._leave_locally(user, channel_id)
            self._channels_of.pop(user, None)
            await self._presence.left(user)
        await self._topics.unref(topics)

    async def _watch(self, conn: Connection, users: set[UserId]) -> None:
        new = users - conn.watching
        if len(conn.watching) + len(new) > WATCH_MAX:
            raise Invalid(f"a connection watches at most {WATCH_MAX} users' presence")
        conn.watching |= new
        for peer in new:
            self._watchers.setdefault(peer, set()).add(conn)
        await self._topics.ref([f"p{p}" for p in new])

    # -- inbound: what the router hands over ---------------------------------------------------

    def _on_payload(self, topic: str, payload: bytes) -> None:
        try:
            channel_id, seq, kind, about, at_ms, frame = parse_channel_payload(payload)
            text = Outgoing(frame.decode())  # one text and one wire frame for every connection
            if topic[0] == "p":
                for conn in list(self._watchers.get(UserId(about), ())):
                    conn.offer(text)
            elif kind == "created":  # a new channel of a local user: index it
                self._index(UserId(about), ChannelId(channel_id), 1)
            elif seq:
                if self.on_delivery is not None:
                    self.on_delivery((self._clock.now_ms() - at_ms) / 1000)
                self._sequenced(ChannelId(channel_id), seq, kind, about, text)
            elif topic[0] == "u":
                for conn in list(self._users.get(UserId(int(topic[1:])), ())):
                    conn.offer(text)
            else:  # receipts and typing of a small channel: to every local member
                self._broadcast(ChannelId(channel_id), text, None if kind != "typing" else about)
        except Exception:  # one bad payload must not stop the router's loop
            log.exception("undeliverable payload on %s", topic)

    def _index(self, user: UserId, channel_id: ChannelId, next_seq: int) -> None:
        topics = self._join_locally(user, channel_id, next_seq)
        if topics:
            self._spawn(self._topics.ref(topics))

    def _broadcast(self, channel_id: ChannelId, text: Outgoing, skip: int | None) -> None:
        for user in list(self._members.get(channel_id, ())):
            if user == skip:
                continue
            for conn in self._users.get(user, ()):
                conn.offer(text)

    def _sequenced(
        self, channel_id: ChannelId, seq: int, kind: str, who: int, text: Outgoing
    ) -> None:
        if channel_id not in self._members and not (kind == "join" and who in self._users):
            return  # nobody here follows the channel (a publish racing its last member's exit)
        self.order.arrived(channel_id, seq, kind, who, text)

    def _deliver(
        self, channel_id: ChannelId, seq: int, kind: str, about: int, text: Outgoing
    ) -> None:
        """Hand one event to every local connection of the channel (called in seq order)."""
        if kind == "join" and about in self._users:
            self._index(UserId(about), channel_id, seq)
        users, sent = self._users, 0
        for user in list(self._members.get(channel_id, ())):
            for conn in users.get(user, ()):
                conn.offer_event(channel_id, seq, text)
                sent += 1
        self.frames_out += sent
        if kind == "leave" and about in self._users:
            topics = self._leave_locally(UserId(about), channel_id)
            if topics:
                self._spawn(self._topics.unref(topics))

    # -- outbound: what this process publishes -------------------------------------------------

    async def event(self, event: Event) -> None:
        """Publish a committed event to its channel (and a join to the joining user too)."""
        body = frames.event_bytes(event)
        payload = channel_payload(event.channel_id, event.seq, event.kind, about(event), body,
                                  event.at_ms)  # fmt: skip
        items = [(f"c{event.channel_id}", payload)]
        if event.kind == "join" and event.user_id is not None:
            items.append((f"u{event.user_id}", payload))
        await self._router.publish_many(items)

    async def receipt(self, channel: Channel, user: UserId, kind: str, seq: int) -> None:
        """To every member of a small channel; to the user's own devices only otherwise."""
        body = frames.encode(frames.ReceiptFrame(str(channel.id), str(user), kind, seq))
        payload = channel_payload(channel.id, 0, "receipt", user, body)
        small = channel.kind == "dm" or channel.member_count <= self.small_up_to
        await self._router.publish(f"c{channel.id}" if small else f"u{user}", payload)

    async def created(self, channel_id: ChannelId, members: Sequence[UserId]) -> None:
        """Tell the gateways of a new channel's members to index it for them."""
        await self._router.publish_many(
            [(f"u{m}", channel_payload(channel_id, 0, "created", m, b"")) for m in members]
        )

    async def to_users(self, users: Sequence[UserId], frame: bytes) -> None:
        """A frame for users wherever they are connected (feed posts, notifications)."""
        payload = channel_payload(0, 0, "user", 0, frame)
        await self._router.publish_many([(f"u{u}", payload) for u in users])

    async def typing(self, conn: Connection, channel_id: ChannelId) -> None:
        now = self._clock.now_ms()
        key = (conn.user_id, channel_id)
        if now - self._typing.get(key, -TYPING_EVERY_MS) < TYPING_EVERY_MS:
            return
        channel, _ = await self.service.channel(conn.user_id, channel_id)
        self._typing[key] = now
        if channel.member_count > self.small_up_to and channel.kind == "large":
            return  # nobody wants 10 000 typing indicators
        body = frames.encode(frames.TypingFrame(str(channel_id), str(conn.user_id)))
        await self._router.publish(
            f"c{channel_id}", channel_payload(channel_id, 0, "typing", conn.user_id, body)
        )

    # -- presence ------------------------------------------------------------------------------

    async def _heartbeat(self, conn: Connection) -> None:
        conn.last_ping_ms = self._clock.now_ms()
        await self._presence.heartbeat(conn.user_id)

    async def ping(self, conn: Connection) -> None:
        await self._heartbeat(conn)
        conn.offer(_PONG)

    async def presence_subscribe(self, conn: Connection, users: Sequence[UserId]) -> None:
        await self._watch(conn, set(users) - {conn.user_id})
        online = await self.service.stores.presence.online(users)
        at = iso(self._clock.now_ms())
        for user in users:
            status = "online" if user in online else "offline"
            conn.offer(frames.encode(frames.PresenceFrame(str(user), status, at)).decode())

    def _forget_typing(self) -> None:
        horizon = self._clock.now_ms() - TYPING_EVERY_MS
        self._typing = {k: at for k, at in self._typing.items() if at > horizon}


_PONG = frames.encode(frames.PongFrame()).decode()
