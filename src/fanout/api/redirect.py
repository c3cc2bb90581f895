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

import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
# Memoised per process (dropped whole when full): the code a path names (the pattern match
# costs ~1 us) and what a click records of a client (its visitor hash, device, country,
# referrer host). Each costs microseconds a redirect to rebuild, on the one thread that serves
# every redirect. The answers to live links are kept as long as the resolver keeps the links
# (its byte budget counts them). Paths: ~150 B each, ~10 MB at most; over 100 000 Zipf(1.1)
# codes a dict of 16 384 cleared when full re-matched ~17 % of redirects, of 65 536 ~6 %.
PROFILES_KEPT = 16_384
PATHS_KEPT = 65_536
PATH_KEY_MAX = 65  # "/" and a code or alias (64 at most): longer paths are not kept
PROFILE_KEY_MAX = 1_024  # bytes of user agent and referrer past which a profile is not kept
# A kept answer's hits reach the resolver's ``hit`` (its LRU order, a refresh falling due) at
# most this often per code; the others are only counted. At 37 000 redirects a second over a
# Zipf(1.1) spread of 100 000 codes, 3 in 4 are of a code told of within the last half second
# (simulated), each spared an LRU reordering and a lookup. A refresh falls due this much later
# at most, which needs half an entry's lifetime to be longer (2.5 s for the shortest lifetime
# the platform gives, ``resolver.POSITIVE_TTL_S``); the LRU's order is to within it.
HIT_EVERY_S = 0.5
_FOREVER_MS = 2**63 - 1
_CODE = re.compile(r"^/([A-Za-z0-9_-]{1,64})$")
_GONE = error_body("gone", "this link is no longer available")
_NOT_FOUND = error_body("not_found", "no such link")


def _lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    """``headers`` as HTTP/1.1 header lines, each ending in CRLF."""
    return b"".join(b"%s: %s\r\n" % pair for pair in headers)


_NO_BODY: Message = {"type": "http.response.body", "body": b""}  # every answer without a body


