"""The HTTP/WebSocket API: an ASGI app on Starlette with msgspec wire types.

The app factory is :func:`fanout.api.app.create_app`.
"""
