"""The hub's ordering: events that overtake each other between gateways are put back in order,
and a missing one is read from the store, so a connection never sees a gap or a reordering."""

from __future__ import annotations

from typing import Any

from fanout.accounts.model import UserId
from fanout.chat.model import ChannelId
from tests.api.conftest import platform_of, register
from tests.api.wskit import WsClient, app_of


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def ann_and_bobs_dm(client: Any) -> tuple[str, str, str, str]:
    """A DM between two new users: its id, ann's token, bob's id and bob's token."""
    (_a, ta), (b, tb) = [await register(client, n) for n in ("ann", "bob")]
    made = await client.post("/v1/channels", json={"kind": "dm", "member_ids": [b]},
                             headers=auth(ta))  # fmt: skip
    return made.json()["id"], ta, b, tb


async def committed_quietly(client: Any, channel: str, token: str, n: int) -> list[Any]:
    """Commit ``n`` messages without publishing them; their events, in seq order."""
    platform = platform_of(client)
    hub, platform.chat.live = platform.chat.live, None
    try:
        for i in range(n):
            r = await client.post(
                f"/v1/channels/{channel}/messages",
                json={"client_msg_id": f"q{i}", "text": f"q{i}"},
                headers=auth(token),
            )
            assert r.status_code == 201
    finally:
        platform.chat.live = hub
    events, _ = await platform.chat.stores.messages.events(ChannelId(int(channel)), 0, 100)
    return events


async def test_overtaken_and_missing_events_arrive_in_order_without_gaps(make_client: Any) -> None:
    client = await make_client()
    channel, ta, b, tb = await ann_and_bobs_dm(client)
    bob = await (await WsClient.open(app_of(client), tb)).ready()
    hub = platform_of(client).hub
    events = await committed_quietly(client, channel, ta, 4)
    await hub.event(events[1])  # seq 2 overtakes seq 1: held, not delivered
    assert [f for f in await bob.quiet(0.05) if f["type"] == "event"] == []
    await hub.event(events[0])
    await hub.event(events[3])  # seq 4 with seq 3 never published: read from the store
    got = [f["seq"] for f in await bob.quiet(0.6) if f["type"] == "event"]
    assert got == [1, 2, 3, 4]
    await hub.event(events[2])  # the late copy of seq 3 is a duplicate now
    assert [f for f in await bob.quiet(0.1) if f["type"] == "event"] == []
    assert UserId(int(b)) in hub._users
    await bob.close()


async def test_an_event_arriving_past_a_gap_while_the_store_is_read_waits_for_that_gap(
    make_client: Any, monkeypatch: Any
) -> None:
    client = await make_client()
    channel, ta, _b, tb = await ann_and_bobs_dm(client)
    bob = await (await WsClient.open(app_of(client), tb)).ready()
    hub = platform_of(client).hub
    events = await committed_quietly(client, channel, ta, 5)
    messages = platform_of(client).chat.stores.messages
    read = messages.events

    async def racing(channel_id: ChannelId, after_seq: int, limit: int) -> Any:
        found = await read(channel_id, after_seq, limit)  # seqs 1-2: what was held at the start
        if after_seq == 0:
            await hub.event(events[4])  # seq 5 arrives meanwhile; 3 and 4 never do
        return found

    monkeypatch.setattr(messages, "events", racing)
    await hub.event(events[1])  # seq 2 overtakes seq 1: held, repaired from the store
    got = [f["seq"] for f in await bob.quiet(1.0) if f["type"] == "event"]
    assert got == [1, 2, 3, 4, 5]
    assert ChannelId(int(channel)) not in hub.order.held
    await bob.close()


async def test_a_held_event_behind_the_last_members_leave_leaves_no_stale_state(
    make_client: Any,
) -> None:
    client = await make_client()
    (_a, ta), (b, tb) = [await register(client, n) for n in ("ann", "bob")]
    made = await client.post(
        "/v1/channels", json={"kind": "group", "name": "g", "member_ids": [b]}, headers=auth(ta)
    )
    channel = made.json()["id"]
    bob = await (await WsClient.open(app_of(client), tb)).ready()
    platform = platform_of(client)
    hub, platform.chat.live = platform.chat.live, None
    try:  # seq 1 bob leaves, seq 2 a message he must not get
        await platform.chat.remove_member(UserId(int(b)), ChannelId(int(channel)), UserId(int(b)))
    finally:
        platform.chat.live = hub
    events = await committed_quietly(client, channel, ta, 1)
    await hub.event(events[1])  # overtakes the leave: held
    await hub.event(events[0])  # the leave: bob was the last member here
    got = [(f["seq"], f["kind"]) for f in await bob.quiet(0.4) if f["type"] == "event"]
    assert got == [(1, "leave")]
    real_hub = platform_of(client).hub
    assert ChannelId(int(channel)) not in real_hub.order.held
    assert ChannelId(int(channel)) not in real_hub.order.next
    await bob.close()


async def test_events_committed_while_a_gateway_subscribes_arrive_without_a_later_event(
    make_client: Any, monkeypatch: Any
) -> None:
    client = await make_client()
    channel, ta, _b, tb = await ann_and_bobs_dm(client)
    hub = platform_of(client).hub
    subscribe = hub._router.subscribe

    async def racing(topics: list[str]) -> None:
        if f"c{channel}" in topics:  # committed after bob's channels were read, published to
            r = await client.post(  # a topic this process does not listen to yet
                f"/v1/channels/{channel}/messages",
                json={"client_msg_id": "race", "text": "in between"},
                headers=auth(ta),
            )
            assert r.status_code == 201
        await subscribe(topics)

    monkeypatch.setattr(hub._router, "subscribe", racing)
    bob = await WsClient.open(app_of(client), tb)
    await bob.send({"type": "ping"})  # not ready(): it would drop an event that beat the pong
    got = [f["seq"] for f in await bob.quiet(1.5) if f["type"] == "event"]
    assert got == [1]  # nothing came after it to reveal the gap: the hub looked by itself
    assert hub.order.next[ChannelId(int(channel))] == 2
    await bob.close()