class Response(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    click: str | None  # the code to record a click for ("" for an orphan visit), or none
    lines: bytes  # ``headers`` encoded, for a server that writes the response itself
    # The ASGI messages, built once and shared by every request for the link: never to be
    # changed in place (servers, like the raw-ASGI benchmark app's, only read them).
    start: Message
    end: Message

    @classmethod
    def of(
        cls, status: int, headers: list[tuple[bytes, bytes]], body: bytes, click: str | None
    ) -> Response:
        start = {"type": "http.response.start", "status": status, "headers": headers}
        end = {"type": "http.response.body", "body": body} if body else _NO_BODY
        return cls(status, headers, body, click, _lines(headers), start, end)


def _error(status: int, body: bytes, click: str | None) -> Response:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return Response.of(status, headers, body, click)


_GONE_RESPONSE = _error(410, _GONE, None)
_ORPHAN_RESPONSE = _error(404, _NOT_FOUND, "")  # an orphan visit
_UNKNOWN_HEAD = _ORPHAN_RESPONSE._replace(click=None)  # a HEAD neither visits nor clicks
_NO_UTM = ("", "", "")


class _Profile(NamedTuple):
    """What a click records of its client, beside the code, time and campaign (in the order of
    :class:`Click`'s fields)."""

    visitor: str
    referrer_host: str
    country: str
    device: str
    bot: bool


class _Kept:
    """An answer kept for a live link (see ``RedirectApp._answers``)."""

    __slots__ = ("response", "told", "trusted", "until")

    def __init__(self, trusted: float, until: int, response: Response) -> None:
        self.trusted = trusted  # clock.monotonic(): while the resolver trusts its entry
        self.until = until  # clock.now_ms(): while its headers stay the same
        self.response = response
        self.told = -math.inf  # when the resolver last heard of a hit (clock.monotonic())


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
        # By code, for the platform ``_answered``: the redirect answering a live link while
        # the resolver trusts its entry (``clock.monotonic()``) and while the answer's headers
        # stay the same (``clock.now_ms()``: expiry; a 301's max-age shrinks in its last hour).
        # The resolver tells when it drops the entry (:meth:`_dropped`).
        self._answers: dict[str, _Kept] = {}
        self._answered: Platform | None = None
        self._paths: dict[str, str | None] = {}  # what code_of said of a path
        # By (client, user agent, referrer up to its host, trusted country header), for one
        # platform.
        self._profiles: dict[tuple[str, bytes, bytes, bytes], _Profile] = {}
        self._profiled: Platform | None = None

    def platform(self) -> Platform | None:
        """The running platform, or ``None`` before it started (the app answers 503 then)."""
        return self._platform()

    def code_of(self, method: str, path: str) -> str | None:
        """The code a request asks to be redirected by, or ``None`` if it is not one."""
        if method != "GET" and method != "HEAD":
            return None
        try:
            return self._paths[path]
        except KeyError:
            pass
        match = _CODE.match(path)
        code = None if match is None or match.group(1).lower() in RESERVED else match.group(1)
        if len(path) <= PATH_KEY_MAX:
            if len(self._paths) >= PATHS_KEPT:
                self._paths.clear()
            self._paths[path] = code
        return code

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """A plain function: what is not a redirect is the wrapped app's coroutine alone."""
        code = self.code_of(scope["method"], scope["path"]) if scope["type"] == "http" else None
        platform = self._platform()
        if code is None or platform is None:
            return self.app(scope, receive, send)
        return self._serve(platform, scope, send, code)

    async def _serve(self, platform: Platform, scope: Scope, send: Send, code: str) -> None:
        head = scope["method"] == "HEAD"  # a HEAD (link previews) neither visits nor clicks
        click: Click | None = None
        # What can be answered at once is, with no coroutine of the resolver's or the sink's
        # (the path a server without uvicorn's protocol, granian, takes for every redirect).
        response = self.answer_cached(scope, code, head)  # its click, if any, already queued
        if response is None:
            response, click = await self.answer_resolved(platform, scope, code, head)
        await send(response.start)
        await send(response.end)
        if click is not None:  # the sink may make a redirect wait for room: after answering
            await platform.click_sink.add(click)

    def answer_cached(self, scope: Mapping[str, Any], code: str, head: bool) -> Response | None:
        """The answer for ``code`` if this process can give it at once — the link (or its
        absence) cached here or read without a wait, and room for the click — with the click
        already handed to the sink; else ``None``, and the request takes the ASGI path.
        ``scope`` needs the request's ``headers``, ``client`` and ``query_string``."""
        platform = self._platform()
        if platform is None or platform.click_sink.full():
            return None
        now_ms = platform.clock.now_ms()
        kept = self._answers.get(code)
        if (
            kept is not None
            and now_ms < kept.until
            and (now := platform.clock.monotonic()) < kept.trusted
            and platform is self._answered
        ):
            if now - kept.told < HIT_EVERY_S:
                platform.resolver.hit_again()
            else:
                kept.told = now
                platform.resolver.hit(code, now)
            response = kept.response._replace(click=None) if head else kept.response
        else:
            resolution = platform.resolver.resolve_now(code, visit=not head)
            if resolution is None:
                return None
            response = self._response(platform, resolution, head, now_ms)
        if response.click is not None:
            platform.click_sink.add_nowait(self._click(scope, response.click, platform, now_ms))
        return response

    async def answer_resolved(
        self, platform: Platform, scope: Mapping[str, Any], code: str, head: bool
    ) -> tuple[Response, Click | None]:
        """The answer for ``code`` once resolved (shared cache, store, a limited link's visit),
        and its click, for the caller to hand to the sink after answering (the sink may make
        it wait for room)."""
        resolution = await platform.resolver.resolve(code, visit=not head)
        now_ms = platform.clock.now_ms()
        response = self._response(platform, resolution, head, now_ms)
        if response.click is None:
            return response, None
        return response, self._click(scope, response.click, platform, now_ms)

    def _response(
        self, platform: Platform, resolution: Resolution, head: bool, now_ms: int
    ) -> Response:
        link = resolution.link
        if resolution.outcome is Outcome.REDIRECT and link is not None:
            response = self._redirect(platform, link, now_ms)
            return response._replace(click=None) if head else response
        if resolution.outcome is Outcome.GONE:
            return _GONE_RESPONSE
        return _UNKNOWN_HEAD if head else _ORPHAN_RESPONSE

    def _redirect(self, platform: Platform, link: Link, now_ms: int) -> Response:
        """A redirect to ``link``, kept for as long as the resolver trusts its entry and the
        headers stay the same — unless the link counts its visits (each must reach the store)."""
        headers = [
            (b"location", link.url.encode()),
            (b"content-length", b"0"),
            (b"cache-control", self._cache_control(link, now_ms)),
        ]
        response = Response.of(link.redirect, headers, b"", link.code)
        trusted = platform.resolver.trusted_until(link)
        if link.max_visits is not None or trusted <= platform.clock.monotonic():
            return response
        until = _FOREVER_MS if link.expires_ms is None else link.expires_ms
        if link.redirect == 301 and link.expires_ms is not None:
            until -= PERMANENT_MAX_AGE_S * 1000  # then max-age shrinks
        if now_ms < until:
            if platform is not self._answered:  # another platform, another resolver
                if self._answered is not None:
                    self._answered.resolver.unwatch(self._dropped)
                self._answers.clear()
                self._answered = platform
                platform.resolver.watch(self._dropped)
            self._answers[link.code] = _Kept(trusted, until, response)
        return response

    def _dropped(self, code: str | None) -> None:
        """The resolver no longer trusts what it cached of ``code`` (of any code: ``None``)."""
        if code is None:
            self._answers.clear()
        else:
            self._answers.pop(code, None)

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
        agent = referrer = country = b""
        for name, value in scope["headers"]:
            if name == b"user-agent":
                agent = value
            elif name == b"referer":
                referrer = value
            elif name == self._country:
                country = value
        if self._address.trusts_proxies:
            client = self._address.of(scope)
            if not self._address.trusted_peer(scope):
                country = b""  # only a trusted proxy's header is believed
        else:
            peer = scope.get("client")
            client, country = (str(peer[0]) if peer else "unknown"), b""
        if platform is not self._profiled:  # another platform, another visitor secret
            self._profiles.clear()
            self._profiled = platform
        if referrer:  # only its host is recorded: a path (click ids) must not split the key
            referrer = b"/".join(referrer.split(b"/", 3)[:3])
        key = (client, agent, referrer, country)
        profile = self._profiles.get(key)
        if profile is None:
            profile = self._profile(platform, client, agent, referrer, country)
            if len(agent) + len(referrer) <= PROFILE_KEY_MAX:  # a flood of huge headers: not kept
                if len(self._profiles) >= PROFILES_KEPT:
                    self._profiles.clear()
                self._profiles[key] = profile
        query = scope.get("query_string", b"")
        source, medium, campaign = utm(query.decode("latin-1")) if b"utm_" in query else _NO_UTM
        # Positional (a profile holds Click's fields in order): cheaper than keywords.
        return Click(code, now_ms, *profile, source, medium, campaign)

    def _profile(
        self, platform: Platform, client: str, agent: bytes, referrer: bytes, country: bytes
    ) -> _Profile:
        user_agent = agent.decode("latin-1")[:512]
        device, bot = classify(user_agent)
        header_country = country.decode("latin-1") if country else None
        return _Profile(
            visitor=visitor_hash(platform.visitor_secret, client, user_agent),
            referrer_host=referrer_host(referrer.decode("latin-1")[:2048]),
            country=self._countries.country(client, header_country),
            device=device,
            bot=bot,
        )
