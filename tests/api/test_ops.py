"""Operations routes and the conventions of API.md that hold for every route."""

from __future__ import annotations

import httpx

from tests.api.conftest import AppFactory, platform_of, register


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ok" and body["checks"] and set(body["checks"].values()) == {"ok"}


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    _, token = await register(client, "mia")
    await client.get("/v1/users/1234", headers={"Authorization": f"Bearer {token}"})
    text = (await client.get("/metrics")).text
    assert 'fanout_http_requests_total{method="GET",route="/v1/users/{id}",status="404"} 1.0' in (
        text
    )
    assert "fanout_http_request_seconds_bucket" in text


async def test_unknown_routes_and_methods_answer_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong_method = await client.delete("/v1/users")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


async def test_openapi_is_generated_from_the_wire_types(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    create = doc["paths"]["/v1/users"]["post"]
    assert set(create["responses"]) >= {"201", "400", "409", "422"} - {"409"}
    schemas = doc["components"]["schemas"]
    assert schemas["CreateUser"]["properties"]["username"]["pattern"] == "^[a-z0-9_]{3,32}$"
    assert set(schemas["CreateUser"]["required"]) == {"username", "password"}
    assert doc["paths"]["/v1/users/me"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]


async def test_bodies_over_the_limit_are_413_and_store_nothing(make_client: AppFactory) -> None:
    client = await make_client(max_body_bytes=200)
    big = {"username": "zed", "password": "p" * 300}
    announced = await client.post("/v1/users", json=big)
    assert announced.status_code == 413 and announced.json()["error"]["code"] == "too_large"

    async def chunks():  # type: ignore[no-untyped-def]
        payload = httpx.Request("POST", "/", json=big).content
        for i in range(0, len(payload), 64):
            yield payload[i : i + 64]

    streamed = await client.post(
        "/v1/users", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    login = await client.post("/v1/sessions", json={"username": "zed", "password": "p" * 300})
    assert login.status_code in (401, 413)
    assert (
        await client.post("/v1/sessions", json={"username": "zed", "password": "x" * 8})
    ).status_code == 401


async def test_rate_limit_per_ip_answers_429_with_retry_after(make_client: AppFactory) -> None:
    client = await make_client(rate_limit_per_s=1.0)  # burst 5
    statuses = [(await client.get("/v1/users/me")).status_code for _ in range(7)]
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
    refused = await client.get("/v1/users/me")
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert (await client.get("/healthz")).status_code == 200  # probes are never limited
    assert "fanout_rate_limited_total" in (await client.get("/metrics")).text


async def test_rate_limit_per_user_follows_the_token_across_addresses(
    make_client: AppFactory,
) -> None:
    client = await make_client(rate_limit_per_s=2.0)  # burst 10 per IP and per user
    _, token = await register(client, "ivan")  # 2 requests from this IP
    auth = {"Authorization": f"Bearer {token}"}
    app = client._transport.app  # type: ignore[attr-defined]
    statuses = []
    for i in range(12):  # each from a different address: only the user bucket runs dry
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(f"198.51.100.{i}", 1)),
            base_url="http://testserver",
        )
        async with other:
            statuses.append((await other.get("/v1/users/me", headers=auth)).status_code)
    assert statuses[:10] == [200] * 10 and statuses[10:] == [429, 429]


async def test_metrics_export_log_lag_per_topic_and_group(client: httpx.AsyncClient) -> None:
    platform = platform_of(client)
    await platform.log.join("demo.topic", "demo-group", "probe", 5_000)
    await platform.log.publish_many("demo.topic", [("k", b"x")] * 3)
    text = (await client.get("/metrics")).text
    assert 'fanout_log_lag_records{group="demo-group",topic="demo.topic"} 3.0' in text
