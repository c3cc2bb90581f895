"""The only place errors become HTTP statuses and WebSocket close codes."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from fanout.core import errors
from fanout.core.ratelimit import retry_after_header

__all__ = ["ERROR_STATUS", "WS_CLOSE", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

ERROR_STATUS: dict[type[errors.FanoutError], int] = {
    errors.MalformedInput: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Gone: 410,
    errors.TooLarge: 413,
    errors.Invalid: 422,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
}

WS_CLOSE = {
    "unauthorized": 4401,  # bad or missing token
    "slow_consumer": 4408,  # outgoing queue overflowed: reconnect and resume
    "going_away": 1001,  # server shutting down
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
}

_encoder = msgspec.json.Encoder()


def status_of(exc: errors.FanoutError) -> int:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def error_body(code: str, message: str, details: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return _encoder.encode({"error": error})


def error_response(exc: errors.FanoutError) -> Response:
    headers = {}
    if isinstance(exc, errors.RateLimited):
        headers["Retry-After"] = retry_after_header(exc.retry_after_s)
    return Response(
        error_body(exc.code, exc.message, exc.details),
        status_code=status_of(exc),
        media_type="application/json",
        headers=headers,
    )


async def _fanout_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.FanoutError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = "no such route" if exc.status_code == 404 else str(exc.detail)
    return Response(
        error_body(code, message),
        status_code=exc.status_code,
        media_type="application/json",
        headers=exc.headers,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(
        error_body("internal", "the server failed; this is a bug"),
        status_code=500,
        media_type="application/json",
    )


def install_error_handlers() -> dict[Any, Any]:
    """Exception handlers for ``Starlette(exception_handlers=...)``."""
    return {
        errors.FanoutError: _fanout_error,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
