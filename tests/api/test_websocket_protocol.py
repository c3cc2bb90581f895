"""The WebSocket protocol ``fanout serve`` gives uvicorn (fanout.api.websocket), over real
sockets: a real uvicorn server in the test's loop, the ``websockets`` client, and raw bytes
where a well-behaved client cannot break the rules."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fanout.api.websocket import WebSocketProtocol
from fanout.core import websocket as ws
from tests.unit.test_websocket_codec import client_frame

MAX_SIZE = 256 * 1024


class EchoApp:
    """Echoes every message; ``close:<code>`` closes with that code, ``bye`` returns, ``flood:<n>``
    sends n numbered messages. Records every disconnect it is told of."""

    def __init__(self) -> None:
        self.disconnects: list[dict[str, Any]] = []
        self.sent = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert scope["type"] == "websocket"
        await receive()  # websocket.connect
        if scope["path"] == "/refuse":
            await send({"type": "websocket.close"})
            return
        if scope["path"] == "/crash":
            raise RuntimeError("boom")
        await send({"type": "websocket.accept", "headers": [(b"x-echo", b"1")]})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.disconnects.append(message)
                return
            text = message.get("text")
            if text == "bye":
                return
            command, _, arg = (text or "").partition(":")
            if command in ("close", "mixed", "flood"):
                await getattr(self, command)(send, int(arg))
                continue
            body = {k: v for k, v in message.items() if k != "type"}
            await send({"type": "websocket.send", **body})

    async def close(self, send: Any, code: int) -> None:
        await send({"type": "websocket.close", "code": code, "reason": "asked"})

    async def mixed(self, send: Any, n: int) -> None:
        protocol = send.__self__  # frames straight to the socket, as the hub writes them
        for i in range(n):
            if i % 3 == 0:
                await send({"type": "websocket.send", "text": str(i)})
            else:
                assert protocol.write_frame(ws.frame(ws.OP_TEXT, str(i).encode()))
            if i % 7 == 0:
                await asyncio.sleep(0)

    async def flood(self, send: Any, n: int) -> None:
        for i in range(n):
            await send({"type": "websocket.send", "text": f"{i:08d}" + "x" * 1000})
            self.sent = i + 1


class Served:
    def __init__(self, app: EchoApp, port: int, server: uvicorn.Server) -> None:
        self.app, self.port, self.server = app, port, server

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def raw(self, path: str = "/", *, key: str | None = None, version: str = "13",
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:  # fmt: skip
        """A socket after a hand-made upgrade request: (reader, writer, response head)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        key = base64.b64encode(os.urandom(16)).decode() if key is None else key
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return reader, writer, head


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    ping = getattr(request, "param", 20.0)
    app, port = EchoApp(), free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, ws=WebSocketProtocol,
                            ws_max_size=MAX_SIZE, ws_ping_interval=ping, lifespan="on",
                            log_level="warning", loop="asyncio")  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield Served(app, port, server)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One server frame (unmasked, short)."""
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), 5)
    size = b1 & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(size)


async def test_text_and_binary_messages_round_trip(served: Served) -> None:
    async with connect(served.url(), compression=None, max_size=None) as client:
        assert client.response.headers["x-echo"] == "1"
        for message in ["hello", "ünïcødé ✓", "x" * 70_000, b"\x00\x01\xff", b"y" * 200_000]:
            await client.send(message)
            assert await client.recv() == message


async def test_a_fragmented_message_arrives_whole(served: Served) -> None:
    async with connect(served.url(), compression=None) as client:
        await client.send(["frag", "men", "ted"])
        assert await client.recv() == "fragmented"


async def test_direct_frames_and_asgi_sends_keep_their_order(served: Served) -> None:
    async with connect(served.url(), compression=None) as client:
        await client.send("mixed:500")
        assert [await client.recv() for _ in range(500)] == [str(i) for i in range(500)]


async def test_pings_are_answered(served: Served) -> None:
    async with connect(served.url(), compression=None) as client:
        latency = await asyncio.wait_for(await client.ping(), 5)
        assert latency >= 0


async def test_a_client_close_reaches_the_app_with_its_code(served: Served) -> None:
    async with connect(served.url(), compression=None) as client:
        await client.close(4000, "done")
        assert client.close_code == 4000  # echoed
    await asyncio.sleep(0.1)
    assert served.app.disconnects == [{"type": "websocket.disconnect", "code": 4000,
                                       "reason": "done"}]  # fmt: skip


async def test_the_app_closes_with_its_code_and_reason(served: Served) -> None:
    async with connect(served.url(), compression=None) as client:
        await client.send("close:4408")
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4408, "asked")


async def test_an_app_that_returns_closes_normally(served: Served) -> None:
    async with connect(served.url(), compression=None) as client:
        await client.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (client_frame(ws.OP_TEXT, b"hi", masked=False), 1002),
        (client_frame(ws.OP_TEXT, b"\xff\xfe"), 1007),
        (client_frame(ws.OP_TEXT, b"x", rsv=0x40), 1002),
        (client_frame(ws.OP_CONT, b"x"), 1002),
        (client_frame(ws.OP_BINARY, b"x" * (MAX_SIZE + 1))[:14], 1009),
        (client_frame(ws.OP_CLOSE, (999).to_bytes(2, "big")), 1002),
    ],
)
async def test_protocol_violations_close_only_that_connection(
    served: Served, frames: bytes, code: int
) -> None:
    async with connect(served.url(), compression=None) as neighbour:
        reader, writer, head = await served.raw()
        assert head.startswith(b"HTTP/1.1 101")
        writer.write(frames)
        opcode, payload = await read_frame(reader)
        assert opcode == ws.OP_CLOSE and int.from_bytes(payload[:2], "big") == code
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then the server hangs up
        writer.close()
        await neighbour.send("still here")
        assert await neighbour.recv() == "still here"


async def test_a_close_is_echoed_on_a_raw_socket(served: Served) -> None:
    reader, writer, _ = await served.raw()
    writer.write(client_frame(ws.OP_PING, b"p1") + client_frame(ws.OP_CLOSE, b""))
    assert await read_frame(reader) == (ws.OP_PONG, b"p1")
    assert await read_frame(reader) == (ws.OP_CLOSE, (1000).to_bytes(2, "big"))
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@pytest.mark.parametrize(
    ("path", "key", "version", "status"),
    [("/", "short", "13", b"400"), ("/", None, "8", b"426"), ("/refuse", None, "13", b"403"),
     ("/crash", None, "13", b"500")],
)  # fmt: skip
async def test_refused_handshakes_answer_http_errors(
    served: Served, path: str, key: str | None, version: str, status: bytes
) -> None:
    _, writer, head = await served.raw(path, key=key, version=version)
    assert head.split(b" ")[1] == status, head
    if status == b"426":
        assert b"sec-websocket-version: 13" in head.lower()
    writer.close()


async def test_a_reader_that_stops_reading_makes_the_app_wait_not_buffer(served: Served) -> None:
    reader, writer, _ = await served.raw()
    total = 20_000  # ~20 MB: far beyond the kernel's and the transport's buffers
    writer.write(client_frame(ws.OP_TEXT, f"flood:{total}".encode()))
    await asyncio.sleep(1.0)
    stalled = served.app.sent
    assert 0 < stalled < total  # the app's send waits for room
    for i in range(total):  # reading again lets it finish, in order, nothing lost
        opcode, payload = await read_frame(reader)
        assert opcode == ws.OP_TEXT and payload[:8] == f"{i:08d}".encode()
    assert served.app.sent == total
    writer.close()


@pytest.mark.parametrize("served", [0.2], indirect=True)
async def test_keepalive_closes_a_silent_peer_and_keeps_an_answering_one(served: Served) -> None:
    async with connect(served.url(), compression=None, ping_interval=None) as answering:
        reader, writer, _ = await served.raw()
        opcode, _ = await asyncio.wait_for(read_frame(reader), 2)
        assert opcode == ws.OP_PING  # silent for an interval: pinged
        opcode, payload = await asyncio.wait_for(read_frame(reader), 2)
        assert opcode == ws.OP_CLOSE and int.from_bytes(payload[:2], "big") == 1011
        writer.close()
        await asyncio.sleep(0.6)  # the client library answers pings itself
        await answering.send("alive")
        assert await answering.recv() == "alive"


async def test_server_shutdown_closes_with_1012(served: Served) -> None:
    async with connect(served.url(), compression=None) as client:
        served.server.should_exit = True
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
