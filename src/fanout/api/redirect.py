"""The redirect hot path: raw ASGI in front of the application.

``GET /{code}`` (or HEAD) for a code-shaped first segment that no route owns is answered here
without routing, middleware or logging: resolve (LRU → shared cache → store), answer 302/301
with ``Location`` (301 with a bounded ``Cache-Control``), 410 for a deleted, expired or
used-up link, 404 for an unknown code; then hand the click to the sink without waiting for it.
Everything else goes to the wrapped application.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from fanout.api.errors import error_body
from fanout.api.middleware import ClientAddress
from fanout.links.clicks import classify, referrer_host, utm, visitor_hash
from fanout.links.geo import CountryResolver
from fanout.links.model import Click, Link
from fanout.links.resolver import Outcome
from fanout.links.urls import RESERVED

if TYPE_CHECKING:
    from fanout.bootstrap import Platform

__all__ = ["RedirectApp"]

PERMANENT_MAX_AGE_S = 3_600  # a 301 may be cached by browsers: for an hour at most
_CODE = re.compile(r"^/([A-Za-z0-9_-]{1,64})$")
_JSON = [(b"content-type", b"application/json")]


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        match = _CODE.match(scope["path"])
        platform = self._platform()
        if match is None or platform is None or match.group(1).lower() in RESERVED:
            await self.app(scope, receive, send)
            return
        code = match.group(1)
        visit = scope["method"] == "GET"  # a HEAD (link previews) neither visits nor clicks
        resolution = await platform.resolver.resolve(code, visit=visit)
        if resolution.outcome is Outcome.REDIRECT and resolution.link is not None:
            link = resolution.link
            headers = [
                (b"location", link.url.encode()),
                (b"content-length", b"0"),
                (b"cache-control", self._cache_control(link, platform.clock.now_ms())),
            ]
            await send({"type": "http.response.start", "status": link.redirect,
                        "headers": headers})  # fmt: skip
            await send({"type": "http.response.body", "body": b""})
            if visit:
                await platform.click_sink.add(self._click(scope, code, platform))
            return
        if resolution.outcome is Outcome.GONE:
            await _json(send, 410, error_body("gone", "this link is no longer available"))
            return
        await _json(send, 404, error_body("not_found", "no such link"))
        await platform.click_sink.add(self._click(scope, "", platform))  # an orphan visit

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

    def _click(self, scope: Scope, code: str, platform: Platform) -> Click:
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
        return Click(
            code=code, at_ms=platform.clock.now_ms(),
            visitor=visitor_hash(platform.visitor_secret, client, agent),
            referrer_host=referrer_host(referrer), country=country,
            device=device, bot=bot, utm_source=source, utm_medium=medium, utm_campaign=campaign,
        )  # fmt: skip


async def _json(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
