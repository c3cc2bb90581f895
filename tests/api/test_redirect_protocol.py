"""Cached redirects answered in uvicorn's HTTP protocol (``api/redirect_http.py``), over raw
sockets: the same answers as the ASGI path, in order on a pipelined connection, and every case
the protocol must leave to uvicorn left to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import strategies as st

from fanout.api.redirect import RedirectApp
from tests.api.conftest import AppFactory, register
from tests.api.test_chat_fuzz import sample

pytestmark = pytest.mark.parametrize("transport", ["http"])

Answer = tuple[int, dict[str, str], bytes]


@pytest.fixture
async def asgi_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of requests that reached the redirect front through ASGI."""
    calls: list[str] = []
    original = RedirectApp.__call__

    async def counting(self: RedirectApp, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            calls.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(RedirectApp, "__call__", counting)
    return calls


@pytest.fixture
async def linked(make_client: AppFactory) -> tuple[httpx.AsyncClient, str, str]:
    """A client over HTTP, a token and the code of a 302 to https://example.com/x."""
    client = await make_client()
    _, token = await register(client, "proto")
    made = await client.post("/v1/links", headers={"Authorization": f"Bearer {token}"},
                             json={"url": "https://example.com/x"})  # fmt: skip
    assert made.status_code == 201
    return client, token, made.json()["code"]


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, *requests: bytes) -> None:
        self.writer.write(b"".join(requests))

    async def answer(self, head: bool = False) -> Answer:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                assert name.lower() not in headers, f"{name} sent twice"
                headers[name.lower()] = value.strip()
        size = 0 if head else int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(size), 5)
        return status, headers, body


@pytest.fixture
async def conn(linked: tuple[httpx.AsyncClient, str, str]) -> AsyncIterator[Conn]:
    client = linked[0]
    reader, writer = await asyncio.open_connection(client.base_url.host, client.base_url.port)
    try:
        yield Conn(reader, writer)
    finally:
        writer.close()


ASGI = "Content-Length: 0"  # a header that sends a request through uvicorn's ASGI path


