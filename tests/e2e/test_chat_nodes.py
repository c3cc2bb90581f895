"""Chat across two real scaled processes: routing through Redis, ordering, kill -9 and resume."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.test_processes import signup

pytestmark = pytest.mark.slow


def ws_url(node: Any, token: str) -> str:
    return f"ws://127.0.0.1:{node.port}/v1/ws?token={token}"


async def events_until(
    ws: ClientConnection, seqs: list[int], last: int, timeout: float = 20
) -> None:
    """Append the seq of every event frame to ``seqs`` until ``last`` arrived."""
    async with asyncio.timeout(timeout):
        while not seqs or seqs[-1] < last:
            frame = json.loads(await ws.recv())
            if frame["type"] == "event":
                seqs.append(frame["seq"])


async def send_all(
    ws: ClientConnection, channel: str, prefix: str, n: int, *, text: str = "", pause: float = 0.002
) -> None:
    """``n`` sends of ``text`` (default: the message's own id), ``pause`` seconds apart."""
    for i in range(n):
        frame = {"type": "send", "channel_id": channel, "client_msg_id": f"{prefix}{i}",
                 "text": text or f"{prefix} {i}"}  # fmt: skip
        await ws.send(json.dumps(frame))
        if pause:
            await asyncio.sleep(pause)


def two_nodes(node_factory: Any, redis_url: str, database_url: str) -> tuple[Any, Any]:
    """Two scaled ``fanout serve`` processes sharing one Redis and one database, started."""
    env = {"FANOUT_REDIS_URL": redis_url, "FANOUT_DATABASE_URL": database_url}
    return node_factory("serve", env=env).start(), node_factory("serve", env=env).start()


def group_of(node: Any, users: list[tuple[str, str]]) -> str:
    with node.client() as http:
        made = http.post(
            "/v1/channels",
            json={"kind": "group", "name": "both", "member_ids": [u for u, _ in users[1:]]},
            headers={"Authorization": f"Bearer {users[0][1]}"},
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])


async def test_a_group_across_two_nodes_sees_one_order_without_gaps(
    node_factory: Any, clean_redis_url: str, fresh_database_url: str
) -> None:
    a, b = two_nodes(node_factory, clean_redis_url, fresh_database_url)
    with a.client() as http:
        users = [signup(http, name) for name in ("ann", "bob", "cyd", "dan")]
    channel = group_of(a, users)
    (_, t_ann), (_, t_bob), (_, t_cyd), (_, t_dan) = users
    async with (
        connect(ws_url(a, t_ann)) as ann,
        connect(ws_url(b, t_bob)) as bob,
        connect(ws_url(a, t_cyd)) as cyd,
        connect(ws_url(b, t_dan)) as dan,
    ):
        for ws in (ann, bob, cyd, dan):
            await ws.send(json.dumps({"type": "resume", "channels": {channel: 0}}))
        # Two senders on two processes at once: every member sees 1..200 in order.
        seen: dict[str, list[int]] = {name: [] for name in ("ann", "bob", "cyd", "dan")}
        await asyncio.gather(
            send_all(ann, channel, "a", 100),
            send_all(dan, channel, "d", 100),
            *(
                events_until(ws, seen[name], 200)
                for name, ws in (("ann", ann), ("bob", bob), ("cyd", cyd), ("dan", dan))
            ),
        )
        for name, seqs in seen.items():
            assert seqs == list(range(1, 201)), (name, seqs[:20])
    assert a.stop() and b.stop()


