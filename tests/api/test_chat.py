"""Chat over HTTP (API.md "Chat"), on every backend."""

from __future__ import annotations

import asyncio

import httpx

from tests.api.conftest import register


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def trio(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    return [await register(client, name) for name in ("ann", "bob", "cyd")]


async def test_dm_is_one_per_pair_and_groups_cap_members(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(chat_group_cap=3)
    (a, ta), (b, tb), (c, _) = await trio(client)
    made = await client.post(
        "/v1/channels", json={"kind": "dm", "member_ids": [b]}, headers=auth(ta)
    )
    assert made.status_code == 201, made.text
    again = await client.post(
        "/v1/channels", json={"kind": "dm", "member_ids": [a]}, headers=auth(tb)
    )
    assert again.status_code == 200 and again.json()["id"] == made.json()["id"]
    assert sorted(made.json()["member_ids"]) == sorted([a, b])
    group = {"kind": "group", "name": "g", "member_ids": [b, c]}
    assert (await client.post("/v1/channels", json=group, headers=auth(ta))).status_code == 201
    four = {"kind": "group", "name": "g", "member_ids": [b, c, "123"]}
    assert (await client.post("/v1/channels", json=four, headers=auth(ta))).status_code == 422
    self_dm = {"kind": "dm", "member_ids": [a]}
    assert (await client.post("/v1/channels", json=self_dm, headers=auth(ta))).status_code == 422
    listed = (await client.get("/v1/channels", headers=auth(ta))).json()["items"]
    assert len(listed) == 2


async def test_messages_seq_history_events_edit_delete_and_unread(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client()
    (_a, ta), (b, tb), (_c, tc) = await trio(client)
    ch = (
        await client.post(
            "/v1/channels", json={"kind": "group", "name": "g", "member_ids": [b]}, headers=auth(ta)
        )
    ).json()["id"]
    sent = []
    for i in range(5):
        r = await client.post(
            f"/v1/channels/{ch}/messages",
            json={"client_msg_id": f"m{i}", "text": f"hello {i}"},
            headers=auth(ta),
        )
        assert r.status_code == 201, r.text
        sent.append(r.json())
    assert [m["seq"] for m in sent] == [1, 2, 3, 4, 5]
    retry = await client.post(
        f"/v1/channels/{ch}/messages",
        json={"client_msg_id": "m2", "text": "other"},
        headers=auth(ta),
    )
    assert retry.status_code == 200 and retry.json() == sent[2]
    bob = (await client.get(f"/v1/channels/{ch}", headers=auth(tb))).json()
    assert bob["unread"] == 5 and bob["last_seq"] == 5
    ann = (await client.get(f"/v1/channels/{ch}", headers=auth(ta))).json()
    assert ann["unread"] == 0 and ann["last_read_seq"] == 5  # sending marks the sender's read
    assert (
        await client.post(f"/v1/channels/{ch}/read", json={"seq": 3}, headers=auth(tb))
    ).status_code == 204
    assert (
        await client.post(f"/v1/channels/{ch}/read", json={"seq": 1}, headers=auth(tb))
    ).status_code == 204
    bob = (await client.get(f"/v1/channels/{ch}", headers=auth(tb))).json()
    assert bob["unread"] == 2 and bob["last_read_seq"] == 3  # never backwards
    mid = sent[1]["id"]
    forbidden = await client.patch(
        f"/v1/channels/{ch}/messages/{mid}", json={"text": "x"}, headers=auth(tb)
    )
    assert forbidden.status_code == 403
    edited = await client.patch(
        f"/v1/channels/{ch}/messages/{mid}", json={"text": "fixed"}, headers=auth(ta)
    )
    assert (
        edited.status_code == 200
        and edited.json()["text"] == "fixed"
        and edited.json()["edited_at"]
    )
    assert (
        await client.delete(f"/v1/channels/{ch}/messages/{sent[0]['id']}", headers=auth(ta))
    ).status_code == 204
    events = (
        await client.get(f"/v1/channels/{ch}/events?after_seq=0&limit=100", headers=auth(tb))
    ).json()
    assert [e["seq"] for e in events["items"]] == list(range(1, 8)) and not events["has_more"]
    assert [e["kind"] for e in events["items"]] == ["message"] * 5 + ["edit", "delete"]
    assert events["items"][1]["message"]["text"] == "hello 1"  # as it was then
    assert events["items"][5]["message"]["text"] == "fixed"
    page = (await client.get(f"/v1/channels/{ch}/messages?limit=2", headers=auth(tb))).json()
    assert [m["seq"] for m in page["items"]] == [4, 5] and page["has_more"]
    older = (
        await client.get(f"/v1/channels/{ch}/messages?before_seq=4&limit=10", headers=auth(tb))
    ).json()
    assert [m["seq"] for m in older["items"]] == [1, 2, 3] and not older["has_more"]
    assert older["items"][0]["deleted"] and older["items"][0]["text"] == ""
    # Non-members: 403 on everything.
    for path in (
        f"/v1/channels/{ch}",
        f"/v1/channels/{ch}/messages",
        f"/v1/channels/{ch}/events",
        f"/v1/channels/{ch}/presence",
        f"/v1/search/messages?q=hello&channel_id={ch}",
    ):
        assert (await client.get(path, headers=auth(tc))).status_code == 403, path
    post = await client.post(
        f"/v1/channels/{ch}/messages", json={"client_msg_id": "x", "text": "hi"}, headers=auth(tc)
    )
    assert post.status_code == 403
    assert (await client.get("/v1/channels/999", headers=auth(ta))).status_code == 404


async def test_membership_changes_are_events_and_obey_the_rules(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client()
    (a, ta), (b, tb), (c, tc) = await trio(client)
    ch = (
        await client.post(
            "/v1/channels", json={"kind": "group", "name": "g", "member_ids": [b]}, headers=auth(ta)
        )
    ).json()["id"]
    assert (await client.put(f"/v1/channels/{ch}/members/{c}", headers=auth(tc))).status_code == 403
    assert (await client.put(f"/v1/channels/{ch}/members/{c}", headers=auth(tb))).status_code == 204
    assert (await client.put(f"/v1/channels/{ch}/members/{c}", headers=auth(tb))).status_code == 204
    assert (
        await client.delete(f"/v1/channels/{ch}/members/{a}", headers=auth(tb))
    ).status_code == 403
    assert (
        await client.delete(f"/v1/channels/{ch}/members/{c}", headers=auth(ta))
    ).status_code == 204
    assert (
        await client.delete(f"/v1/channels/{ch}/members/{b}", headers=auth(tb))
    ).status_code == 204
    events = (await client.get(f"/v1/channels/{ch}/events", headers=auth(ta))).json()["items"]
    assert [(e["kind"], e["user_id"]) for e in events] == [("join", c), ("leave", c), ("leave", b)]
    assert (await client.get(f"/v1/channels/{ch}", headers=auth(tb))).status_code == 403
    dm = (
        await client.post("/v1/channels", json={"kind": "dm", "member_ids": [b]}, headers=auth(ta))
    ).json()["id"]
    assert (await client.put(f"/v1/channels/{dm}/members/{c}", headers=auth(ta))).status_code == 403


async def test_bad_input_is_refused_with_the_right_status(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client()
    (_a, ta), (b, _), _ = await trio(client)
    ch = (
        await client.post("/v1/channels", json={"kind": "dm", "member_ids": [b]}, headers=auth(ta))
    ).json()["id"]
    url = f"/v1/channels/{ch}/messages"
    assert (
        await client.post(url, json={"client_msg_id": "a", "text": "x" * 4001}, headers=auth(ta))
    ).status_code == 422
    assert (
        await client.post(url, json={"client_msg_id": "", "text": "x"}, headers=auth(ta))
    ).status_code == 422
    assert (await client.post(url, content=b"{nope", headers=auth(ta))).status_code == 400
    assert (
        await client.post(
            url,
            json={"client_msg_id": "a", "text": "x", "attachment_ids": ["77"]},
            headers=auth(ta),
        )
    ).status_code == 422
    nul = {"client_msg_id": "n", "text": "a\u0000b"}  # PostgreSQL cannot store it: 422 everywhere
    assert (await client.post(url, json=nul, headers=auth(ta))).status_code == 422
    huge = {"kind": "group", "name": "g", "member_ids": [str(2**63)]}  # no 64-bit id: 422
    assert (await client.post("/v1/channels", json=huge, headers=auth(ta))).status_code == 422
    search = {"q": "x", "channel_id": "9" * 19}
    assert (
        await client.get("/v1/search/messages", params=search, headers=auth(ta))
    ).status_code == 422
    unknown = {"kind": "group", "name": "g", "member_ids": ["424242"]}
    assert (await client.post("/v1/channels", json=unknown, headers=auth(ta))).status_code == 422
    assert (
        await client.get(f"/v1/channels/{ch}/events?after_seq=-1", headers=auth(ta))
    ).status_code == 422
    assert (await client.get("/v1/channels", headers={})).status_code == 401
    assert (await client.get(f"/v1/channels/{ch}/messages", headers=auth(ta))).json()["items"] == []


async def test_uploads_are_claim_checks_visible_to_channel_members(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(chat_upload_max_bytes=1000)
    (_a, ta), (b, tb), (_c, tc) = await trio(client)
    up = await client.post(
        "/v1/uploads?filename=cat.png",
        content=b"\x89PNG" + b"x" * 100,
        headers={**auth(ta), "Content-Type": "image/png"},
    )
    assert up.status_code == 201, up.text
    uid = up.json()["id"]
    assert up.json()["size"] == 104 and up.json()["content_type"] == "image/png"
    big = await client.post("/v1/uploads", content=b"x" * 1001, headers=auth(ta))
    assert big.status_code == 413
    assert (await client.get(f"/v1/uploads/{uid}", headers=auth(tb))).status_code == 403
    ch = (
        await client.post("/v1/channels", json={"kind": "dm", "member_ids": [b]}, headers=auth(ta))
    ).json()["id"]
    # Someone else's upload cannot be attached.
    stolen = {"client_msg_id": "s", "text": "mine", "attachment_ids": [uid]}
    assert (
        await client.post(f"/v1/channels/{ch}/messages", json=stolen, headers=auth(tb))
    ).status_code == 422
    sent = await client.post(
        f"/v1/channels/{ch}/messages",
        json={"client_msg_id": "p", "text": "a cat", "attachment_ids": [uid]},
        headers=auth(ta),
    )
    assert sent.json()["attachments"] == [uid]
    got = await client.get(f"/v1/uploads/{uid}", headers=auth(tb))
    assert got.status_code == 200 and got.content.startswith(b"\x89PNG")
    assert got.headers["content-type"].startswith("image/png")
    assert (await client.get(f"/v1/uploads/{uid}", headers=auth(tc))).status_code == 403
    assert (await client.get("/v1/uploads/5", headers=auth(ta))).status_code == 404


async def test_search_finds_only_what_the_caller_can_see(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client()
    (_a, ta), (b, tb), (c, tc) = await trio(client)
    ab = (
        await client.post("/v1/channels", json={"kind": "dm", "member_ids": [b]}, headers=auth(ta))
    ).json()["id"]
    ac = (
        await client.post("/v1/channels", json={"kind": "dm", "member_ids": [c]}, headers=auth(ta))
    ).json()["id"]
    for ch, text in ((ab, "the quick brown fox"), (ac, "a quick red fox"), (ab, "lazy dogs")):
        await client.post(
            f"/v1/channels/{ch}/messages",
            json={"client_msg_id": text, "text": text},
            headers=auth(ta),
        )

    async def texts(token: str, q: str) -> list[str]:
        r = await client.get("/v1/search/messages", params={"q": q}, headers=auth(token))
        assert r.status_code == 200, r.text
        return sorted(m["text"] for m in r.json()["items"])

    assert await texts(ta, "quick fox") == ["a quick red fox", "the quick brown fox"]
    assert await texts(tb, "quick fox") == ["the quick brown fox"]
    assert await texts(tc, "fox") == ["a quick red fox"]
    assert await texts(tb, 'fox" OR "dogs*') == []
    assert await texts(ta, "\"'*:()&|!") == []


async def test_presence_over_http(make_client) -> None:  # type: ignore[no-untyped-def]
    from tests.api.wskit import WsClient, app_of

    client = await make_client()
    (_a, ta), (b, tb), _ = await trio(client)
    ch = (
        await client.post("/v1/channels", json={"kind": "dm", "member_ids": [b]}, headers=auth(ta))
    ).json()["id"]
    assert (await client.get(f"/v1/channels/{ch}/presence", headers=auth(ta))).json()[
        "online"
    ] == []
    ws = await WsClient.open(app_of(client), tb)
    await asyncio.sleep(0.05)
    assert (await client.get(f"/v1/channels/{ch}/presence", headers=auth(ta))).json()["online"] == [
        b
    ]
    await ws.close()
