"""The WebSocket endpoint, ``GET /v1/ws?token=`` (API.md "WebSocket"), as a raw ASGI app.

A bad token is accepted then closed with 4401 (a close code needs an open socket). Frames are
handled one at a time per connection, in the order the client sent them; a frame that is not
valid JSON, of an unknown type or refused by the service gets an ``error`` frame and the
connection stays up. Nothing a client sends can end another connection. Each connection may
send ``FANOUT_RATE_LIMIT_PER_S`` frames per second (burst five times that; pings are free);
over it, frames are answered with a ``rate_limited`` error and not handled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import msgspec
from starlette.types import ASGIApp, Receive, Scope, Send

from fanout.accounts.model import UserId
from fanout.api.websocket import WebSocketProtocol
from fanout.chat import frames
from fanout.chat.connection import CLOSE_UNAUTHORIZED, Connection, RawWrite
from fanout.chat.hub import Hub
from fanout.chat.model import ChannelId, UploadId
from fanout.core.errors import FanoutError
from fanout.core.ratelimit import take

if TYPE_CHECKING:
    from fanout.bootstrap import Platform

__all__ = ["GatewayFront", "WebSocketEndpoint"]

log = logging.getLogger(__name__)

MAX_FRAME_CHARS = 64 * 1024  # a send of 4000 characters is far below this


class WebSocketEndpoint:
    """``GET /v1/ws``. Mounted in front of every middleware (:class:`GatewayFront`): an idle
    connection keeps its coroutine frames alive for hours, so the fewer layers the better."""

    def __init__(self, platform: Callable[[], Platform | None]) -> None:
        self._platform = platform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        platform = self._platform()
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if platform is None:  # not started (or shutting down)
            await send({"type": "websocket.close", "code": 1013})
            return
        token = (parse_qs(scope.get("query_string", b"").decode()).get("token") or [""])[0]
        await send({"type": "websocket.accept"})
        try:
            user = platform.accounts.authenticate(token)
        except FanoutError:
            await send({"type": "websocket.close", "code": CLOSE_UNAUTHORIZED,
                        "reason": "missing or bad token"})  # fmt: skip
            return
        hub = platform.hub
        conn = Connection(user, send, hub.queue_frames, platform.clock.now_ms(), raw_writer(send))
        try:
            await hub.attach(conn)
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    raw = message.get("bytes") or b""
                    text = raw.decode("utf-8", "replace")
                await _handle(hub, conn, text)
        except asyncio.CancelledError:
            if not conn.closed:
                raise
            # Closed by the hub (a slow consumer): end quietly, below.
        finally:
            closed_by_hub = conn.closed
            conn.closed = True
            # Detaching runs as its own task: it completes even if this one is cancelled again.
            detaching = asyncio.ensure_future(hub.detach(conn))
            try:
                await asyncio.shield(detaching)
            except asyncio.CancelledError:
                if not closed_by_hub:
                    raise


def raw_writer(send: Send) -> RawWrite | None:
    """Whole frames written straight to the socket, when the server runs our WebSocket protocol
    (``api/websocket.py``, what ``fanout serve`` uses): the hub's frame bytes are the same for
    every connection, so a delivery costs one ``transport.write`` instead of re-framing the text
    per connection (a third of a 500-member fan-out's CPU). Any other server: None, and frames go
    through ASGI ``send``. Writes are refused (False) once the socket is closing or congested —
    then the connection queues and the ASGI ``send`` waits for room, in order."""
    protocol = getattr(send, "__self__", None)
    return protocol.write_frame if isinstance(protocol, WebSocketProtocol) else None


class GatewayFront:
    """``app`` with ``/v1/ws`` WebSockets answered by ``endpoint`` before anything else."""

    def __init__(self, app: ASGIApp, endpoint: WebSocketEndpoint) -> None:
        self.app = app
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/v1/ws":
            await self._endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _error(code: str, message: str, client_msg_id: str | None = None) -> str:
    return frames.encode(frames.ErrorFrame(code, message, client_msg_id)).decode()


async def _handle(hub: Hub, conn: Connection, text: str) -> None:
    frame = _decode(conn, text)
    if conn.holding is not None and not isinstance(frame, frames.Resume):
        conn.release()  # the first frame is not a resume: deliver what was held back
    if frame is None:
        return
    answering = frame.client_msg_id if isinstance(frame, frames.Send) else None
    if hub.frame_rate > 0 and not isinstance(frame, frames.Ping):
        conn.bucket, wait = take(conn.bucket, time.monotonic(), hub.frame_rate, 5 * hub.frame_rate)
        if wait > 0:
            conn.offer(_error("rate_limited", f"too many frames: retry in {wait:.2f} s", answering))
            return
    try:
        await _dispatch(hub, conn, frame)
    except FanoutError as exc:
        conn.offer(_error(exc.code, exc.message, answering))
    except Exception:  # a bug must cost this frame, never the connection or its neighbours
        log.exception("handling a %s frame failed", type(frame).__name__)
        conn.offer(_error("internal", "the server could not handle this frame", answering))


def _decode(conn: Connection, text: str) -> frames.ClientFrame | None:
    """The frame, or None after answering with the error that says why it is not one."""
    if len(text) > MAX_FRAME_CHARS:
        conn.offer(_error("too_large", f"frames are at most {MAX_FRAME_CHARS} characters"))
        return None
    try:
        return frames.decode_client(text)
    except msgspec.ValidationError as exc:
        conn.offer(_error("invalid", f"not a frame this server knows: {exc}"))
    except msgspec.DecodeError as exc:
        conn.offer(_error("malformed_json", f"the frame is not valid JSON: {exc}"))
    return None


async def _dispatch(hub: Hub, conn: Connection, frame: Any) -> None:
    chat = hub.service
    user = conn.user_id
    match frame:
        case frames.Ping():
            await hub.ping(conn)
        case frames.Send(channel_id=channel, client_msg_id=cid, text=text, attachment_ids=ids):
            message, _ = await chat.send(
                user, ChannelId(int(channel)), cid, text, [UploadId(int(i)) for i in ids]
            )
            conn.offer(frames.encode(frames.SentFrame(cid, frames.message_out(message))).decode())
        case frames.Resume(channels=channels):
            await resume(hub, conn, {ChannelId(int(c)): s for c, s in channels.items()})
        case frames.Read(channel_id=channel, seq=seq):
            await chat.mark(user, ChannelId(int(channel)), seq, "read")
        case frames.Delivered(channel_id=channel, seq=seq):
            await chat.mark(user, ChannelId(int(channel)), seq, "delivered")
        case frames.Typing(channel_id=channel):
            await hub.typing(conn, ChannelId(int(channel)))
        case frames.PresenceSubscribe(user_ids=ids):
            await hub.presence_subscribe(conn, [UserId(int(i)) for i in ids])


async def resume(hub: Hub, conn: Connection, channels: dict[ChannelId, int]) -> None:
    """Replay every event after each given seq, in order; past the replay cap, ``resync``.

    Live events are held while the replay reads, then released: those already replayed are
    dropped by seq, so the client sees each channel once and in order.
    """
    if conn.holding is None:
        conn.holding = []
    conn.resuming = True
    try:
        for channel_id, after in channels.items():
            try:
                await hub.service.channel(conn.user_id, channel_id)
            except FanoutError as exc:
                conn.offer(_error(exc.code, f"channel {channel_id}: {exc.message}"))
                continue
            found, more = await hub.service.stores.messages.events(
                channel_id, after, hub.replay_cap
            )
            if more:
                conn.offer(frames.encode(frames.ResyncFrame(str(channel_id), after)).decode())
                continue
            conn.seqs[channel_id] = after  # asked for: replay all of it, even if seen live
            for event in found:
                conn.offer_event_now(channel_id, event.seq, frames.event_bytes(event).decode())
    finally:
        conn.resuming = False
        conn.release()