async def test_kill_9_a_node_and_resume_on_the_other_loses_and_repeats_nothing(
    node_factory: Any, clean_redis_url: str, fresh_database_url: str
) -> None:
    a, b = two_nodes(node_factory, clean_redis_url, fresh_database_url)
    with a.client() as http:
        users = [signup(http, name) for name in ("ann", "bob")]
    channel = group_of(a, users)
    (_, t_ann), (_, t_bob) = users
    total = 300
    seen: list[int] = []
    async with connect(ws_url(a, t_ann)) as ann:
        sending = asyncio.create_task(send_all(ann, channel, "m", total))
        bob = await connect(ws_url(b, t_bob))
        await bob.send(json.dumps({"type": "resume", "channels": {channel: 0}}))
        with pytest.raises((ConnectionClosed, TimeoutError)):
            async with asyncio.timeout(20):
                while True:
                    frame = json.loads(await bob.recv())
                    if frame["type"] == "event":
                        seen.append(frame["seq"])
                        if len(seen) == 60:
                            b.kill()  # mid-flow: no shutdown code runs on B
        await bob.close()
        assert 60 <= len(seen) < total
        async with connect(ws_url(a, t_bob)) as again:
            await again.send(json.dumps({"type": "resume", "channels": {channel: seen[-1]}}))
            await events_until(again, seen, total)
        await sending
    assert seen == list(range(1, total + 1))  # no gap, no duplicate
    with a.client() as http:
        page = http.get(
            f"/v1/channels/{channel}/events",
            params={"after_seq": total - 1},
            headers={"Authorization": f"Bearer {t_bob}"},
        )
        assert [e["seq"] for e in page.json()["items"]] == [total]
    assert a.stop()


def test_http_and_ws_agree(node_factory: Any, tmp_path: Any) -> None:
    """Embedded: an HTTP send reaches a WebSocket client of the same process."""
    node = node_factory("serve", env={"FANOUT_DATA_DIR": str(tmp_path / "d")}).start()
    with node.client() as http:
        users = [signup(http, name) for name in ("ann", "bob")]
    channel = group_of(node, users)

    async def run() -> list[dict[str, Any]]:
        async with connect(ws_url(node, users[1][1])) as bob:
            await bob.send(json.dumps({"type": "ping"}))
            assert json.loads(await bob.recv())["type"] == "pong"  # attached: events follow
            async with httpx.AsyncClient(base_url=node.url) as http:
                r = await http.post(
                    f"/v1/channels/{channel}/messages",
                    json={"client_msg_id": "1", "text": "hi"},
                    headers={"Authorization": f"Bearer {users[0][1]}"},
                )
                assert r.status_code == 201
            frames = []
            async with asyncio.timeout(10):
                while not any(f["type"] == "event" for f in frames):
                    frames.append(json.loads(await bob.recv()))
            return frames

    frames = asyncio.run(run())
    assert [f["seq"] for f in frames if f["type"] == "event"] == [1]
    assert node.stop(), node.output()


async def test_a_client_that_stops_reading_is_cut_off_and_its_neighbour_is_not(
    node_factory: Any, tmp_path: Any
) -> None:
    """Over a real socket: the slow reader's queue fills and the server closes it; the same
    user's other device, reading, gets every event in order."""
    env = {"FANOUT_DATA_DIR": str(tmp_path / "d"), "FANOUT_CHAT_QUEUE_FRAMES": "50"}
    node = node_factory("serve", env=env).start()
    with node.client() as http:
        users = [signup(http, name) for name in ("ann", "bob")]
    channel = group_of(node, users)
    (_, t_ann), (_, t_bob) = users
    total, text = 1500, "x" * 3900
    async with (
        connect(ws_url(node, t_ann), max_queue=None) as ann,
        connect(ws_url(node, t_bob), max_queue=4) as slow,  # never read: TCP fills up
        connect(ws_url(node, t_bob), max_queue=None) as fast,
    ):
        for ws in (ann, slow):  # a pong comes once the server attached the connection
            await ws.send(json.dumps({"type": "ping"}))
            while json.loads(await ws.recv())["type"] != "pong":
                pass
        await fast.send(json.dumps({"type": "resume", "channels": {channel: 0}}))
        seqs: list[int] = []

        async def drain_ann() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(60):
                    while True:
                        await ann.recv()

        reader = asyncio.create_task(drain_ann())
        await asyncio.gather(
            send_all(ann, channel, "f", total, text=text, pause=0),
            events_until(fast, seqs, total, timeout=60),
        )
        reader.cancel()
        assert seqs == list(range(1, total + 1))
        with pytest.raises(ConnectionClosed) as closed:  # read what was buffered, then the end
            async with asyncio.timeout(30):
                while True:
                    await slow.recv()
        code = closed.value.rcvd.code if closed.value.rcvd else None
        assert code in (4408, None)  # 4408, or cut without a close frame when fully congested
    assert node.stop(), node.output()
