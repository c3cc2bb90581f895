"""Feed routes as in API.md "Feed", on every backend (consumers run inside the test app)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from fanout.core.events import NotifyRequest
from fanout.core.log import Topics
from fanout.core.partition import partition_for
from tests.api.conftest import platform_of, register


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def read_feed(client: httpx.AsyncClient, token: str, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/feed", headers=bearer(token), params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def feed_ids(client: httpx.AsyncClient, token: str, want: int, **params: Any) -> list[str]:
    """The ids on the first page once ``want`` posts are visible (fan-out is asynchronous)."""
    for _ in range(200):
        items = (await read_feed(client, token, **params))["items"]
        if len(items) >= want:
            return [p["id"] for p in items]
        await asyncio.sleep(0.025)
    raise AssertionError(f"feed never showed {want} posts")


async def post(client: httpx.AsyncClient, token: str, text: str, **extra: Any) -> dict[str, Any]:
    created = await client.post("/v1/posts", headers=bearer(token), json={"text": text, **extra})
    assert created.status_code == 201, created.text
    return dict(created.json())


async def test_posts_round_trip_and_only_the_author_deletes(client: httpx.AsyncClient) -> None:
    alice, a_token = await register(client, "alice")
    _, b_token = await register(client, "bob")
    created = await post(client, a_token, "hello ✓", media_urls=["https://img.example/1.png"])
    assert set(created) == {"id", "author_id", "text", "media_urls", "created_at", "like_count",
                            "comment_count", "liked_by_me"}  # fmt: skip
    assert created["author_id"] == alice and created["media_urls"] == ["https://img.example/1.png"]
    got = await client.get(f"/v1/posts/{created['id']}", headers=bearer(b_token))
    assert got.status_code == 200 and got.json() == created
    forbidden = await client.delete(f"/v1/posts/{created['id']}", headers=bearer(b_token))
    assert forbidden.status_code == 403
    gone = await client.delete(f"/v1/posts/{created['id']}", headers=bearer(a_token))
    assert gone.status_code == 204
    assert (
        await client.get(f"/v1/posts/{created['id']}", headers=bearer(b_token))
    ).status_code == 404
    assert (
        await client.delete(f"/v1/posts/{created['id']}", headers=bearer(a_token))
    ).status_code == 404


async def test_bad_posts_are_422_and_unknown_ones_404(client: httpx.AsyncClient) -> None:
    _, token = await register(client, "carol")
    bad_bodies = [
        {"text": ""},
        {"text": "x" * 5001},
        {"text": "   "},
        {"text": 5},
        {"text": "ok", "media_urls": ["javascript:alert(1)"]},
        {"text": "ok", "media_urls": ["ftp://files.example/a"]},
        {"text": "ok", "media_urls": ["https://"]},
        {"text": "ok", "media_urls": [f"https://img.example/{i}" for i in range(11)]},
        {"text": "ok", "extra": 1},
    ]
    for body in bad_bodies:
        response = await client.post("/v1/posts", headers=bearer(token), json=body)
        assert response.status_code == 422, body
    for path in ("/v1/posts/123", "/v1/posts/abc", "/v1/posts/123/comments"):
        assert (await client.get(path, headers=bearer(token))).status_code == 404, path
    assert (await client.put("/v1/posts/123/like", headers=bearer(token))).status_code == 404
    for params in ({"cursor": "garbage"}, {"cursor": "cDox"}, {"limit": 0}, {"limit": 101},
                   {"mode": "random"}, {"limit": "many"}, {"unknown": 1}):  # fmt: skip
        response = await client.get("/v1/feed", headers=bearer(token), params=params)
        assert response.status_code == 422, params
    assert (await client.get("/v1/feed")).status_code == 401


async def test_follow_rules_and_lists(client: httpx.AsyncClient) -> None:
    star, s_token = await register(client, "star")
    fans = [await register(client, f"fan{i}") for i in range(5)]
    for _, token in fans:
        for _ in range(2):  # idempotent
            assert (
                await client.put(f"/v1/follows/{star}", headers=bearer(token))
            ).status_code == 204
    assert (await client.put(f"/v1/follows/{star}", headers=bearer(s_token))).status_code == 422
    assert (await client.put("/v1/follows/42", headers=bearer(s_token))).status_code == 404
    pages: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"/v1/users/{star}/followers", headers=bearer(s_token),
                                    params=params)  # fmt: skip
        body = response.json()
        pages += [u["username"] for u in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(pages) == [f"fan{i}" for i in range(5)] and len(pages) == 5
    following = await client.get(f"/v1/users/{fans[0][0]}/following", headers=bearer(s_token))
    assert [u["id"] for u in following.json()["items"]] == [star]
    for _ in range(2):
        assert (await client.delete(f"/v1/follows/{star}",
                                    headers=bearer(fans[0][1]))).status_code == 204  # fmt: skip
    following = await client.get(f"/v1/users/{fans[0][0]}/following", headers=bearer(s_token))
    assert following.json()["items"] == []


async def test_feed_pages_newest_first_without_repeats_or_skips(client: httpx.AsyncClient) -> None:
    _, a_token = await register(client, "author")
    author_id = (await client.get("/v1/users/me", headers=bearer(a_token))).json()["id"]
    _, r_token = await register(client, "reader")
    await client.put(f"/v1/follows/{author_id}", headers=bearer(r_token))
    made = [(await post(client, a_token, f"p{i}"))["id"] for i in range(5)]
    assert await feed_ids(client, r_token, 5) == made[::-1]
    page1 = await read_feed(client, r_token, limit=2)
    assert [p["id"] for p in page1["items"]] == made[::-1][:2]
    newer = (await post(client, a_token, "arrives between pages"))["id"]
    seen = [p["id"] for p in page1["items"]]
    cursor = page1["next_cursor"]
    while cursor:
        page = await read_feed(client, r_token, limit=2, cursor=cursor)
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
    assert seen == made[::-1]  # the newer post neither repeated nor shifted anything
    assert (await feed_ids(client, r_token, 6))[0] == newer
    await client.delete(f"/v1/follows/{author_id}", headers=bearer(r_token))
    assert (await read_feed(client, r_token))["items"] == []  # unfollowed: gone at once


async def test_follow_backfills_and_delete_hides_at_once(client: httpx.AsyncClient) -> None:
    author_id, a_token = await register(client, "early")
    made = [(await post(client, a_token, f"old {i}"))["id"] for i in range(3)]
    _, r_token = await register(client, "late")
    await client.put(f"/v1/follows/{author_id}", headers=bearer(r_token))
    assert await feed_ids(client, r_token, 3) == made[::-1]
    await client.delete(f"/v1/posts/{made[1]}", headers=bearer(a_token))
    assert [p["id"] for p in (await read_feed(client, r_token))["items"]] == [made[2], made[0]]


async def test_likes_and_comments_count_and_notify_the_author(client: httpx.AsyncClient) -> None:
    author_id, a_token = await register(client, "writer")
    _, f_token = await register(client, "fan")
    created = await post(client, a_token, "like me")
    path = f"/v1/posts/{created['id']}"
    for _ in range(2):
        assert (await client.put(path + "/like", headers=bearer(f_token))).status_code == 204
    seen = (await client.get(path, headers=bearer(f_token))).json()
    assert seen["like_count"] == 1 and seen["liked_by_me"] is True
    assert (await client.get(path, headers=bearer(a_token))).json()["liked_by_me"] is False
    for i in range(3):
        made = await client.post(
            path + "/comments", headers=bearer(f_token), json={"text": f"c{i}"}
        )
        assert made.status_code == 201 and made.json()["post_id"] == created["id"]
    bad = await client.post(path + "/comments", headers=bearer(f_token), json={"text": ""})
    assert bad.status_code == 422
    listing = path + "/comments"
    first = (await client.get(listing, headers=bearer(a_token), params={"limit": 2})).json()
    more = {"limit": 2, "cursor": first["next_cursor"]}
    rest = (await client.get(listing, headers=bearer(a_token), params=more)).json()
    assert [c["text"] for c in first["items"] + rest["items"]] == ["c0", "c1", "c2"]
    assert (await client.get(path, headers=bearer(f_token))).json()["comment_count"] == 3
    assert (await client.delete(path + "/like", headers=bearer(f_token))).status_code == 204
    assert (await client.get(path, headers=bearer(f_token))).json()["like_count"] == 0

    platform = platform_of(client)
    requests: list[NotifyRequest] = []
    for _ in range(100):  # scaled: the outbox relay moves them to the log
        requests = []
        for partition in range(platform.log.partitions):
            batch = await platform.log.read(
                Topics.NOTIFY_REQUESTS, f"probe{_}", "p", partition, 100
            )
            requests += [NotifyRequest.decode(r.payload) for r in batch]
        if len(requests) >= 4:
            break
        await asyncio.sleep(0.02)
    kinds = sorted(r.type for r in requests if r.recipient_ids == (int(author_id),))
    assert kinds == ["post_commented"] * 3 + ["post_liked"]
    assert all(partition_for(r.event_id, platform.log.partitions) is not None for r in requests)


async def test_ranked_mode_pages_one_stable_snapshot(client: httpx.AsyncClient) -> None:
    author_id, a_token = await register(client, "ranker")
    _, r_token = await register(client, "viewer")
    await client.put(f"/v1/follows/{author_id}", headers=bearer(r_token))
    made = [(await post(client, a_token, f"r{i}"))["id"] for i in range(6)]
    await client.put(f"/v1/posts/{made[0]}/like", headers=bearer(r_token))
    await feed_ids(client, r_token, 6)
    first = await read_feed(client, r_token, mode="ranked", limit=4)
    await post(client, a_token, "not in the snapshot")
    second = await read_feed(client, r_token, mode="ranked", limit=4, cursor=first["next_cursor"])
    ids = [p["id"] for p in first["items"] + second["items"]]
    assert sorted(ids) == sorted(made) and second["next_cursor"] is None


async def test_nobody_can_evict_another_users_ranked_snapshot(client: httpx.AsyncClient) -> None:
    author_id, a_token = await register(client, "source")
    _, r_token = await register(client, "patient")
    _, s_token = await register(client, "spammer")
    for token in (r_token, s_token):
        await client.put(f"/v1/follows/{author_id}", headers=bearer(token))
    for i in range(4):
        await post(client, a_token, f"s{i}")
    await feed_ids(client, r_token, 4)
    first = await read_feed(client, r_token, mode="ranked", limit=2)
    for _ in range(30):  # another user's ranked reads
        await read_feed(client, s_token, mode="ranked", limit=2)
    later = await read_feed(client, r_token, mode="ranked", limit=2, cursor=first["next_cursor"])
    assert len(later["items"]) == 2
    await read_feed(client, r_token, mode="ranked", limit=2)  # the viewer's own new snapshot
    stale = await client.get("/v1/feed", headers=bearer(r_token),
                             params={"mode": "ranked", "cursor": first["next_cursor"]})  # fmt: skip
    assert stale.status_code == 422
