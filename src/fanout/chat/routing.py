"""The in-process router (embedded mode): a publish reaches this process's subscriptions; and
the reference counts that keep a hub subscribed to what its connections need.

The scaled router (``storage/redis/routing.py``) carries the same topics between processes
through Redis pub/sub. Topic names: ``c<channel id>``, ``u<user id>``, ``p<user id>``.
Every payload starts with a header, ``<channel id> <seq> <kind> <user id> <at ms> `` then the
frame: ``seq`` 0 marks a frame outside a channel's sequence (receipts, typing, presence, frames
for one user), ``user id`` is whom it is about, ``at ms`` when the event was committed (0 if
not an event; receivers measure delivery latency with it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fanout.chat.ports import Router

__all__ = [
    "LocalRouter",
    "TopicRefs",
    "channel_payload",
    "channel_topic",
    "parse_channel_payload",
]


def channel_topic(channel_id: int) -> str:
    return f"c{channel_id}"


def channel_payload(
    channel_id: int, seq: int, kind: str, user_id: int, frame: bytes, at_ms: int = 0
) -> bytes:
    return b"%d %d %s %d %d " % (channel_id, seq, kind.encode(), user_id, at_ms) + frame


def parse_channel_payload(payload: bytes) -> tuple[int, int, str, int, int, bytes]:
    channel, seq, kind, user, at_ms, frame = payload.split(b" ", 5)
    return int(channel), int(seq), kind.decode(), int(user), int(at_ms), frame


class LocalRouter:
    def __init__(self) -> None:
        self._handler: Callable[[str, bytes], None] | None = None
        self._topics: set[str] = set()

    async def start(self, handler: Callable[[str, bytes], None]) -> None:
        self._handler = handler

    async def publish(self, topic: str, payload: bytes) -> None:
        if self._handler is not None and topic in self._topics:
            self._handler(topic, payload)

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for topic, payload in items:
            await self.publish(topic, payload)

    async def subscribe(self, topics: Sequence[str]) -> None:
        self._topics.update(topics)

    async def unsubscribe(self, topics: Sequence[str]) -> None:
        self._topics.difference_update(topics)

    async def close(self) -> None:
        self._handler = None


class TopicRefs:
    """Subscriptions counted by their users: a topic is subscribed while anyone here needs it."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self._refs: dict[str, int] = {}

    async def ref(self, topics: Sequence[str]) -> None:
        new = []
        for topic in topics:
            self._refs[topic] = self._refs.get(topic, 0) + 1
            if self._refs[topic] == 1:
                new.append(topic)
        if new:
            try:
                await self._router.subscribe(new)
            except BaseException:  # not subscribed: a later ref must try again
                for topic in new:
                    self._refs[topic] -= 1
                    if self._refs[topic] <= 0:
                        del self._refs[topic]
                raise

    async def unref(self, topics: Sequence[str]) -> None:
        gone = []
        for topic in topics:
            left = self._refs.get(topic, 0) - 1
            if left <= 0:
                self._refs.pop(topic, None)
                gone.append(topic)
            else:
                self._refs[topic] = left
        if gone:
            await self._router.unsubscribe(gone)