def get(path: str, *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: t", *extra, "", ""]
    return "\r\n".join(lines).encode()


async def test_cached_answers_equal_the_asgi_path_and_skip_it(
    linked: tuple[httpx.AsyncClient, str, str], conn: Conn, asgi_calls: list[str]
) -> None:
    _, _, code = linked
    conn.send(get(f"/{code}", ASGI), get("/Zz9Zz9Q", ASGI))
    slow = [await conn.answer(), await conn.answer()]
    assert asgi_calls == [f"/{code}", "/Zz9Zz9Q"]
    conn.send(get(f"/{code}"), get("/Zz9Zz9Q"))  # now cached: answered in the protocol
    fast = [await conn.answer(), await conn.answer()]
    assert asgi_calls == [f"/{code}", "/Zz9Zz9Q"]
    for (status, headers, body), (status2, headers2, body2) in zip(slow, fast, strict=True):
        assert (status, body) == (status2, body2)
        assert {k: v for k, v in headers.items() if k != "date"} == {
            k: v for k, v in headers2.items() if k != "date"
        }
    assert fast[0][0] == 302 and fast[0][1]["location"] == "https://example.com/x"
    assert fast[1][0] == 404 and json.loads(fast[1][2])["error"]["code"] == "not_found"
    assert {"date", "server", "content-length", "cache-control"} <= set(fast[0][1])


async def test_pipelined_requests_are_answered_in_order(
    linked: tuple[httpx.AsyncClient, str, str], conn: Conn, asgi_calls: list[str]
) -> None:
    client, token, code = linked
    assert (await client.get(f"/{code}")).status_code == 302  # cached from here on
    auth = f"Authorization: Bearer {token}"
    requests = [get(f"/{code}"), get(f"/v1/links/{code}", auth), get(f"/{code}"),
                get("/healthz"), get(f"/{code}")]  # fmt: skip
    conn.send(*requests)  # one write: uvicorn queues what arrives behind a response in flight
    answers = [await conn.answer() for _ in requests]
    assert [a[0] for a in answers] == [302, 200, 302, 200, 302]
    assert json.loads(answers[1][2])["code"] == code


async def test_heads_get_no_body_and_the_connection_stays_in_step(
    linked: tuple[httpx.AsyncClient, str, str], conn: Conn, asgi_calls: list[str]
) -> None:
    _, _, code = linked
    conn.send(get("/Qq1Qq1Q"))
    assert (await conn.answer())[0] == 404  # now cached as unknown
    calls = len(asgi_calls)
    conn.send(get("/Qq1Qq1Q", method="HEAD"), get(f"/{code}", ASGI, method="HEAD"),
              get("/Qq1Qq1Q"))  # fmt: skip
    head404 = await conn.answer(head=True)
    assert head404[0] == 404 and int(head404[1]["content-length"]) > 0 and head404[2] == b""
    assert (await conn.answer(head=True))[0] == 302
    status, _, body = await conn.answer()
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    # The first HEAD was answered in the protocol, the second taken through ASGI, and the GET
    # sent behind it queued there to keep the answers in order.
    assert asgi_calls[calls:] == [f"/{code}", "/Qq1Qq1Q"]


@pytest.mark.parametrize(
    "request_",
    [
        get("/{code}", "Content-Length: 5")[:-2] + b"\r\nhello",  # a body: uvicorn's to read
        get("/{code}", "Connection: close"),
        get("/{code}").replace(b"HTTP/1.1", b"HTTP/1.0"),
        get("/%7Bcode%7D"),  # percent-encoded
        get("/{code}", "Upgrade: h2c", "Connection: Upgrade"),
    ],
    ids=["body", "close", "http10", "percent", "upgrade"],
)
async def test_what_the_protocol_leaves_to_uvicorn(
    linked: tuple[httpx.AsyncClient, str, str], conn: Conn, asgi_calls: list[str],
    request_: bytes,
) -> None:  # fmt: skip
    client, _, code = linked
    assert (await client.get(f"/{code}")).status_code == 302  # cached: could be answered here
    calls = len(asgi_calls)
    raw = request_.replace(b"{code}", code.encode()).replace(b"%7Bcode%7D", _percent(code))
    conn.send(raw)
    status, headers, _ = await conn.answer()
    assert status == 302 and headers["location"] == "https://example.com/x"
    assert len(asgi_calls) == calls + 1


async def test_answers_made_in_a_read_precede_a_bad_request_in_it(
    linked: tuple[httpx.AsyncClient, str, str], conn: Conn, asgi_calls: list[str]
) -> None:
    """Answers are written when the loop iteration ends; uvicorn answers a malformed request
    at once and closes: the answers made before it must still go out, first."""
    client, _, code = linked
    assert (await client.get(f"/{code}")).status_code == 302  # cached: answered here
    calls = len(asgi_calls)
    conn.send(get(f"/{code}"), get(f"/{code}"), b"NOT HTTP AT ALL\r\n\r\n")
    assert [(await conn.answer())[0] for _ in range(3)] == [302, 302, 400]
    assert len(asgi_calls) == calls
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""  # then uvicorn closed it


async def test_what_waits_for_the_store_is_answered_here_in_order(
    linked: tuple[httpx.AsyncClient, str, str], conn: Conn, asgi_calls: list[str]
) -> None:
    """A visit of a limited link (the store counts it) and a code this process never saw
    (scaled: Redis, then PostgreSQL) are resolved in a task of the protocol's; what was
    pipelined behind them waits in uvicorn's queue and is answered after them."""
    client, token, code = linked
    auth = {"Authorization": f"Bearer {token}"}
    made = await client.post("/v1/links", headers=auth,
                             json={"url": "https://example.com/l", "max_visits": 2})  # fmt: skip
    limited = made.json()["code"]
    fresh = (await client.post("/v1/links", headers=auth,
                               json={"url": "https://example.com/f"})).json()["code"]  # fmt: skip
    assert (await client.get(f"/{code}")).status_code == 302  # cached from here on
    calls = len(asgi_calls)
    human = "User-Agent: Mozilla/5.0 Firefox"  # bots are not in the stats' total
    conn.send(get(f"/{limited}", human))
    assert (await conn.answer())[0] == 302
    conn.send(get(f"/{fresh}"))
    status, headers, _ = await conn.answer()
    assert (status, headers["location"]) == (302, "https://example.com/f")
    assert len(asgi_calls) == calls  # both answered here
    # Pipelined behind a visit being counted: uvicorn holds the rest until it is answered.
    requests = [get(f"/{limited}", human), get(f"/{code}"), get("/healthz"),
                get(f"/{limited}", human), get(f"/{fresh}")]  # fmt: skip
    conn.send(*requests)
    assert [(await conn.answer())[0] for _ in requests] == [302, 302, 200, 410, 302]
    stats: dict[str, Any] = {}
    for _ in range(400):
        stats = (await client.get(f"/v1/links/{limited}/stats", headers=auth)).json()
        if stats["total"] >= 2:
            break
        await asyncio.sleep(0.025)
    assert stats["total"] == 2  # the two visits, each counted once


async def test_a_failed_resolution_answers_500_and_closes_like_uvicorn(
    linked: tuple[httpx.AsyncClient, str, str], conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, token, _ = linked
    limited = (await client.post("/v1/links", headers={"Authorization": f"Bearer {token}"},
                                 json={"url": "https://example.com/l", "max_visits": 5})
               ).json()["code"]  # fmt: skip

    async def failing(*_: object) -> object:
        raise RuntimeError("the store is on fire")

    monkeypatch.setattr(RedirectApp, "answer_resolved", failing)
    conn.send(get(f"/{limited}"), get("/healthz"))
    status, headers, body = await conn.answer()
    assert (status, headers["connection"], body) == (500, "close", b"Internal Server Error")
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""  # closed, the rest dropped
    assert (await client.get("/healthz")).status_code == 200  # the server carries on


@pytest.mark.parametrize("server_options", [{"timeout_keep_alive": 0.3}])
async def test_a_request_left_to_uvicorn_is_not_cut_by_the_keep_alive_timer(
    linked: tuple[httpx.AsyncClient, str, str], conn: Conn
) -> None:
    """A cached answer arms uvicorn's keep-alive timer. A request pipelined behind it in the
    same read that goes through ASGI is in flight: the timer must not close its connection
    while its body is still on the way."""
    client, _, code = linked
    assert (await client.get(f"/{code}")).status_code == 302  # cached: answered here
    body = b'{"username": "proto", "password": "wrong-password"}'
    post = get("/v1/sessions", f"Content-Length: {len(body)}", "Content-Type: application/json",
               method="POST")  # fmt: skip
    conn.send(get(f"/{code}"), post + body[:10])
    assert (await conn.answer())[0] == 302
    await asyncio.sleep(0.8)  # past the keep-alive timeout, the request's body half sent
    conn.send(body[10:])
    assert (await conn.answer())[0] == 401


@pytest.mark.parametrize("server_options", [{"timeout_keep_alive": 0.3}])
async def test_a_connection_is_closed_once_silent_for_the_keep_alive_timeout(
    linked: tuple[httpx.AsyncClient, str, str], conn: Conn, asgi_calls: list[str]
) -> None:
    """One timer per connection, not per answer: requests keep it open however long it
    lives; once silent, it closes after one to two timeouts."""
    client, _, code = linked
    assert (await client.get(f"/{code}")).status_code == 302  # cached: answered here
    calls = len(asgi_calls)
    loop = asyncio.get_running_loop()
    for n in range(13):  # four timeouts of activity, a request every 0.1 s
        if n:
            await asyncio.sleep(0.1)
        silent = loop.time()
        conn.send(get(f"/{code}"))
        assert (await conn.answer())[0] == 302
    assert len(asgi_calls) == calls  # all answered in the protocol
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""  # closed by the server
    assert 0.3 <= loop.time() - silent < 0.9


def _percent(code: str) -> bytes:
    return "".join(f"%{ord(c):02X}" for c in code).encode()


async def test_clicks_answered_in_the_protocol_are_all_counted(
    linked: tuple[httpx.AsyncClient, str, str], conn: Conn, asgi_calls: list[str]
) -> None:
    client, token, code = linked
    n = 60
    visit = get(f"/{code}?utm_source=x", "User-Agent: Mozilla/5.0 Firefox")
    conn.send(visit.replace(b"\r\n\r\n", f"\r\n{ASGI}\r\n\r\n".encode()))
    assert (await conn.answer())[0] == 302  # through ASGI, and cached
    conn.send(*[visit] * (n - 1))  # pipelined: none waits behind an answer in flight
    assert [(await conn.answer())[0] for _ in range(n - 1)] == [302] * (n - 1)
    assert asgi_calls == [f"/{code}"]
    stats: dict[str, Any] = {}
    for _ in range(400):
        stats = (await client.get(f"/v1/links/{code}/stats",
                                  headers={"Authorization": f"Bearer {token}"})).json()  # fmt: skip
        if stats["total"] >= n:
            break
        await asyncio.sleep(0.025)
    assert stats["total"] == n  # none lost, none twice
    assert stats["utm"]["source"] == [{"value": "x", "clicks": n}]
    assert stats["devices"] == [{"value": "desktop", "clicks": n}]


TARGETS = ["302", "301", "unknown", "healthz", "api"]
EXPECTED = {"302": 302, "301": 301, "unknown": 404, "healthz": 200, "api": 401}
request_shapes = st.tuples(
    st.sampled_from(TARGETS),
    st.sampled_from(["GET", "HEAD"]),
    st.sampled_from(["", "body", "percent", "query"]),
)
conversations = st.tuples(
    st.lists(st.lists(request_shapes, min_size=1, max_size=8), min_size=1, max_size=4),
    st.lists(st.integers(min_value=1, max_value=400), max_size=6),  # where the bytes split
)


async def test_any_mix_of_requests_is_answered_in_order(
    make_client: AppFactory, asgi_calls: list[str]
) -> None:
    """Pipelined batches of cached and uncached redirects, routes, HEADs and fall-through
    cases, their bytes split anywhere: every answer comes back, in order, as the ASGI path
    would give it, and the connection stays usable."""
    client = await make_client()
    _, token = await register(client, "mixer")
    auth = {"Authorization": f"Bearer {token}"}
    codes = {}
    for target, redirect in (("302", 302), ("301", 301)):
        body = {"url": f"https://example.com/{target}", "redirect": redirect}
        made = await client.post("/v1/links", headers=auth, json=body)
        codes[target] = made.json()["code"]
    paths = {**{t: f"/{c}" for t, c in codes.items()}, "unknown": "/Uu7Uu7U",
             "healthz": "/healthz", "api": "/v1/links"}  # fmt: skip
    sent = 0
    for batches, cuts in sample(conversations, 25):
        reader, writer = await asyncio.open_connection(client.base_url.host, client.base_url.port)
        conn = Conn(reader, writer)
        try:
            for batch in batches:
                raw = b"".join(_request(paths, shape) for shape in batch)
                for piece in _split(raw, cuts):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.001)  # separate reads on the server, most of the time
                for target, method, variant in batch:
                    status, headers, body = await conn.answer(head=method == "HEAD")
                    assert status == EXPECTED[target], (batches, target, method, variant)
                    if target in ("302", "301"):
                        assert headers["location"] == f"https://example.com/{target}"
                    if method == "HEAD":
                        assert body == b""
                    sent += target in ("302", "301", "unknown")
        finally:
            writer.close()
    redirected = [p for p in asgi_calls if p in (paths["302"], paths["301"], paths["unknown"])]
    assert len(redirected) < sent  # the protocol answered some of them itself


def _request(paths: dict[str, str], shape: tuple[str, str, str]) -> bytes:
    target, method, variant = shape
    path, extra = paths[target], []
    if variant == "body":
        extra.append(ASGI)
    elif variant == "percent" and target in ("302", "301", "unknown"):
        path = "/" + _percent(path[1:]).decode()
    elif variant == "query":
        path += "?utm_source=x&q=%20y"
    return get(path, *extra, method=method)


def _split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if c < len(raw)})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
