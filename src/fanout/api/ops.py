"""Operations routes: liveness, readiness, metrics, the OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from fanout.api import wire
from fanout.api.routing import Context, Operation
from fanout.core.errors import Unavailable

__all__ = ["OPERATIONS"]

READY_TIMEOUT_S = 2.0  # a dependency slower than this counts as down


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    checks: dict[str, str]


async def healthz(ctx: Context) -> Health:
    return Health("ok")


async def readyz(ctx: Context) -> Response:
    checks: dict[str, str] = {}
    for name, ping in ctx.platform.health_checks().items():
        try:
            await asyncio.wait_for(ping(), READY_TIMEOUT_S)
            checks[name] = "ok"
        except (Unavailable, OSError, TimeoutError) as exc:
            checks[name] = f"down: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    body = Readiness("ok" if ready else "unavailable", checks)
    return Response(wire.encode(body), 200 if ready else 503, media_type="application/json")


async def metrics(ctx: Context) -> Response:
    platform = ctx.platform
    # While the log is down, serve the last known lag rather than no metrics at all.
    with contextlib.suppress(Unavailable, OSError, TimeoutError):
        await asyncio.wait_for(platform.metrics.refresh_lag(platform.log), READY_TIMEOUT_S)
        orphans = await asyncio.wait_for(platform.links.orphan_visits(), READY_TIMEOUT_S)
        platform.metrics.orphan_visits.set(orphans)
    resolver = platform.resolver  # plain counters on the hot path, published at scrape time
    platform.metrics.redirect_lookups.labels("all").set(resolver.lookups)
    platform.metrics.redirect_lookups.labels("lru_hit").set(resolver.hits)
    platform.metrics.chat_connections.set(platform.hub.connections)
    platform.metrics.chat_frames.set(platform.hub.frames_out)
    return Response(platform.metrics.render(), media_type="text/plain; version=0.0.4")


async def openapi(ctx: Context) -> Response:
    request: Request = ctx.request
    return Response(request.app.state.openapi, media_type="application/json")


OPERATIONS = [
    Operation("GET", "/healthz", healthz, "The process is alive", response=Health,
              auth="none", tag="operations"),
    Operation("GET", "/readyz", readyz, "Stores and log are reachable (else 503)",
              response=Readiness, auth="none", tag="operations"),
    Operation("GET", "/metrics", metrics, "Prometheus metrics", auth="none", tag="operations"),
    Operation("GET", "/openapi.json", openapi, "This document", auth="none", tag="operations"),
]  # fmt: skip
