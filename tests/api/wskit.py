"""A WebSocket client that speaks ASGI to the app directly (no network), for API tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from starlette.types import ASGIApp

from tests.api.conftest import platform_of

__all__ = ["WsClient", "app_of"]


def app_of(client: httpx.AsyncClient) -> ASGIApp:
    platform_of(client)  # the app is running
    app: ASGIApp = client._transport.app  # type: ignore[attr-defined]
    return app


class WsClient:
    """``await WsClient.open(app, token)``; ``send``/``recv`` JSON frames; ``close_code``."""

    def __init__(self, app: ASGIApp, token: str, *, stall: asyncio.Event | None = None) -> None:
        self._app = app
        self._token = token
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.accepted = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._stall = stall  # until it is set, the server's sends block (a slow peer)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, app: ASGIApp, token: str, **options: Any) -> WsClient:
        ws = cls(app, token, **options)
        scope = {
            "type": "websocket", "asgi": {"version": "3.0"}, "path": "/v1/ws",
            "raw_path": b"/v1/ws", "query_string": f"token={token}".encode(), "headers": [],
            "client": ("203.0.113.9", 4444), "server": ("testserver", 80), "scheme": "ws",
            "subprotocols": [], "root_path": "",
        }  # fmt: skip
        await ws._inbox.put({"type": "websocket.connect"})
        ws._task = asyncio.create_task(app(scope, ws._receive, ws._send))
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(ws.accepted.wait()), asyncio.ensure_future(ws.closed.wait())],
            timeout=5,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert done, "the server neither accepted nor closed"
        return ws

    async def _receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.accept":
            self.accepted.set()
        elif message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            self.closed.set()
        elif message["type"] == "websocket.send":
            if self._stall is not None:
                await self._stall.wait()
            await self.frames.put(json.loads(message["text"]))

    async def ready(self) -> WsClient:
        """Wait until the server attached this connection (it answers frames only after)."""
        await self.send({"type": "ping"})
        await self.recv_type("pong")
        return self

    async def send(self, frame: Any) -> None:
        await self._inbox.put(
            {
                "type": "websocket.receive",
                "text": frame if isinstance(frame, str) else json.dumps(frame),
            }
        )

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def recv_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame of type ``kind`` (others before it are dropped)."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == kind:
                return frame

    async def quiet(self, seconds: float = 0.2) -> list[dict[str, Any]]:
        """Every frame that arrives within ``seconds``."""
        got = []
        try:
            while True:
                got.append(await asyncio.wait_for(self.frames.get(), seconds))
        except TimeoutError:
            return got

    async def close(self) -> None:
        await self._inbox.put({"type": "websocket.disconnect", "code": 1000})
        if self._task is not None:
            await asyncio.wait_for(asyncio.gather(self._task, return_exceptions=True), 5)
