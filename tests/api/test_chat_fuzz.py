"""Whatever a client sends to chat — HTTP bodies and queries, WebSocket frames — the answer is
never a 500 or an ``internal`` error, and the connection stays up for the next frame."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import register
from tests.api.test_fuzz import json_values
from tests.api.wskit import WsClient, app_of

ids = st.one_of(st.text(max_size=25), st.integers(), st.just(str(2**63)), st.just("0"))
frame_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["send", "resume", "read", "delivered", "typing", "ping", "presence_subscribe", "nope"]
        )
    },
    optional={
        "channel_id": ids,
        "client_msg_id": st.text(max_size=70),
        "text": st.text(max_size=50),
        "seq": st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
        "channels": st.dictionaries(st.text(max_size=21), st.integers(), max_size=3),
        "user_ids": st.lists(ids, max_size=3),
        "attachment_ids": st.lists(ids, max_size=3),
    },
)
messages = st.one_of(st.text(max_size=80), json_values.map(json.dumps), frame_like.map(json.dumps))
bodies = st.one_of(
    st.binary(max_size=120),
    json_values.map(lambda v: json.dumps(v).encode()),
    frame_like.map(lambda v: json.dumps(v).encode()),
)


def sample(strategy: Any, n: int) -> list[Any]:
    found: list[Any] = []

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


async def test_random_frames_never_break_the_gateway(make_client: Any) -> None:
    client = await make_client()
    (_a, ta), (b, _) = [await register(client, n) for n in ("ann", "bob")]
    await client.post(
        "/v1/channels",
        json={"kind": "dm", "member_ids": [b]},
        headers={"Authorization": f"Bearer {ta}"},
    )
    ws = await (await WsClient.open(app_of(client), ta)).ready()
    for text in sample(messages, 150):
        await ws.send(text)
        await ws.send({"type": "ping"})
        answers = []
        while not answers or answers[-1]["type"] != "pong":
            answers.append(await ws.recv())
        internal = [a for a in answers if a.get("code") == "internal"]
        assert internal == [], text
    assert ws.close_code is None
    await ws.close()


async def test_random_chat_bodies_never_produce_a_500(make_client: Any) -> None:
    client = await make_client()
    (_a, ta), (b, _) = [await register(client, n) for n in ("ann", "bob")]
    auth = {"Authorization": f"Bearer {ta}", "content-type": "application/json"}
    channel = (
        await client.post("/v1/channels", json={"kind": "dm", "member_ids": [b]}, headers=auth)
    ).json()["id"]
    paths = ["/v1/channels", f"/v1/channels/{channel}/messages", f"/v1/channels/{channel}/read"]
    failures = []
    for i, body in enumerate(sample(bodies, 120)):
        path = paths[i % len(paths)]
        response = await client.post(path, content=body, headers=auth)
        if response.status_code >= 500:
            failures.append((path, body, response.status_code))
    for query in sample(
        st.dictionaries(
            st.sampled_from(["q", "channel_id", "limit", "x"]), st.text(max_size=30), max_size=3
        ),
        60,
    ):
        response = await client.get("/v1/search/messages", params=query, headers=auth)
        if response.status_code >= 500:
            failures.append(("search", query, response.status_code))
    assert failures == []
