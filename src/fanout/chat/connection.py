"""One WebSocket connection as the hub sees it: a user, a bounded outgoing queue, a writer.

Frames are encoded once per event by the hub and shared by every connection that gets them —
as text, and as the whole RFC 6455 frame (a server's frames are not masked, so the same bytes
suit every connection). ``offer`` never waits: where the server lets us write frames directly
(``raw``, see ``api/ws.py``) and nothing is queued, it writes at once; otherwise it appends to
the queue and starts the writer task if none runs (an idle connection has no task at all).
A connection whose queue is full is a slow consumer: it is closed with 4408 — its client
resumes on reconnect — instead of growing memory or delaying anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fanout.accounts.model import UserId
from fanout.chat.model import ChannelId
from fanout.core import websocket
from fanout.core.ratelimit import Bucket

__all__ = ["CLOSE_SLOW", "CLOSE_UNAUTHORIZED", "Connection", "Outgoing", "RawWrite"]

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_SLOW = 4408
CLOSE_GRACE_S = 1.0  # how long a close frame may wait for a congested socket

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
RawWrite = Callable[[bytes], bool]  # writes a whole frame now, or answers False (congested)


class Outgoing:
    """One frame for any number of connections: its text, and its wire bytes — the unmasked,
    unfragmented text frame (RFC 6455 §5.2) — made once."""

    __slots__ = ("text", "wire")

    def __init__(self, text: str) -> None:
        self.text = text
        self.wire = websocket.frame(websocket.OP_TEXT, text.encode())


class Connection:
    __slots__ = (
        "_queue",
        "_raw",
        "_send",
        "_task",
        "_writer",
        "bucket",
        "closed",
        "holding",
        "last_ping_ms",
        "max_frames",
        "resuming",
        "seqs",
        "user_id",
        "watching",
    )

    def __init__(
        self, user_id: UserId, send: Send, max_frames: int, now_ms: int, raw: RawWrite | None = None
    ) -> None:
        self.user_id = user_id
        self._send = send
        self._raw = raw
        self.max_frames = max_frames
        self._queue: deque[Outgoing] | None = None  # made on first need: ~600 B per idle socket
        self._writer: asyncio.Task[None] | None = None
        self._task: asyncio.Task[Any] | None = asyncio.current_task()
        self.closed = False
        self.last_ping_ms = now_ms
        # Last seq delivered per channel (dedupe and order), and the live events held back
        # while a ``resume`` replays (from the connection's start until its first frame too, so
        # events racing the first resume cannot overtake the replay).
        self.seqs: dict[ChannelId, int] = {}
        self.holding: list[tuple[ChannelId, int, Outgoing]] | None = []
        self.resuming = False  # a resume is replaying: nothing may release what is held
        self.watching: set[UserId] = set()
        self.bucket: Bucket | None = None  # frames this connection may still send (rate limit)

    def offer(self, frame: str | Outgoing) -> None:
        """Send or queue a frame; over the bound, close the connection as a slow consumer."""
        if self.closed:
            return
        out = frame if isinstance(frame, Outgoing) else Outgoing(frame)
        raw = self._raw
        if raw is not None and not self._queue and self._writer is None and raw(out.wire):
            return
        if self._queue is None:
            self._queue = deque()
        if len(self._queue) >= self.max_frames:
            self.close(CLOSE_SLOW, "too slow: reconnect and resume")
            return
        self._queue.append(out)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    def offer_event(self, channel_id: ChannelId, seq: int, frame: str | Outgoing) -> None:
        """Queue a channel event unless this connection has it already (seq order kept)."""
        if self.holding is not None:
            if len(self.holding) >= self.max_frames:
                self.close(CLOSE_SLOW, "too slow: reconnect and resume")
            else:
                self.holding.append(
                    (channel_id, seq, frame if isinstance(frame, Outgoing) else Outgoing(frame))
                )
            return
        seqs = self.seqs  # offer_event_now, inlined: this runs once per frame per recipient
        if seq > seqs.get(channel_id, 0):
            seqs[channel_id] = seq
            self.offer(frame)

    def offer_event_now(self, channel_id: ChannelId, seq: int, frame: str | Outgoing) -> None:
        """Queue a channel event, held or not, unless this connection had it already."""
        if seq <= self.seqs.get(channel_id, 0):
            return
        self.seqs[channel_id] = seq
        self.offer(frame)

    def release(self) -> None:
        """Stop holding events back: deliver the held ones (those not replayed already)."""
        held, self.holding = self.holding, None
        for channel_id, seq, frame in held or ():
            self.offer_event(channel_id, seq, frame)

    async def _drain(self) -> None:
        try:
            queue = self._queue
            while queue and not self.closed:
                out = queue[0]
                if self._raw is None or not self._raw(out.wire):
                    # Congested (or no direct writes): the server's send waits until writable.
                    await self._send({"type": "websocket.send", "text": out.text})
                if queue and queue[0] is out:
                    queue.popleft()
        except Exception:  # the peer is gone: the receive loop sees the disconnect
            self.closed = True
        finally:
            self._writer = None

    def close(self, code: int, reason: str = "") -> None:
        """Close from the server side: drop what is queued, send the close frame (bounded wait),
        then end the connection's receive loop."""
        if self.closed:
            return
        self.closed = True
        if self._queue is not None:
            self._queue.clear()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
        asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": code, "reason": reason}),
                CLOSE_GRACE_S,
            )
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
