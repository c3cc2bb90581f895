"""The ASGI app with its lifespan, on every backend, driven through httpx."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from fanout.accounts.passwords import PasswordHasher
from fanout.api.app import create_app, uvicorn_options
from fanout.bootstrap import Platform
from fanout.core.config import Settings

API_BACKENDS = ["sqlite", "scaled"]
AppFactory = Callable[..., Awaitable[httpx.AsyncClient]]
_APPS: weakref.WeakKeyDictionary[httpx.AsyncClient, ASGIApp] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[None]:
    """Drive the ASGI lifespan protocol around a block (httpx's transport does not)."""
    sent: list[dict[str, Any]] = []
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    started, stopped = asyncio.Event(), asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"].startswith("lifespan.startup"):
            started.set()
        if message["type"].startswith("lifespan.shutdown"):
            stopped.set()

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    await started.wait()
    if sent[-1]["type"] == "lifespan.startup.failed":
        await task
        raise RuntimeError(sent[-1].get("message", "startup failed"))
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await stopped.wait()
        await task


@contextlib.asynccontextmanager
async def served(app: ASGIApp, **overrides: Any) -> AsyncIterator[int]:
    """``app`` served by uvicorn in this loop, with ``fanout serve``'s options (and
    ``overrides`` of uvicorn settings): the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    options = {**uvicorn_options(app), "loop": "none", **overrides}  # this test's loop
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # startup failed: its error
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
def transport() -> str:
    """How test clients reach the app: ``asgi`` (straight in), or ``http`` — a real uvicorn
    server run as ``fanout serve`` runs it. A module parametrizes ``transport`` to get both."""
    return "asgi"


@pytest.fixture
def server_options() -> dict[str, Any]:
    """uvicorn settings that differ from ``fanout serve``'s under ``transport=http`` (a test
    parametrizes ``server_options`` to change them)."""
    return {}


@pytest.fixture(params=API_BACKENDS)
async def make_client(
    request: pytest.FixtureRequest, tmp_path: Path, transport: str, server_options: dict[str, Any]
) -> AsyncIterator[AppFactory]:
    """``await make_client(**settings)``: a client of a fresh app on this test's backend."""
    base: dict[str, Any] = {"data_dir": tmp_path / "data", "rate_limit_per_s": 0.0}
    if request.param == "scaled":
        base["redis_url"] = request.getfixturevalue("clean_redis_url")
        base["database_url"] = request.getfixturevalue("fresh_database_url")
    async with contextlib.AsyncExitStack() as stack:

        async def make(build: dict[str, Any] | None = None, **overrides: Any) -> httpx.AsyncClient:
            settings = Settings(**{**base, **overrides})
            app = create_app(settings, hasher=PasswordHasher.fast_for_tests(), **(build or {}))
            if transport == "http":
                port = await stack.enter_async_context(served(app, **server_options))
                client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")
            else:
                await stack.enter_async_context(running(app))
                asgi = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
                client = httpx.AsyncClient(transport=asgi, base_url="http://testserver")
            await stack.enter_async_context(client)
            _APPS[client] = app
            return client

        yield make


@pytest.fixture
async def client(make_client: AppFactory) -> httpx.AsyncClient:
    return await make_client()


async def register(
    client: httpx.AsyncClient, username: str, password: str = "correct horse"
) -> tuple[str, str]:
    """Create a user and log in: (user_id, token)."""
    created = await client.post("/v1/users", json={"username": username, "password": password})
    assert created.status_code == 201, created.text
    session = await client.post("/v1/sessions", json={"username": username, "password": password})
    assert session.status_code == 201, session.text
    return created.json()["id"], session.json()["token"]


def platform_of(client: httpx.AsyncClient) -> Platform:
    """The running platform behind a test client (through the middleware layers)."""
    app: Any = _APPS.get(client) or client._transport.app  # type: ignore[attr-defined]
    while not hasattr(app, "state"):
        app = app.app
    platform: Platform = app.state.platform
    return platform
