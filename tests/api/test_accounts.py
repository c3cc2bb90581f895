"""Accounts routes as in API.md "Accounts", on every backend."""

from __future__ import annotations

import httpx

from fanout.core.clock import ManualClock
from tests.api.conftest import AppFactory, register


def error_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json")
    return str(response.json()["error"]["code"])


async def test_register_login_and_read_the_account(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/v1/users", json={"username": "ada_l", "password": "analytical", "display_name": "Ada"}
    )
    assert created.status_code == 201
    user = created.json()
    assert set(user) == {"id", "username", "display_name", "created_at"}
    assert isinstance(user["id"], str) and int(user["id"]) > 2**32  # a 64-bit snowflake, as text
    assert user["username"] == "ada_l" and user["display_name"] == "Ada"
    assert user["created_at"].endswith("Z")

    session = await client.post(
        "/v1/sessions", json={"username": "ada_l", "password": "analytical"}
    )
    assert session.status_code == 201
    body = session.json()
    assert body["user_id"] == user["id"] and body["expires_at"].endswith("Z")
    auth = {"Authorization": f"Bearer {body['token']}"}

    me = await client.get("/v1/users/me", headers=auth)
    assert me.status_code == 200 and me.json() == user
    other = await client.get(f"/v1/users/{user['id']}", headers=auth)
    assert other.status_code == 200 and other.json() == user


async def test_display_name_defaults_to_the_username(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/users", json={"username": "bob", "password": "12345678"})
    assert created.json()["display_name"] == "bob"


async def test_a_taken_username_is_a_conflict_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "carol", "first password")
    again = await client.post("/v1/users", json={"username": "carol", "password": "second pass"})
    assert again.status_code == 409 and error_code(again) == "conflict"
    still = await client.post(
        "/v1/sessions", json={"username": "carol", "password": "first password"}
    )
    assert still.status_code == 201


async def test_field_violations_are_422_naming_the_field(client: httpx.AsyncClient) -> None:
    cases = [
        ({"username": "No Caps", "password": "12345678"}, "username"),
        ({"username": "ab", "password": "12345678"}, "username"),
        ({"username": "x" * 33, "password": "12345678"}, "username"),
        ({"username": "dave", "password": "short"}, "password"),
        ({"username": "dave", "password": 12345678}, "password"),
        ({"username": "dave"}, ""),
        ({"username": "dave", "password": "12345678", "display_name": ""}, "display_name"),
        ({"username": "dave", "password": "12345678", "admin": True}, ""),
    ]
    for body, field in cases:
        response = await client.post("/v1/users", json=body)
        assert response.status_code == 422, body
        error = response.json()["error"]
        assert error["code"] == "invalid"
        if field:
            assert error["details"][0]["field"] == field, (body, error)
    # nothing was stored by any of them
    login = await client.post("/v1/sessions", json={"username": "dave", "password": "12345678"})
    assert login.status_code == 401


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    for raw in (b"{", b"", b"\xff\xfe", b"[1,2", b"nul"):
        response = await client.post(
            "/v1/users", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, raw
        assert error_code(response) == "malformed_json"
    not_an_object = await client.post("/v1/users", json=[1, 2])
    assert not_an_object.status_code == 422


async def test_wrong_password_and_unknown_user_are_both_401(client: httpx.AsyncClient) -> None:
    await register(client, "erin", "the password")
    wrong = await client.post("/v1/sessions", json={"username": "erin", "password": "nope nope"})
    unknown = await client.post("/v1/sessions", json={"username": "nobody", "password": "x" * 8})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()  # nothing tells which usernames exist


async def test_bad_or_missing_tokens_are_401(client: httpx.AsyncClient) -> None:
    _, token = await register(client, "frank")
    assert (await client.get("/v1/users/me")).status_code == 401
    for header in (
        "Bearer",
        "Bearer garbage",
        "Basic Zm9vOmJhcg==",
        f"Bearer {token}x",
        f"Bearer {token[:-4]}AAAA",
    ):
        response = await client.get("/v1/users/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert error_code(response) == "unauthorized"


async def test_expired_tokens_are_401(make_client: AppFactory) -> None:
    clock = ManualClock()
    client = await make_client(build={"clock": clock}, token_ttl_s=60)
    _, token = await register(client, "grace")
    auth = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/v1/users/me", headers=auth)).status_code == 200
    clock.advance(61)
    expired = await client.get("/v1/users/me", headers=auth)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


async def test_unknown_users_are_404(client: httpx.AsyncClient) -> None:
    _, token = await register(client, "heidi")
    auth = {"Authorization": f"Bearer {token}"}
    for path in ("/v1/users/123456789", "/v1/users/not-a-number", "/v1/users/" + "9" * 30):
        response = await client.get(path, headers=auth)
        assert response.status_code == 404, path
        assert error_code(response) == "not_found"
