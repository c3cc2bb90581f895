"""What the gateway carries for other parts: offline members' notices, feed posts."""

from __future__ import annotations

import asyncio
from typing import Any

from fanout.core.events import NotifyRequest
from fanout.core.log import Topics
from tests.api.conftest import platform_of, register
from tests.api.wskit import WsClient, app_of


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def notify_requests(client: Any, want: int) -> list[NotifyRequest]:
    """The notify.requests records so far, once there are ``want`` (or after ~4 s)."""
    platform = platform_of(client)
    found: list[NotifyRequest] = []
    for attempt in range(200):  # the chat consumer (and, scaled, the outbox relay) run async
        found = []
        for partition in range(platform.log.partitions):
            records = await platform.log.read(
                Topics.NOTIFY_REQUESTS, f"probe{attempt}", "p", partition, 100
            )
            found += [NotifyRequest.decode(r.payload) for r in records]
        if len(found) >= want:
            break
        await asyncio.sleep(0.02)
    return sorted(found, key=lambda r: r.event_id)


async def test_offline_notices_follow_membership_changes(make_client: Any) -> None:
    client = await make_client()
    (_, ta), (b, tb), (c, _) = [await register(client, n) for n in ("ann", "bob", "cyd")]
    ch = (
        await client.post(
            "/v1/channels", json={"kind": "group", "name": "g", "member_ids": [b]}, headers=auth(ta)
        )
    ).json()["id"]
    bob = await (await WsClient.open(app_of(client), tb)).ready()

    async def say(cmid: str) -> None:
        r = await client.post(
            f"/v1/channels/{ch}/messages",
            json={"client_msg_id": cmid, "text": cmid},
            headers=auth(ta),
        )
        assert r.status_code == 201

    await say("everyone-here")  # bob is online: nobody to notify
    assert (await client.put(f"/v1/channels/{ch}/members/{c}", headers=auth(ta))).status_code == 204
    await say("cyd-away")  # seq 3: cyd joined (seq 2) and is offline
    assert (
        await client.delete(f"/v1/channels/{ch}/members/{c}", headers=auth(ta))
    ).status_code == 204
    await say("cyd-gone")
    found = await notify_requests(client, 2)
    assert [(r.event_id, r.recipient_ids) for r in found] == [(f"chat:{ch}:3", (int(c),))]
    await bob.close()


async def test_members_without_a_connection_get_one_notify_request(make_client: Any) -> None:
    client = await make_client()
    (_, ta), (b, tb), (c, _) = [await register(client, n) for n in ("ann", "bob", "cyd")]
    ch = (
        await client.post(
            "/v1/channels",
            json={"kind": "group", "name": "g", "member_ids": [b, c]},
            headers=auth(ta),
        )
    ).json()["id"]
    bob = await (await WsClient.open(app_of(client), tb)).ready()
    sent = await client.post(
        f"/v1/channels/{ch}/messages",
        json={"client_msg_id": "1", "text": "are you there?"},
        headers=auth(ta),
    )
    assert sent.status_code == 201
    found = await notify_requests(client, 1)
    assert len(found) == 1
    request = found[0]
    assert request.type == "chat_message" and request.recipient_ids == (int(c),)
    assert request.event_id == f"chat:{ch}:1" and request.data["preview"] == "are you there?"
    await bob.close()


async def test_a_new_post_reaches_online_followers_as_a_feed_post_frame(make_client: Any) -> None:
    client = await make_client()
    (a, ta), (_, tb) = [await register(client, n) for n in ("ann", "bob")]
    assert (await client.put(f"/v1/follows/{a}", headers=auth(tb))).status_code == 204
    bob = await (await WsClient.open(app_of(client), tb)).ready()
    made = await client.post("/v1/posts", json={"text": "hello followers"}, headers=auth(ta))
    frame = await bob.recv_type("feed_post", timeout=10)
    assert frame["post"]["id"] == made.json()["id"] and frame["post"]["text"] == "hello followers"
    await bob.close()
