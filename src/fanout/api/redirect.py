"""The redirect hot path: raw ASGI in front of the application.

``GET /{code}`` (or HEAD) for a code-shaped first segment that no route owns is answered here
without routing, middleware or logging: resolve (LRU → shared cache → store), answer 302/301
with ``Location`` (301 with a bounded ``Cache-Control``), 410 for a deleted, expired or
used-up link, 404 for an unknown code; then hand the click to the sink without waiting for it.
Everything else goes to the wrapped application.

Under uvicorn, ``api/redirect_http.py`` answers what this process has cached before uvicorn
builds an ASGI request at all, through :meth:`RedirectApp.answer_cached`: the same answers,
from the same code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from starlette.types import ASGIApp, Receive, Scope, Send

from fanout.api.errors import error_body
from fanout.api.middleware import ClientAddress
from fanout.links.clicks import classify, referrer_host, utm, visitor_hash
from fanout.links.geo import CountryResolver
from fanout.links.model import Click, Link
from fanout.links.resolver import Outcome, Resolution
from fanout.links.urls import RESERVED

if TYPE_CHECKING:
    from fanout.bootstrap import Platform

__all__ = ["RedirectApp", "Response"]

PERMANENT_MAX_AGE_S = 3_600  # a 301 may be cached by browsers: for an hour at most
_CODE = re.compile(r"^/([A-Za-z0-9_-]{1,64})$")
_GONE = error_body("gone", "this link is no longer available")
_NOT_FOUND = error_body("not_found", "no such link")
_GONE_HEADERS = [(b"content-type", b"application/json"),
                 (b"content-length", b"%d" % len(_GONE))]  # fmt: skip
_NOT_FOUND_HEADERS = [(b"content-type", b"application/json"),
                      (b"content-length", b"%d" % len(_NOT_FOUND))]  # fmt: skip


class Response(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    click: str | None  # the code to record a click for ("" for an orphan visit), or none


class RedirectApp:
    def __init__(
        self,
        app: ASGIApp,
        platform: Callable[[], Platform | None],
        address: ClientAddress,
        country_header: str,
        countries: CountryResolver,
    ) -> None:
        self.app = app
        self._platform = platform
        self._address = address
        self._country = country_header.lower().encode("latin-1")
        self._countries = countries

    def code_of(self, method: str, path: str) -> str | None:
        """The code a request asks to be redirected by, or ``None`` if it is not one."""
        if method != "GET" and method != "HEAD":
            return None
        match = _CODE.match(path)
        if match is None or match.group(1).lower() in RESERVED:
            return None
        return match.group(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        code = self.code_of(scope["method"], scope["path"]) if scope["type"] == "http" else None
        platform = self._platform()
        if code is None or platform is None:
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"  # a HEAD (link previews) neither visits nor clicks
        resolution = await platform.resolver.resolve(code, visit=not head)
        now_ms = platform.clock.now_ms()
        response = self._response(resolution, code, head, now_ms)
        await send({"type": "http.response.start", "status": response.status,
                    "headers": response.headers})  # fmt: skip
        await send({"type": "http.response.body", "body": response.body})
        if response.click is not None:
            await platform.click_sink.add(self._click(scope, response.click, platform, now_ms))

    def answer_cached(self, scope: Mapping[str, Any], code: str, head: bool) -> Response | None:
        """The answer for ``code`` if this process can give it at once — the link (or its
        absence) cached here or read without a wait, and room for the click — with the click
        already handed to the sink; else ``None``, and the request takes the ASGI path.
        ``scope`` needs the request's ``headers``, ``client`` and ``query_string``."""
        platform = self._platform()
        if platform is None or platform.click_sink.full():
            return None
        resolution = platform.resolver.resolve_now(code, visit=not head)
        if resolution is None:
            return None
        now_ms = platform.clock.now_ms()
        response = self._response(resolution, code, head, now_ms)
        if response.click is not None:
            platform.click_sink.add_nowait(self._click(scope, response.click, platform, now_ms))
        return response

    def _response(self, resolution: Resolution, code: str, head: bool, now_ms: int) -> Response:
        link = resolution.link
        if resolution.outcome is Outcome.REDIRECT and link is not None:
            headers = [
                (b"location", link.url.encode()),
                (b"content-length", b"0"),
                (b"cache-control", self._cache_control(link, now_ms)),
            ]
            return Response(link.redirect, headers, b"", None if head else code)
        if resolution.outcome is Outcome.GONE:
            return Response(410, _GONE_HEADERS, _GONE, None)
        return Response(404, _NOT_FOUND_HEADERS, _NOT_FOUND, "")  # an orphan visit

    @staticmethod
    def _cache_control(link: Link, now_ms: int) -> bytes:
        """A 301 may be cached, for an hour at most and never past the link's expiry; a link
        with a visit limit is never cached (every visit must reach us to be counted)."""
        if link.redirect != 301 or link.max_visits is not None:
            return b"private, no-cache"
        max_age = PERMANENT_MAX_AGE_S
        if link.expires_ms is not None:
            max_age = min(max_age, max(0, (link.expires_ms - now_ms) // 1000))
        return b"max-age=%d" % max_age

    def _click(self, scope: Mapping[str, Any], code: str, platform: Platform, now_ms: int) -> Click:
        agent = referrer = ""
        header_country: str | None = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                agent = value.decode("latin-1")[:512]
            elif name == b"referer":
                referrer = value.decode("latin-1")[:2048]
            elif name == self._country and self._address.trusted_peer(scope):
                header_country = value.decode("latin-1")
        device, bot = classify(agent)
        source, medium, campaign = utm(scope.get("query_string", b"").decode("latin-1"))
        client = self._address.of(scope)
        country = self._countries.country(client, header_country)
        visitor = visitor_hash(platform.visitor_secret, client, agent)
        # Positional (the field order of Click): measurably cheaper than keywords per redirect.
        return Click(code, now_ms, visitor, referrer_host(referrer), country, device, bot,
                     source, medium, campaign)  # fmt: skip
