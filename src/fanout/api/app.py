"""The ASGI application factory.

``create_app(settings)`` returns a plain ASGI app. Its lifespan builds the platform
(``bootstrap.build``) on startup and closes it on shutdown, so one process serves the API and,
in embedded mode, runs every consumer too. Outermost first: the redirect path, the WebSocket
gateway (``/v1/ws``), then metrics, rate limiting, body size limit, Starlette's routing and the
error table of ``api/errors.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp

from fanout.api import accounts, chat, feed, links, ops
from fanout.api.errors import install_error_handlers
from fanout.api.metrics import MetricsMiddleware
from fanout.api.middleware import BodyLimitMiddleware, ClientAddress, RateLimitMiddleware
from fanout.api.openapi import build_openapi
from fanout.api.redirect import RedirectApp
from fanout.api.redirect_http import RedirectHttpProtocol
from fanout.api.routing import Operation, routes
from fanout.api.websocket import WebSocketProtocol
from fanout.api.wire import encode
from fanout.api.ws import GatewayFront, WebSocketEndpoint
from fanout.bootstrap import Platform, build
from fanout.core.config import Settings
from fanout.core.ratelimit import RateLimiter
from fanout.links.geo import CountryResolver, HeaderCountry, MaxMindCountry
from fanout.metrics import Metrics

__all__ = ["OPERATIONS", "create_app", "uvicorn_options"]

OPERATIONS: list[Operation] = [
    *ops.OPERATIONS,
    *accounts.OPERATIONS,
    *feed.OPERATIONS,
    *links.OPERATIONS,
    *chat.OPERATIONS,
]


def create_app(
    settings: Settings, *, operations: Sequence[Operation] | None = None, **build_options: Any
) -> ASGIApp:
    """The fanout ASGI app; ``build_options`` go to :func:`fanout.bootstrap.build`.

    ``operations`` narrows the routes (a worker process serves only the ops routes).
    """
    served = list(OPERATIONS if operations is None else operations)
    running: Platform | None = None  # read on every redirect: a closure, not app.state

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal running
        platform = await build(settings, **build_options)
        app.state.platform = running = platform
        try:
            yield
        finally:
            running = None
            await platform.close()

    app = Starlette(
        routes=routes(served),
        exception_handlers=install_error_handlers(),
        lifespan=lifespan,
    )
    app.state.openapi = encode(build_openapi(served))

    def platform() -> Platform | None:
        return running

    def limiter() -> RateLimiter | None:
        p = platform()
        return p.rate_limiter if p else None

    def metrics() -> Metrics | None:
        p = platform()
        return p.metrics if p else None

    def on_limited(scope_name: str) -> None:
        m = metrics()
        if m is not None:
            m.rate_limited.labels(scope_name).inc()

    def user_of(token: str) -> int | None:
        p = platform()
        return p.user_of_token(token) if p else None

    address = ClientAddress(settings.trusted_proxies)
    stack: ASGIApp = BodyLimitMiddleware(app, _limit_for(settings))
    stack = RateLimitMiddleware(
        stack, limiter, user_of, address, settings.rate_limit_per_s, on_limited
    )
    stack = MetricsMiddleware(stack, metrics)
    # Outermost: redirects skip routing, metrics and rate limiting (the hot path).
    countries: CountryResolver = (
        MaxMindCountry(settings.links_geoip_db) if settings.links_geoip_db else HeaderCountry()
    )
    if operations is None:  # a worker process holds no WebSockets
        stack = GatewayFront(stack, WebSocketEndpoint(platform))
    # The redirect front first: it hands anything but a redirect to the stack without a
    # coroutine of its own (an idle WebSocket holds no frame of it), and a redirect meets one
    # coroutine of ours instead of two.
    return RedirectApp(stack, platform, address, settings.links_country_header, countries)


def uvicorn_options(app: ASGIApp) -> dict[str, Any]:
    """How ``fanout serve`` runs ``app`` (from :func:`create_app`) under uvicorn: uvloop,
    httptools with cached redirects answered in the protocol (``api/redirect_http.py``), the
    lean WebSocket protocol, no access log. Client addresses are fanout's to work out
    (``FANOUT_TRUSTED_PROXIES``), as under granian: uvicorn's own ``X-Forwarded-For``
    handling is off."""
    http = RedirectHttpProtocol.serving(app) if isinstance(app, RedirectApp) else "httptools"
    return {
        "loop": "uvloop",
        "http": http,
        "ws": WebSocketProtocol,  # ~3 KB per idle socket against websockets-sansio's ~20 KB
        "lifespan": "on",
        "interface": "asgi3",  # the redirect front's __call__ is a plain function
        "access_log": False,  # no log line per request on the hot paths
        "proxy_headers": False,
    }


def _limit_for(settings: Settings) -> Callable[[str], int]:
    def limit(path: str) -> int:
        if path == "/v1/uploads":
            return settings.chat_upload_max_bytes
        return settings.max_body_bytes

    return limit
