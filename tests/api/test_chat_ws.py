"""The WebSocket gateway (API.md "WebSocket"): every frame type and error path, every backend."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from fanout.chat import presence as presence_module
from tests.api.conftest import register
from tests.api.wskit import WsClient, app_of


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def setup(client: httpx.AsyncClient, kind: str = "dm") -> tuple[list[tuple[str, str]], str]:
    users = [await register(client, name) for name in ("ann", "bob", "cyd")]
    (_, ta), (b, _), (c, _) = users
    others = [b] if kind == "dm" else [b, c]
    made = await client.post(
        "/v1/channels", json={"kind": kind, "name": "g", "member_ids": others}, headers=auth(ta)
    )
    return users, made.json()["id"]


async def test_a_bad_token_is_closed_with_4401(make_client: Any) -> None:
    client = await make_client()
    ws = await WsClient.open(app_of(client), "not-a-token")
    await asyncio.wait_for(ws.closed.wait(), 5)
    assert ws.close_code == 4401


async def test_send_reaches_every_device_of_every_member_in_order(make_client: Any) -> None:
    client = await make_client()
    users, ch = await setup(client, "group")
    (_a, ta), (_b, tb), (_c, tc) = users
    app = app_of(client)
    ann, bob1, bob2, cyd = [await WsClient.open(app, t) for t in (ta, tb, tb, tc)]
    for ws in (ann, bob1, bob2, cyd):
        await ws.send({"type": "ping"})
        await ws.recv_type("pong")
    for i in range(20):
        await ann.send(
            {"type": "send", "channel_id": ch, "client_msg_id": f"c{i}", "text": f"t{i}"}
        )
    mine: list[dict[str, Any]] = []
    while sum(f["type"] in ("sent", "event") for f in mine) < 40:
        mine.append(await ann.recv())
    sent = [f for f in mine if f["type"] == "sent"]
    assert [s["message"]["seq"] for s in sent] == list(range(1, 21))
    assert sent[0]["client_msg_id"] == "c0"
    for ws in (ann, bob1, bob2, cyd):
        got = [f for f in (mine if ws is ann else await ws.quiet(0.3)) if f["type"] == "event"]
        assert [e["seq"] for e in got] == list(range(1, 21)), got[:3]
        assert got[4]["message"]["text"] == "t4" and got[4]["channel_id"] == ch
    # A retried client_msg_id answers with the stored message and no new event.
    await ann.send({"type": "send", "channel_id": ch, "client_msg_id": "c3", "text": "again"})
    assert (await ann.recv_type("sent"))["message"]["seq"] == 4
    assert not [f for f in await bob1.quiet(0.2) if f["type"] == "event"]
    for ws in (ann, bob1, bob2, cyd):
        await ws.close()


async def test_bad_frames_get_errors_and_the_connection_stays_up(make_client: Any) -> None:
    client = await make_client()
    users, ch = await setup(client)
    (_, ta), _, (_, tc) = users
    app = app_of(client)
    ann, cyd = await WsClient.open(app, ta), await WsClient.open(app, tc)
    await ann.send("{not json")
    assert (await ann.recv_type("error"))["code"] == "malformed_json"
    await ann.send({"type": "teleport"})
    assert (await ann.recv_type("error"))["code"] == "invalid"
    await ann.send({"type": "send", "channel_id": ch, "client_msg_id": "big", "text": "x" * 4001})
    error = await ann.recv_type("error")
    assert error["code"] == "invalid"
    await ann.send({"type": "send", "channel_id": str(2**63), "client_msg_id": "h", "text": "x"})
    assert (await ann.recv_type("error"))["code"] == "invalid"
    await ann.send({"type": "resume", "channels": {"9" * 19: 0}})
    assert (await ann.recv_type("error"))["code"] == "invalid"
    await ann.send([1, 2, 3])
    assert (await ann.recv_type("error"))["code"] == "invalid"
    await ann.send("x" * 70_000)
    assert (await ann.recv_type("error"))["code"] == "too_large"
    # A non-member cannot post, resume, read or type in the channel.
    await cyd.send({"type": "send", "channel_id": ch, "client_msg_id": "n", "text": "hi"})
    error = await cyd.recv_type("error")
    assert error["code"] == "forbidden" and error["client_msg_id"] == "n"
    await cyd.send({"type": "resume", "channels": {ch: 0}})
    assert (await cyd.recv_type("error"))["code"] == "forbidden"
    await cyd.send({"type": "read", "channel_id": ch, "seq": 1})
    assert (await cyd.recv_type("error"))["code"] == "forbidden"
    await cyd.send({"type": "send", "channel_id": "12345", "client_msg_id": "n", "text": "hi"})
    assert (await cyd.recv_type("error"))["code"] == "not_found"
    await ann.send({"type": "ping"})
    assert (await ann.recv_type("pong")) == {"type": "pong"}
    assert ann.close_code is None and cyd.close_code is None
    await ann.close()
    await cyd.close()


async def test_resume_replays_missed_events_in_order_or_says_resync(make_client: Any) -> None:
    client = await make_client(chat_replay_cap=5)
    users, ch = await setup(client)
    (_, ta), (_, tb), _ = users
    for i in range(3):
        r = await client.post(
            f"/v1/channels/{ch}/messages",
            json={"client_msg_id": f"m{i}", "text": f"m{i}"},
            headers=auth(ta),
        )
    mid = r.json()["id"]
    await client.patch(f"/v1/channels/{ch}/messages/{mid}", json={"text": "m2!"}, headers=auth(ta))
    await client.delete(f"/v1/channels/{ch}/messages/{mid}", headers=auth(ta))
    bob = await WsClient.open(app_of(client), tb)
    await bob.send({"type": "resume", "channels": {ch: 1}})
    got = [f for f in await bob.quiet(0.3) if f["type"] == "event"]
    assert [(e["seq"], e["kind"]) for e in got] == [
        (2, "message"),
        (3, "message"),
        (4, "edit"),
        (5, "delete"),
    ]
    await bob.send({"type": "resume", "channels": {ch: 5}})
    assert [f for f in await bob.quiet(0.2) if f["type"] == "event"] == []
    for i in range(5):
        await client.post(
            f"/v1/channels/{ch}/messages",
            json={"client_msg_id": f"n{i}", "text": "n"},
            headers=auth(ta),
        )
    late = await WsClient.open(app_of(client), tb)
    await late.send({"type": "resume", "channels": {ch: 0}})
    assert await late.recv_type("resync") == {"type": "resync", "channel_id": ch, "after_seq": 0}
    await bob.close()
    await late.close()


async def test_receipts_sync_devices_and_reach_the_other_member(make_client: Any) -> None:
    client = await make_client()
    users, ch = await setup(client)
    (_a, ta), (b, tb), _ = users
    app = app_of(client)
    ann, bob1, bob2 = (
        await WsClient.open(app, ta),
        await WsClient.open(app, tb),
        await WsClient.open(app, tb),
    )
    for ws in (ann, bob1, bob2):
        await ws.send({"type": "ping"})
        await ws.recv_type("pong")
    await ann.send({"type": "send", "channel_id": ch, "client_msg_id": "1", "text": "hi"})
    await bob1.recv_type("event")
    await bob1.send({"type": "delivered", "channel_id": ch, "seq": 1})
    await bob1.send({"type": "read", "channel_id": ch, "seq": 1})
    want = [
        {"type": "receipt", "channel_id": ch, "user_id": b, "kind": k, "seq": 1}
        for k in ("delivered", "read")
    ]
    for ws in (ann, bob2):
        assert [f for f in await ws.quiet(0.3) if f["type"] == "receipt"] == want
    await bob2.send({"type": "read", "channel_id": ch, "seq": 1})  # not a move: nothing sent
    assert [f for f in await ann.quiet(0.2) if f["type"] == "receipt"] == []
    for ws in (ann, bob1, bob2):
        await ws.close()


async def test_typing_is_relayed_to_others_and_throttled(make_client: Any) -> None:
    client = await make_client()
    users, ch = await setup(client)
    (a, ta), (_, tb), _ = users
    app = app_of(client)
    ann, bob = await WsClient.open(app, ta), await WsClient.open(app, tb)
    await ann.ready()
    await bob.ready()
    for _ in range(3):
        await ann.send({"type": "typing", "channel_id": ch})
    assert [f for f in await bob.quiet(0.3) if f["type"] == "typing"] == [
        {"type": "typing", "channel_id": ch, "user_id": a}
    ]
    assert [f for f in await ann.quiet(0.1) if f["type"] == "typing"] == []
    await ann.close()
    await bob.close()


async def test_presence_goes_to_dm_peers_and_subscribers_debounced(
    make_client: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(presence_module, "OFFLINE_DEBOUNCE_S", 0.2)
    client = await make_client()
    users, _ = await setup(client)
    (_a, ta), (b, tb), (_c, tc) = users
    app = app_of(client)
    ann = await WsClient.open(app, ta)
    cyd = await WsClient.open(app, tc)
    for ws in (ann, cyd):  # a pong comes once the connection is attached
        await ws.send({"type": "ping"})
        await ws.recv_type("pong")
    await cyd.send({"type": "presence_subscribe", "user_ids": [b]})
    assert (await cyd.recv_type("presence"))["status"] == "offline"
    bob = await WsClient.open(app, tb)
    for ws in (ann, cyd):
        frame = await ws.recv_type("presence")
        assert (frame["user_id"], frame["status"]) == (b, "online")
    await bob.close()
    bob = await WsClient.open(app, tb)  # back within the debounce: nobody hears of it
    assert [f for f in await ann.quiet(0.4) if f["type"] == "presence"] == []
    await bob.close()
    frame = await ann.recv_type("presence", timeout=3)
    assert (frame["user_id"], frame["status"]) == (b, "offline")
    await ann.close()
    await cyd.close()


async def test_a_slow_connection_is_closed_and_its_neighbours_carry_on(make_client: Any) -> None:
    client = await make_client(chat_queue_frames=10)
    users, ch = await setup(client)
    (_, ta), (_, tb), _ = users
    app = app_of(client)
    stalled = asyncio.Event()
    slow = await WsClient.open(app, tb, stall=stalled)
    fast = await WsClient.open(app, tb)
    await fast.send({"type": "ping"})
    await fast.recv_type("pong")
    for i in range(30):
        await client.post(
            f"/v1/channels/{ch}/messages",
            json={"client_msg_id": f"m{i}", "text": "x"},
            headers=auth(ta),
        )
    got = [f for f in await fast.quiet(0.5) if f["type"] == "event"]
    assert [e["seq"] for e in got] == list(range(1, 31))
    stalled.set()
    await asyncio.wait_for(slow.closed.wait(), 5)
    assert slow.close_code == 4408
    await fast.close()


async def test_a_flooding_connection_is_rate_limited_without_being_dropped(
    make_client: Any,
) -> None:
    client = await make_client(rate_limit_per_s=2.0)  # burst 10
    users, ch = await setup(client)
    (_a, ta), _, _ = users
    ann = await (await WsClient.open(app_of(client), ta)).ready()
    for i in range(15):
        await ann.send({"type": "send", "channel_id": ch, "client_msg_id": f"f{i}", "text": "x"})
    answers: list[dict[str, Any]] = []
    while sum(f["type"] in ("sent", "error") for f in answers) < 15:
        answers.append(await ann.recv())
    sent = [f for f in answers if f["type"] == "sent"]
    limited = [f for f in answers if f["type"] == "error"]
    assert len(sent) == 10 and len(limited) == 5
    assert {f["code"] for f in limited} == {"rate_limited"} and limited[0]["client_msg_id"]
    await ann.send({"type": "ping"})  # free, and the connection is still up
    assert (await ann.recv_type("pong")) == {"type": "pong"}
    await ann.close()


async def test_a_channel_created_while_connected_is_delivered_live(make_client: Any) -> None:
    client = await make_client()
    (_a, ta), (b, tb) = [await register(client, n) for n in ("ann", "bob")]
    app = app_of(client)
    ann = await (await WsClient.open(app, ta)).ready()
    bob = await (await WsClient.open(app, tb)).ready()
    made = await client.post(
        "/v1/channels", json={"kind": "dm", "member_ids": [b]}, headers=auth(ta)
    )
    ch = made.json()["id"]
    await ann.send({"type": "send", "channel_id": ch, "client_msg_id": "1", "text": "new here"})
    for ws in (ann, bob):
        frame = await ws.recv_type("event")
        assert (frame["channel_id"], frame["seq"]) == (ch, 1)
    await ann.close()
    await bob.close()


async def test_a_resume_on_a_live_connection_replays_what_it_asks_for(make_client: Any) -> None:
    client = await make_client()
    users, ch = await setup(client)
    (_a, ta), (_b, tb), _ = users
    bob = await (await WsClient.open(app_of(client), tb)).ready()
    for i in range(3):
        await client.post(
            f"/v1/channels/{ch}/messages",
            json={"client_msg_id": f"m{i}", "text": "x"},
            headers=auth(ta),
        )
    assert [f["seq"] for f in await bob.quiet(0.3) if f["type"] == "event"] == [1, 2, 3]
    await bob.send({"type": "resume", "channels": {ch: 1}})
    assert [f["seq"] for f in await bob.quiet(0.3) if f["type"] == "event"] == [2, 3]
    await bob.close()
