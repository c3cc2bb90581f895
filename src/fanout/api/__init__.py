"""The HTTP/WebSocket API: an ASGI app on Starlette with msgspec wire types."""

from fanout.api.app import create_app

__all__ = ["create_app"]
