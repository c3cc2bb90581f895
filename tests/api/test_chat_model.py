"""Property test: random interleavings of send (with retries), edit, delete, read, disconnect
and resume through the real gateway, checked against a reference model of the channel's events.

The model is the list of events the channel must hold: a new client_msg_id appends a message,
a retried one appends nothing, an edit or delete by the sender appends an event, anything by
someone else appends nothing. Every client must see the events it receives in strictly
increasing seq order without gaps since it last resumed, and after a final resume each client's
view equals the model exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.accounts.passwords import PasswordHasher
from fanout.api.app import create_app
from fanout.core.config import Settings
from tests.api.conftest import register, running
from tests.api.wskit import WsClient

USERS = 2
SETTLE_S = 10.0  # the longest a delivery may take before the test calls it lost
RUNS = itertools.count()
ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, USERS - 1), st.integers(0, 5)),
        st.tuples(st.just("edit"), st.integers(0, USERS - 1), st.integers(0, 5)),
        st.tuples(st.just("delete"), st.integers(0, USERS - 1), st.integers(0, 5)),
        st.tuples(st.just("read"), st.integers(0, USERS - 1), st.integers(0, 12)),
        st.tuples(st.just("drop"), st.integers(0, USERS - 1), st.just(0)),
        st.tuples(st.just("resume"), st.integers(0, USERS - 1), st.just(0)),
    ),
    max_size=25,
)


class Client:
    """One user's device: what it has seen of the channel, by seq."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.ws: WsClient | None = None
        self.view: dict[int, dict[str, Any]] = {}
        self.last = 0  # highest seq seen, the resume point

    def take(self, frames: list[dict[str, Any]]) -> None:
        for frame in frames:
            if frame["type"] != "event":
                continue
            assert frame["seq"] == self.last + 1, (frame["seq"], self.last)  # order, no gap
            self.view[frame["seq"]] = frame
            self.last = frame["seq"]


class Scenario:
    """The channel, its clients and the reference model, driven one step at a time."""

    def __init__(self, app: Any, http: httpx.AsyncClient, channel: str, tokens: list[str]) -> None:
        self.app, self.http, self.channel = app, http, channel
        self.clients = [Client(t) for t in tokens]
        self.model: list[tuple[str, str, str]] = []  # (kind, message id, text)
        self.sent: dict[tuple[int, int], str] = {}  # (sender, cmid) → message id
        self.texts: dict[str, str] = {}
        self.deleted: set[str] = set()

    async def connect(self, c: Client) -> None:
        c.ws = await WsClient.open(self.app, c.token)
        await c.ws.send({"type": "resume", "channels": {self.channel: c.last}})

    async def settle(self) -> None:
        """Take what each connected client has been sent: until it holds as many events as the
        model (on scaled, deliveries cross the outbox and Redis, which a loaded machine can
        pause longer than any fixed quiet period), then a short quiet catches anything extra."""
        deadline = asyncio.get_running_loop().time() + SETTLE_S
        for c in self.clients:
            if c.ws is None:
                continue
            while len(c.view) < len(self.model) and asyncio.get_running_loop().time() < deadline:
                c.take(await c.ws.quiet(0.05))
            assert len(c.view) >= len(self.model), f"events not delivered within {SETTLE_S} s"
            c.take(await c.ws.quiet(0.05))

    def headers(self, who: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.clients[who].token}"}

    async def send(self, who: int, cmid: int) -> None:
        text = f"t{who}{cmid}"
        r = await self.http.post(
            f"/v1/channels/{self.channel}/messages",
            json={"client_msg_id": f"c{cmid}", "text": text},
            headers=self.headers(who),
        )
        if (who, cmid) in self.sent:
            assert r.status_code == 200 and r.json()["id"] == self.sent[(who, cmid)]
            return
        assert r.status_code == 201
        mid = r.json()["id"]
        self.sent[(who, cmid)], self.texts[mid] = mid, text
        self.model.append(("message", mid, text))

    def pick(self, index: int) -> tuple[int, str]:
        (sender, _), mid = sorted(self.sent.items())[index % len(self.sent)]
        return sender, mid

    async def edit(self, who: int, index: int) -> None:
        sender, mid = self.pick(index)
        text = f"e{len(self.model)}"
        r = await self.http.patch(
            f"/v1/channels/{self.channel}/messages/{mid}",
            json={"text": text},
            headers=self.headers(who),
        )
        expected = 403 if sender != who else 410 if mid in self.deleted else 200
        assert r.status_code == expected
        if expected == 200:
            self.texts[mid] = text
            self.model.append(("edit", mid, text))

    async def delete(self, who: int, index: int) -> None:
        sender, mid = self.pick(index)
        r = await self.http.delete(
            f"/v1/channels/{self.channel}/messages/{mid}", headers=self.headers(who)
        )
        assert r.status_code == (403 if sender != who else 204)
        if sender == who and mid not in self.deleted:
            self.deleted.add(mid)
            self.model.append(("delete", mid, ""))

    async def step(self, op: str, who: int, arg: int) -> None:
        me = self.clients[who]
        if op == "send":
            await self.send(who, arg)
        elif op == "edit" and self.sent:
            await self.edit(who, arg)
        elif op == "delete" and self.sent:
            await self.delete(who, arg)
        elif op == "read":
            r = await self.http.post(
                f"/v1/channels/{self.channel}/read", json={"seq": arg}, headers=self.headers(who)
            )
            assert r.status_code == 204
        elif op == "drop" and me.ws is not None:
            me.take(await me.ws.quiet(0.05))
            await me.ws.close()
            me.ws = None
        elif op == "resume" and me.ws is None:
            await self.connect(me)
        await self.settle()

    async def check(self) -> None:
        for c in self.clients:
            if c.ws is None:
                await self.connect(c)
        await self.settle()
        for c in self.clients:
            got = [
                (f["kind"], f["message"]["id"], f["message"]["text"])
                for _, f in sorted(c.view.items())
            ]
            assert got == self.model
            assert c.ws is not None
            await c.ws.close()


async def scenario(steps: list[tuple[str, int, int]], backend: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            Settings(data_dir=Path(tmp), rate_limit_per_s=0.0, **backend),
            hasher=PasswordHasher.fast_for_tests(),
        )
        transport = httpx.ASGITransport(app=app)
        async with (
            running(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as http,
        ):
            run_id = next(RUNS)  # scaled examples share one database: new users each time
            users = [await register(http, f"user{run_id}x{i}") for i in range(USERS)]
            made = await http.post(
                "/v1/channels",
                json={"kind": "dm", "member_ids": [users[1][0]]},
                headers={"Authorization": f"Bearer {users[0][1]}"},
            )
            run = Scenario(app, http, made.json()["id"], [t for _, t in users])
            for c in run.clients:
                await run.connect(c)
            for op, who, arg in steps:
                await run.step(op, who, arg)
            await run.check()


@pytest.fixture(params=["sqlite", "scaled"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite":
        return {}
    return {
        "redis_url": request.getfixturevalue("clean_redis_url"),
        "database_url": request.getfixturevalue("fresh_database_url"),
    }


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=ops)
def test_every_client_sees_the_model_in_order(
    backend: dict[str, Any], steps: list[tuple[str, int, int]]
) -> None:
    asyncio.run(scenario(steps, backend))
