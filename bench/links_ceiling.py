"""The ceiling of ``fanout bench links``: a raw ASGI app that answers every request with a fixed
302, served exactly as ``fanout serve`` serves fanout (same server, same options).

Its response carries the same headers as a fanout redirect, with a ``Location`` of the same
length as the benchmark's links, so the two differ only in the work fanout does per redirect
(resolve, build the click, hand it to the sink) and what runs beside it (the aggregator).

Run as ``python -m bench.links_ceiling {uvicorn|granian} PORT``.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["LOCATION", "app", "factory"]

# The benchmark's targets all have this length (see bench.links_load.target_url).
LOCATION = b"https://example.com/landing/0000000"
_START = {
    "type": "http.response.start",
    "status": 302,
    "headers": [
        (b"location", LOCATION),
        (b"content-length", b"0"),
        (b"cache-control", b"private, no-cache"),
    ],
}
_BODY = {"type": "http.response.body", "body": b""}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send(_START)
    await send(_BODY)


def factory() -> Any:
    """For granian, which ``fanout serve`` runs with ``factory=True``."""
    return app


def _serve(server: str, port: int) -> None:
    # The same calls and options as fanout.cli._serve_uvicorn / _serve_granian, but uvicorn's
    # own httptools protocol: the ceiling is a raw ASGI app, as the benchmark defines it.
    if server == "uvicorn":
        import uvicorn

        from fanout.api.websocket import WebSocketProtocol

        uvicorn.run(
            app,
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            ws=WebSocketProtocol,
            lifespan="on",
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=10,
        )
    elif server == "granian":
        from granian.constants import Interfaces
        from granian.server import Server

        Server(
            "bench.links_ceiling:factory",
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            factory=True,
            log_level="warning",  # type: ignore[arg-type]  # granian's enum takes the name
        ).serve()
    else:
        raise SystemExit(f"unknown server {server!r}")


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
