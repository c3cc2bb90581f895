"""Raw ASGI middleware on every HTTP request: client address, body size limit, rate limiting."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fanout.api.errors import error_body
from fanout.core.errors import TooLarge, Unavailable
from fanout.core.ratelimit import RateLimiter, retry_after_header

__all__ = ["BodyLimitMiddleware", "ClientAddress", "RateLimitMiddleware"]

LIMITER_TIMEOUT_S = 0.2  # a slower limiter lets the request through rather than stall it
BURST_FACTOR = 5  # a client may burst to five seconds' worth of requests
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes must never be refused

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    """The client's IP: the peer, or ``X-Forwarded-For`` when the peer is a trusted proxy.

    Walking ``X-Forwarded-For`` from the right, the first address that is not itself a trusted
    proxy is the client; anything left of it could have been written by the client.
    """

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self._trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in trusted_proxies
        )

    @property
    def trusts_proxies(self) -> bool:
        """Whether any proxy is trusted (else the client is always the peer)."""
        return bool(self._trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def trusted_peer(self, scope: Mapping[str, Any]) -> bool:
        """Whether the peer is a trusted proxy (whose headers may be believed)."""
        client = scope.get("client")
        return bool(self._trusted) and client is not None and self._is_trusted(str(client[0]))

    def of(self, scope: Mapping[str, Any]) -> str:
        client = scope.get("client")
        peer = str(client[0]) if client else "unknown"
        if not self._trusted or not self._is_trusted(peer):
            return str(peer)
        # Proxies may append their own header line: every line counts, in order.
        lines = [
            v.decode("latin-1") for n, v in scope.get("headers", ()) if n == b"x-forwarded-for"
        ]
        hops = [h.strip() for h in ",".join(lines).split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return str(peer)


class BodyLimitMiddleware:
    """Refuse bodies over ``limit_for(path)`` bytes with 413, whether announced or streamed."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self._limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope["path"])
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    announced = 0
                if announced > limit:
                    await _refuse(send, 413, "too_large", f"the body is over {limit} bytes")
                    return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise TooLarge(f"the body is over {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


class RateLimitMiddleware:
    """Token buckets per client IP and per authenticated user; 429 with ``Retry-After``."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: Callable[[], RateLimiter | None],
        user_of: Callable[[str], int | None],
        address: ClientAddress,
        rate_per_s: float,
        on_limited: Callable[[str], None] = lambda scope: None,
    ) -> None:
        self.app = app
        self._limiter = limiter
        self._user_of = user_of
        self._address = address
        self._rate = rate_per_s
        self._burst = rate_per_s * BURST_FACTOR
        self._on_limited = on_limited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self._limiter()
        if (
            scope["type"] != "http"
            or self._rate <= 0
            or limiter is None
            or scope["path"] in UNLIMITED_PATHS
        ):
            await self.app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(LIMITER_TIMEOUT_S):
                wait = await limiter.hit("ip:" + self._address.of(scope), self._rate, self._burst)
                scope_name = "ip"
                if wait == 0.0:
                    user = self._user(scope)
                    if user is not None:
                        wait = await limiter.hit(f"user:{user}", self._rate, self._burst)
                        scope_name = "user"
        except (Unavailable, TimeoutError):
            # Fail open: a limiter outage must not take the API down with it (readiness
            # reports the store); the requests are counted so the outage shows in metrics.
            self._on_limited("unavailable")
            wait = 0.0
        if wait > 0.0:
            self._on_limited(scope_name)
            await _refuse(
                send, 429, "rate_limited", "too many requests, retry later",
                headers=[(b"retry-after", retry_after_header(wait).encode())],
            )  # fmt: skip
            return
        await self.app(scope, receive, send)

    def _user(self, scope: Scope) -> int | None:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    return self._user_of(token.strip())
        return None


async def _refuse(
    send: Send, status: int, code: str, message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:  # fmt: skip
    body = error_body(code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
