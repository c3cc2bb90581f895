"""A lean WebSocket protocol for uvicorn (``uvicorn.run(..., ws=WebSocketProtocol)``).

uvicorn parses the upgrade request and hands the socket over; from there this class speaks
RFC 6455 (``core/websocket.py``) and ASGI to the app. It exists for memory: an idle socket
under uvicorn's websockets-sansio protocol costs ~20 KB (a parser, a request and headers kept
twice, an ``asyncio.Queue``, two ``asyncio.Event``s, two keepalive timers), here ~3 KB before
the app's own state: slots, one ASGI task, nothing else until messages flow. Keepalive is one
sweep per event loop every ``ws_ping_interval`` seconds: a socket silent for a whole interval
gets a ping, and one silent for the next interval too is closed (1011).

The hub writes whole frames straight to the socket with :meth:`WebSocketProtocol.write_frame`
(see ``api/ws.py``). Received messages queue up to :data:`MAX_QUEUED` before reading pauses.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import MutableMapping
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from fanout.api.websocket_loop import Flush, Keepalive
from fanout.core import websocket as wire

__all__ = ["MAX_QUEUED", "WebSocketProtocol"]

log = logging.getLogger(__name__)

MAX_QUEUED = 16  # received messages the app has not taken yet; over it, reading pauses
CLOSE_TIMEOUT_S = 5.0  # how long a sent close frame waits for the peer's before hanging up

_HANDSHAKE, _OPEN, _CLOSING, _CLOSED = range(4)
Message = MutableMapping[str, Any]


class WebSocketProtocol(asyncio.Protocol):
    __slots__ = (
        "_app_state",
        "_batch",
        "_config",
        "_disconnect",
        "_drained",
        "_flush",
        "_incoming",
        "_reader",
        "_reading",
        "_scope",
        "_server_state",
        "_state",
        "_timer",
        "_transport",
        "_waiter",
        "pinged",
        "seen",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._transport: asyncio.Transport | None = None
        self._batch: list[bytes] | None = None  # frames taken for this loop iteration's write
        self._flush = Flush.of(_loop or asyncio.get_running_loop())
        self._reader = wire.FrameReader(config.ws_max_size)
        self._state = _HANDSHAKE
        self._scope: dict[str, Any] | None = None
        self._incoming: deque[Message] | None = None
        self._waiter: asyncio.Future[Message] | None = None
        self._drained: asyncio.Future[None] | None = None  # set while writing is paused
        self._disconnect: Message | None = None  # once told to the app
        self._timer: asyncio.TimerHandle | None = None
        self._reading = True
        self.seen = True  # bytes arrived since the last keepalive sweep
        self.pinged = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._server_state.connections.add(self)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.seen, self.pinged = True, False
        if self._state == _HANDSHAKE:
            if self._scope is None:
                self._handshake(data)
            return
        if self._state == _CLOSED:
            return
        try:
            received = self._reader.feed(data)
        except wire.ProtocolError as exc:
            self._fail(exc.code, exc.reason)
            return
        for opcode, payload in received:
            if opcode == wire.OP_TEXT:
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    self._fail(1007, "text messages must be UTF-8")
                    return
                self._put({"type": "websocket.receive", "text": text})
            elif opcode == wire.OP_BINARY:
                self._put({"type": "websocket.receive", "bytes": payload})
            elif opcode == wire.OP_PING:
                self._write(wire.frame(wire.OP_PONG, payload))
            elif opcode == wire.OP_CLOSE:
                self._closed_by_peer(payload)
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._server_state.connections.discard(self)
        Keepalive.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._tell_disconnect(1006, "")
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)  # senders waiting for room find the socket gone

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # uvicorn

    def shutdown(self) -> None:
        """The server is stopping: 1012 (service restart), clients resume elsewhere."""
        if self._state == _OPEN:
            self._write(wire.close_frame(1012, "server restart"))
            self._tell_disconnect(1012, "")
        elif self._state == _HANDSHAKE and self._scope is not None:
            self._respond(HTTPStatus.SERVICE_UNAVAILABLE)
        self._state = _CLOSED
        if self._transport is not None:
            self._transport.close()

    # ASGI

    async def receive(self) -> Message:
        incoming = self._incoming
        if incoming:
            message = incoming.popleft()
            if not self._reading and len(incoming) <= MAX_QUEUED // 2 and self._transport:
                self._reading = True
                self._transport.resume_reading()
            return message
        if self._disconnect is not None:
            return self._disconnect
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            return await waiter
        finally:
            self._waiter = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self._state == _HANDSHAKE:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._respond(HTTPStatus.FORBIDDEN)
                self._tell_disconnect(1006, "")
                self._hang_up()
            else:
                raise RuntimeError(f"{kind!r} before websocket.accept")
            return
        if self._state != _OPEN:
            raise ClientDisconnected()
        if kind == "websocket.send":
            text = message.get("text")
            if text is not None:
                data = wire.frame(wire.OP_TEXT, text.encode())
            else:
                data = wire.frame(wire.OP_BINARY, bytes(message.get("bytes") or b""))
            while self._drained is not None:
                await self._drained
            if self._state != _OPEN:
                raise ClientDisconnected()
            self._write(data)
        elif kind == "websocket.close":
            self._close(int(message.get("code") or 1000), str(message.get("reason") or ""))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def write_frame(self, data: bytes) -> bool:
        """Take a whole frame for this loop iteration's write; False (nothing taken) when
        closing or congested. Frames taken in one iteration go out in one ``write`` (the event
        loop would spend a system call on each): a 500-member group's burst of events costs
        500 system calls, not 500 per event."""
        if self._state != _OPEN or self._drained is not None:
            return False
        batch = self._batch
        if batch is None:
            self._batch = [data]
            self._flush.soon(self)
        else:
            batch.append(data)
        return True

    def flush(self) -> None:
        batch, self._batch = self._batch, None
        if batch and self._transport is not None and not self._transport.is_closing():
            self._transport.write(batch[0] if len(batch) == 1 else b"".join(batch))

    # internals

    def _handshake(self, data: bytes) -> None:
        """uvicorn replays the parsed upgrade request as bytes: check it, start the app."""
        head, _, _ = data.partition(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        _, target, _ = [*request_line.split(" "), "", ""][:3]
        headers: list[tuple[bytes, bytes]] = []
        found: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
            found.setdefault(name, value)
        if found.get("sec-websocket-version") != "13":
            self._respond(HTTPStatus.UPGRADE_REQUIRED, ((b"sec-websocket-version", b"13"),))
            self._hang_up()
            return
        accept = wire.accept_key(found.get("sec-websocket-key", ""))
        if accept is None:
            self._respond(HTTPStatus.BAD_REQUEST)
            self._hang_up()
            return
        assert self._transport is not None
        transport, root = self._transport, self._config.root_path
        raw_path, _, query = target.partition("?")
        subprotocols = [
            token.strip()
            for name, value in headers
            if name == b"sec-websocket-protocol"
            for token in value.decode("latin-1").split(",")
        ]
        self._scope = {
            "type": "websocket",
            "asgi": {"version": self._config.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(transport) else "ws",
            "server": get_local_addr(transport),
            "client": get_remote_addr(transport),
            "root_path": root,
            "path": root + unquote(raw_path),
            "raw_path": (root + raw_path).encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "headers": headers,
            "subprotocols": subprotocols,
            "state": self._app_state.copy(),
            "_accept": accept,
        }
        self._put({"type": "websocket.connect"})
        task = asyncio.get_running_loop().create_task(self._run())
        tasks = self._server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _run(self) -> None:
        assert self._scope is not None
        app = self._config.loaded_app
        try:
            await app(self._scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            log.exception("the WebSocket app failed")
            if self._state == _HANDSHAKE:
                self._respond(HTTPStatus.INTERNAL_SERVER_ERROR)
        else:
            if self._state == _HANDSHAKE:
                log.error("the WebSocket app returned without accepting or closing")
                self._respond(HTTPStatus.INTERNAL_SERVER_ERROR)
        if self._state == _OPEN:
            self._close(1000, "")
        elif self._state == _HANDSHAKE:
            self._hang_up()

    def _accept(self, message: Message) -> None:
        assert self._scope is not None
        accept: str = self._scope.pop("_accept")
        lines = [
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
            b"sec-websocket-accept: " + accept.encode() + b"\r\n",
        ]
        for name, value in [*self._server_state.default_headers, *message.get("headers", ())]:
            lines.append(bytes(name) + b": " + bytes(value) + b"\r\n")
        if message.get("subprotocol"):
            lines.append(b"sec-websocket-protocol: " + message["subprotocol"].encode() + b"\r\n")
        self._write(b"".join(lines) + b"\r\n")
        self._scope["headers"] = []  # an idle socket should not keep its request around
        self._state = _OPEN
        Keepalive.watch(self, self._config.ws_ping_interval)

    def _respond(self, status: HTTPStatus, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        body = status.phrase.encode()
        lines = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()]
        for name, value in [*self._server_state.default_headers, *headers]:
            lines.append(bytes(name) + b": " + bytes(value) + b"\r\n")
        lines.append(b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n")
        lines.append(b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self._write(b"".join(lines))

    def _put(self, message: Message) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
            return
        if self._incoming is None:
            self._incoming = deque()
        self._incoming.append(message)
        if self._reading and len(self._incoming) >= MAX_QUEUED and self._transport:
            self._reading = False
            self._transport.pause_reading()

    def _tell_disconnect(self, code: int, reason: str) -> None:
        if self._disconnect is None:
            self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            if self._scope is not None:
                self._put(self._disconnect)

    def _closed_by_peer(self, payload: bytes) -> None:
        try:
            code, reason = wire.parse_close(payload)
        except wire.ProtocolError as exc:
            self._fail(exc.code, exc.reason)
            return
        if self._state == _OPEN:  # echo it (RFC 6455 §5.5.1), then the peer hangs up
            self._write(wire.close_frame(code if code != 1005 else 1000))
        self._state = _CLOSED
        self._tell_disconnect(code, reason)
        self._hang_up()

    def _close(self, code: int, reason: str) -> None:
        """Our close frame; the peer's answer (or the timeout) ends the connection."""
        self._write(wire.close_frame(code, reason))
        self._state = _CLOSING
        if self._transport is not None:
            self._timer = asyncio.get_running_loop().call_later(
                CLOSE_TIMEOUT_S, self._transport.close
            )

    def _fail(self, code: int, reason: str) -> None:
        if self._state == _OPEN:
            self._write(wire.close_frame(code, reason))
        self._state = _CLOSED
        self._tell_disconnect(code, reason)
        self._hang_up()

    def _write(self, data: bytes) -> None:
        """Write now, after the frames taken for this iteration (order is kept)."""
        if self._batch is not None:
            self._batch.append(data)
            self.flush()
            return
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _hang_up(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def ping(self) -> None:
        """A keepalive ping (from the sweep)."""
        if self._state == _OPEN:
            self._write(wire.frame(wire.OP_PING, b"fanout"))

    def expire(self) -> None:
        """Silent through a ping and a whole interval: give up on the peer."""
        self._fail(1011, "keepalive ping timeout")
