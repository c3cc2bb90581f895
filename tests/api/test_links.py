"""Links routes and the redirect as in API.md "Links", on every backend."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest

from fanout.api.redirect import HIT_EVERY_S
from fanout.core.clock import ManualClock
from fanout.links.resolver import (
    BROADCAST_TTL_S,
    REFRESH_AHEAD,
    SOLE_PROCESS_TTL_S,
    Resolver,
)
from tests.api.conftest import AppFactory, platform_of, register

# Every test twice per backend: straight into the ASGI app, and over HTTP through uvicorn as
# `fanout serve` runs it (where redirects this process has cached are answered in the HTTP
# protocol, api/redirect_http.py).
pytestmark = pytest.mark.parametrize("transport", ["asgi", "http"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def shorten(client: httpx.AsyncClient, token: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/links", headers=bearer(token), json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_shorten_and_redirect(client: httpx.AsyncClient) -> None:
    _, token = await register(client, "linker")
    made = await shorten(client, token, url="https://example.com/a?b=1")
    assert set(made) >= {"code", "short_url", "url", "redirect", "expires_at", "created_at",
                         "clicks"}  # fmt: skip
    assert 1 <= len(made["code"]) <= 7 and made["short_url"].endswith("/" + made["code"])
    assert made["redirect"] == 302 and made["clicks"] == 0 and made["expires_at"]
    for method in ("GET", "HEAD"):
        hop = await client.request(method, "/" + made["code"])
        assert hop.status_code == 302 and hop.headers["location"] == "https://example.com/a?b=1"
    codes = {(await shorten(client, token, url=f"https://example.com/{i}"))["code"]
             for i in range(20)}  # fmt: skip
    assert len(codes) == 20 and made["code"] not in codes


async def test_permanent_redirects_are_cacheable_for_a_bounded_time(
    client: httpx.AsyncClient,
) -> None:
    _, token = await register(client, "perma")
    made = await shorten(client, token, url="https://example.com/p", redirect=301)
    hop = await client.get("/" + made["code"])
    assert hop.status_code == 301 and hop.headers["cache-control"] == "max-age=3600"


async def test_a_301_in_its_last_hour_is_cacheable_only_until_it_expires(
    make_client: AppFactory,
) -> None:
    clock = ManualClock(start_ms=int(dt.datetime.now(dt.UTC).timestamp() * 1000))
    client = await make_client(build={"clock": clock})
    _, token = await register(client, "expiring301")
    expires = dt.datetime.fromtimestamp(clock.now_ms() / 1000 + 7_200, dt.UTC).isoformat()
    made = await shorten(client, token, url="https://example.com/e", redirect=301,
                         expires_at=expires)  # fmt: skip
    ages = []
    for step_s in (0, 1_800, 1_800, 2_400, 1_199):  # 2 h, 1.5 h, 1 h, 20 min, 1 s left
        clock.advance(step_s)
        hop = await client.get("/" + made["code"])
        assert hop.status_code == 301
        ages.append(hop.headers["cache-control"])
    assert ages == ["max-age=3600", "max-age=3600", "max-age=3600", "max-age=1200", "max-age=1"]
    clock.advance(1)
    assert (await client.get("/" + made["code"])).status_code == 410


async def test_aliases_conflicts_and_reserved_words(client: httpx.AsyncClient) -> None:
    _, token = await register(client, "aliaser")
    made = await shorten(client, token, url="https://example.com/x", alias="My-Alias_1")
    assert made["code"] == "My-Alias_1"
    assert (await client.get("/My-Alias_1")).status_code == 302
    for alias, status in (("My-Alias_1", 409), ("healthz", 409), ("v1", 409), ("metrics", 409),
                          ("ab", 422), ("has space", 422), ("x" * 65, 422)):  # fmt: skip
        body = {"url": "https://example.com", "alias": alias}
        response = await client.post("/v1/links", headers=bearer(token), json=body)
        assert response.status_code == status, alias
    assert (await client.get("/healthz")).json() == {"status": "ok"}  # still the probe


async def test_bad_targets_are_422_and_store_nothing(client: httpx.AsyncClient) -> None:
    _, token = await register(client, "badurls")
    for url in ("javascript:alert(1)", "data:text/html,x", "file:///etc/passwd",
                "https://user:pw@example.com", "ftp://example.com", "https://",
                "https://example.com/" + "x" * 2048, "not a url"):  # fmt: skip
        response = await client.post("/v1/links", headers=bearer(token), json={"url": url})
        assert response.status_code == 422, url
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    for body in ({"url": "https://example.com", "expires_at": past},
                 {"url": "https://example.com", "expires_at": "tomorrow"},
                 {"url": "https://example.com", "redirect": 307},
                 {"url": "https://example.com", "max_visits": 0}):  # fmt: skip
        response = await client.post("/v1/links", headers=bearer(token), json=body)
        assert response.status_code == 422, body
    assert (await client.get("/v1/links", headers=bearer(token))).json()["items"] == []


async def test_unknown_deleted_and_expired_codes(make_client: AppFactory) -> None:
    clock = ManualClock(start_ms=int(dt.datetime.now(dt.UTC).timestamp() * 1000))
    client = await make_client(build={"clock": clock})
    _, token = await register(client, "expirer")
    assert (await client.get("/Zz9Zz9Q")).status_code == 404
    soon = dt.datetime.fromtimestamp(clock.now_ms() / 1000 + 60, dt.UTC).isoformat()
    timed = await shorten(client, token, url="https://example.com/t", expires_at=soon)
    assert (await client.get("/" + timed["code"])).status_code == 302
    clock.advance(61)
    gone = await client.get("/" + timed["code"])
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "gone"
    doomed = await shorten(client, token, url="https://example.com/d")
    for _ in range(2):  # answered, then answered again from what the first kept
        assert (await client.get("/" + doomed["code"])).status_code == 302
    assert (
        await client.delete("/v1/links/" + doomed["code"], headers=bearer(token))
    ).status_code == 204
    assert (await client.get("/" + doomed["code"])).status_code == 410
    assert (
        await client.get("/v1/links/" + doomed["code"], headers=bearer(token))
    ).status_code == 404


async def test_kept_answers_end_with_the_resolvers_entries(make_client: AppFactory) -> None:
    """A redirect answered from what an earlier one kept still goes through the resolver's
    cache: invalidated, forgotten or expired there, the link is looked up again."""
    clock = ManualClock(start_ms=int(dt.datetime.now(dt.UTC).timestamp() * 1000))
    client = await make_client(build={"clock": clock})
    resolver = platform_of(client).resolver
    _, token = await register(client, "keeper")
    code = (await shorten(client, token, url="https://example.com/k"))["code"]

    async def redirect() -> tuple[int, int]:
        """(status, 1 if the resolver's cache answered it, else 0)."""
        hits = resolver.hits
        response = await client.get("/" + code)
        assert response.headers["location"] == "https://example.com/k"
        return response.status_code, resolver.hits - hits

    assert [await redirect() for _ in range(3)] == [(302, 0), (302, 1), (302, 1)]
    resolver.invalidate(code)  # another process deleted or changed it
    assert [await redirect() for _ in range(2)] == [(302, 0), (302, 1)]
    resolver.invalidate_all()  # the delete feed lost messages
    assert [await redirect() for _ in range(2)] == [(302, 0), (302, 1)]
    clock.advance(SOLE_PROCESS_TTL_S + 1)  # the entry's lifetime ends
    assert [await redirect() for _ in range(2)] == [(302, 0), (302, 1)]


def _told_of_hits(resolver: Resolver, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The codes the resolver's ``hit`` hears of from now on, in order (it still runs)."""
    told: list[str] = []
    hit = resolver.hit
    monkeypatch.setattr(resolver, "hit", lambda code, now: (told.append(code), hit(code, now)))
    return told


async def test_kept_answers_tell_the_resolver_of_a_hit_at_most_so_often(
    make_client: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every redirect answered from a kept answer counts as a hit; the resolver's ``hit`` (LRU
    order, refreshes falling due) hears of one at most every ``HIT_EVERY_S`` per code."""
    clock = ManualClock(start_ms=int(dt.datetime.now(dt.UTC).timestamp() * 1000))
    client = await make_client(build={"clock": clock})
    resolver = platform_of(client).resolver
    told = _told_of_hits(resolver, monkeypatch)
    _, token = await register(client, "teller")
    one, two = [(await shorten(client, token, url=f"https://example.com/{n}"))["code"]
                for n in ("a", "b")]  # fmt: skip
    for code in (one, two):
        assert (await client.get("/" + code)).status_code == 302  # resolved, then kept
    hits = resolver.hits
    for _ in range(3):
        for code in (one, two):
            assert (await client.get("/" + code)).status_code == 302
    assert (told, resolver.hits - hits) == ([one, two], 6)
    clock.advance(HIT_EVERY_S)
    assert (await client.get("/" + one)).status_code == 302
    assert told == [one, two, one]


async def test_a_kept_answer_still_has_its_link_read_again_before_it_runs_out(
    make_client: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a shared cache, a link still redirecting in the last part of its lifetime here is
    read again in the background and trusted for another lifetime, also when its redirects are
    answered from a kept answer, which reaches the resolver only through ``hit``: past the
    first lifetime it is still a hit, not a miss."""
    clock = ManualClock(start_ms=int(dt.datetime.now(dt.UTC).timestamp() * 1000))
    client = await make_client(build={"clock": clock})
    platform = platform_of(client)
    if not platform.settings.scaled:
        pytest.skip("embedded: no shared cache to read a link again from")
    resolver = platform.resolver
    told = _told_of_hits(resolver, monkeypatch)
    _, token = await register(client, "refresher")
    code = (await shorten(client, token, url="https://example.com/again"))["code"]
    for _ in range(2):  # resolved and kept, then answered from what was kept
        assert (await client.get("/" + code)).status_code == 302
    assert told == [code]
    # Into the last part of its lifetime, and past the hit throttle's interval.
    clock.advance(BROADCAST_TTL_S * (1 - REFRESH_AHEAD) + HIT_EVERY_S)
    refreshed = resolver.refreshed
    assert (await client.get("/" + code)).status_code == 302
    assert told == [code, code]  # answered from the kept answer
    for _ in range(250):
        if resolver.refreshed > refreshed:
            break
        await asyncio.sleep(0.02)
    assert resolver.refreshed == refreshed + 1
    clock.advance(BROADCAST_TTL_S * REFRESH_AHEAD)  # past the lifetime it was first read for
    lookups, hits = resolver.lookups, resolver.hits
    assert (await client.get("/" + code)).status_code == 302
    assert (resolver.lookups - lookups, resolver.hits - hits) == (1, 1)


async def test_visit_limits_reuse_ownership_and_listing(client: httpx.AsyncClient) -> None:
    _, token = await register(client, "owner1")
    _, other = await register(client, "owner2")
    limited = await shorten(client, token, url="https://example.com/l", max_visits=2)
    statuses = [(await client.get("/" + limited["code"])).status_code for _ in range(4)]
    assert statuses == [302, 302, 410, 410]
    first = await shorten(client, token, url="https://example.com/same")
    again = await shorten(client, token, url="https://example.com/same", reuse=True)
    fresh = await shorten(client, token, url="https://example.com/same")
    assert again["code"] == first["code"] != fresh["code"]
    for path in ("", "/stats", "/qr"):
        response = await client.get(f"/v1/links/{first['code']}{path}", headers=bearer(other))
        assert response.status_code == 403, path
    assert (await client.delete(f"/v1/links/{first['code']}",
                                headers=bearer(other))).status_code == 403  # fmt: skip
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/links", headers=bearer(token), params=params)).json()
        seen += [x["code"] for x in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted([limited["code"], first["code"], fresh["code"]])
    assert (await client.get("/v1/links", headers=bearer(token),
                             params={"cursor": "%%%"})).status_code == 422  # fmt: skip


async def test_clicks_are_aggregated_without_loss(client: httpx.AsyncClient) -> None:
    _, token = await register(client, "analyst")
    made = await shorten(client, token, url="https://example.com/stats")
    visits = [
        {"user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile",
         "referer": "https://news.example/story?id=1"},
        {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"},
        {"user-agent": "Mozilla/5.0 (iPad; CPU OS 17_0)"},
        {"user-agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"},
        {"user-agent": "curl/8.0"},
    ]  # fmt: skip
    served = 0
    for i in range(40):
        response = await client.get(f"/{made['code']}?utm_source=mail", headers=visits[i % 5])
        served += response.status_code == 302
    assert served == 40
    path = f"/v1/links/{made['code']}/stats"
    stats: dict[str, Any] = {}
    for _ in range(400):
        stats = (await client.get(path, headers=bearer(token),
                                  params={"granularity": "hour"})).json()  # fmt: skip
        if stats["total"] + stats["bots"] == served:
            break
        await asyncio.sleep(0.025)
    assert stats["total"] == 24 and stats["bots"] == 16  # no click lost, none twice
    assert sum(p["clicks"] for p in stats["series"]) == 24
    assert stats["referrers"] == [{"value": "news.example", "clicks": 8}]
    assert {d["value"]: d["clicks"] for d in stats["devices"]} == {
        "mobile": 8, "desktop": 8, "tablet": 8}  # fmt: skip
    assert stats["utm"]["source"] == [{"value": "mail", "clicks": 24}]
    link = (await client.get(f"/v1/links/{made['code']}", headers=bearer(token))).json()
    assert link["clicks"] == 24
    csv = await client.get(path.replace("/stats", "/stats.csv"), headers=bearer(token))
    assert csv.status_code == 200 and csv.text.startswith("t,clicks,uniques\n")
    assert sum(int(line.split(",")[1]) for line in csv.text.splitlines()[1:]) == 24
    for kind, magic in (("png", b"\x89PNG"), ("svg", b"<?xml")):
        qr = await client.get(f"/v1/links/{made['code']}/qr", headers=bearer(token),
                              params={"format": kind})  # fmt: skip
        assert qr.status_code == 200 and qr.content.startswith(magic), kind
    bad = await client.get(path, headers=bearer(token), params={"granularity": "week"})
    assert bad.status_code == 422
    reversed_range = {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    assert (await client.get(path, headers=bearer(token), params=reversed_range)).status_code == 422


async def test_orphan_visits_are_counted(client: httpx.AsyncClient) -> None:
    for i in range(2):  # a HEAD (a link preview) is no visit: counted, the total would be 5
        assert (await client.head(f"/NoSuch{i}")).status_code == 404
    for i in range(3):
        assert (await client.get(f"/NoSuch{i}")).status_code == 404
    for _ in range(200):
        if "fanout_links_orphan_visits 3.0" in (await client.get("/metrics")).text:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("orphan visits never counted")


async def test_heads_use_no_visits_and_limited_301s_are_not_cacheable(
    client: httpx.AsyncClient,
) -> None:
    _, token = await register(client, "header")
    limited = await shorten(client, token, url="https://example.com/h", max_visits=1,
                            redirect=301)  # fmt: skip
    for _ in range(3):
        head = await client.head("/" + limited["code"])
        assert head.status_code == 301 and head.headers["cache-control"] == "private, no-cache"
    assert (await client.get("/" + limited["code"])).status_code == 301
    assert (await client.get("/" + limited["code"])).status_code == 410
