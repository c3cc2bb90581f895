"""Inputs found by review to break things once: each must now get a clear 4xx."""

from __future__ import annotations

import httpx

from fanout.core.errors import Unavailable
from tests.api.conftest import AppFactory, platform_of, register


async def test_ids_outside_64_bits_or_ascii_are_unknown(client: httpx.AsyncClient) -> None:
    _, token = await register(client, "pathy")
    auth = {"Authorization": f"Bearer {token}"}
    for raw in ("9999999999999999999", "9223372036854775808", "%C2%B2", "%D9%A1%D9%A2"):
        response = await client.get(f"/v1/users/{raw}", headers=auth)
        assert response.status_code == 404, raw


async def test_deeply_nested_bodies_are_400(client: httpx.AsyncClient) -> None:
    for body in ("[" * 3000, '{"username":' + "[" * 3000, '{"a":' * 3000):
        response = await client.post(
            "/v1/users", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, body[:20]


async def test_nul_characters_are_refused_not_crashed_on(client: httpx.AsyncClient) -> None:
    login = await client.post("/v1/sessions", json={"username": "a\u0000b", "password": "x" * 8})
    assert login.status_code == 401
    created = await client.post(
        "/v1/users", json={"username": "nully", "password": "x" * 8, "display_name": "a\u0000b"}
    )
    assert created.status_code == 422
    assert created.json()["error"]["details"][0]["field"] == "display_name"


async def test_forwarded_for_spread_over_several_lines_is_read_whole(
    make_client: AppFactory,
) -> None:
    client = await make_client(rate_limit_per_s=1.0, trusted_proxies=("203.0.113.0/24",))
    statuses = []
    for i in range(8):  # a forged first line that changes, the proxy's own line that does not
        headers = [("x-forwarded-for", f"10.9.9.{i}"), ("x-forwarded-for", "198.51.100.77")]
        statuses.append((await client.get("/v1/users/me", headers=headers)).status_code)
    assert statuses[:5] == [401] * 5 and 429 in statuses[5:]


async def test_invented_methods_share_one_metrics_label(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await client.request(f"XMETHOD{i}", "/v1/users")
    text = (await client.get("/metrics")).text
    assert "XMETHOD" not in text and 'method="OTHER"' in text


async def test_a_rate_limiter_outage_lets_requests_through(make_client: AppFactory) -> None:
    client = await make_client(rate_limit_per_s=1.0)

    class Down:
        async def hit(self, key: str, rate: float, burst: float) -> float:
            raise Unavailable("limiter store down")

    platform_of(client).rate_limiter = Down()
    statuses = [(await client.get("/healthz")).status_code for _ in range(3)]
    statuses += [(await client.get("/v1/users/me")).status_code for _ in range(10)]
    assert statuses == [200] * 3 + [401] * 10


async def test_times_outside_rfc3339_years_are_422(client: httpx.AsyncClient) -> None:
    _, token = await register(client, "timely")
    auth = {"Authorization": f"Bearer {token}"}
    for when in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "1969-12-31T23:59:59Z"):
        body = {"url": "https://example.com", "expires_at": when}
        assert (await client.post("/v1/links", headers=auth, json=body)).status_code == 422, when
    assert (await client.get("/v1/links", headers=auth)).status_code == 200


async def test_cursors_outside_64_bits_are_422(client: httpx.AsyncClient) -> None:
    import base64

    _, token = await register(client, "cursory")
    auth = {"Authorization": f"Bearer {token}"}

    def wrap(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    me = (await client.get("/v1/users/me", headers=auth)).json()["id"]
    for cursor in (wrap("p:9999999999999999999:1"), wrap("p:1:9999999999999999999"),
                   wrap("p:1:-1")):  # fmt: skip
        for path in ("/v1/feed", f"/v1/users/{me}/posts", f"/v1/users/{me}/followers"):
            response = await client.get(path, headers=auth, params={"cursor": cursor})
            assert response.status_code == 422, (path, cursor)
    big = base64.urlsafe_b64encode(b"99999999999999999999999:x").decode()
    assert (await client.get("/v1/links", headers=auth, params={"cursor": big})).status_code == 422


async def test_reuse_never_returns_a_link_that_behaves_differently(
    client: httpx.AsyncClient,
) -> None:
    _, token = await register(client, "reuser")
    auth = {"Authorization": f"Bearer {token}"}
    url = "https://example.com/r"
    limited = (await client.post("/v1/links", headers=auth,
                                 json={"url": url, "max_visits": 1})).json()  # fmt: skip
    await client.get("/" + limited["code"])
    again = (await client.post("/v1/links", headers=auth, json={"url": url, "reuse": True})).json()
    assert again["code"] != limited["code"]
    same = await client.post("/v1/links", headers=auth, json={"url": url, "reuse": True})
    assert same.json()["code"] == again["code"]
    perm = await client.post("/v1/links", headers=auth,
                             json={"url": url, "reuse": True, "redirect": 301})  # fmt: skip
    assert perm.json()["code"] != again["code"] and perm.json()["redirect"] == 301
