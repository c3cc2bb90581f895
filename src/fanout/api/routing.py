"""Operations: one declaration per route, from which both the endpoint and OpenAPI are built.

An :class:`Operation` names its method, path, request body type, query type and response type
(msgspec Structs). The endpoint made from it authenticates, decodes and validates the body
(400/422), calls the handler and encodes its answer; ``None`` becomes 204.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fanout.accounts.model import UserId
from fanout.api import wire
from fanout.core.errors import Forbidden, NotFound, Unauthorized

if TYPE_CHECKING:
    from fanout.bootstrap import Platform

__all__ = ["Context", "Operation", "routes"]

T = TypeVar("T")
MAX_ID = 2**63 - 1  # ids are signed 64-bit in every store
Auth = Literal["none", "user", "service"]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    handler: Callable[..., Awaitable[Any]]
    summary: str
    body: type | None = None
    query: type | None = None
    response: type | None = None
    status: int = 200
    auth: Auth = "user"
    tag: str = ""


@dataclass(slots=True)
class Context:
    """What a handler gets: the request, the platform, and who is calling."""

    request: Request
    platform: Platform
    caller: UserId | None

    @property
    def user_id(self) -> UserId:
        """The authenticated user (the operation declared ``auth="user"``)."""
        if self.caller is None:
            raise Unauthorized("authentication required")
        return self.caller

    def path_id(self, name: str, kind: str) -> int:
        """A 64-bit id from the path; anything else is an unknown resource (404)."""
        raw = self.request.path_params[name]
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_ID:
            raise NotFound(kind, raw)
        return int(raw)

    def query(self, kind: type[T]) -> T:
        return wire.convert(dict(self.request.query_params), kind)


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _endpoint(op: Operation) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        platform: Platform = request.app.state.platform
        caller: UserId | None = None
        if op.auth != "none":
            token = bearer(request)
            if token is None:
                raise Unauthorized("missing bearer token")
            if op.auth == "service":
                if not platform.tokens.is_service_key(token):
                    raise Forbidden("a service key is required")
            else:
                caller = platform.accounts.authenticate(token)
        ctx = Context(request, platform, caller)
        if op.body is not None:
            body: Any = wire.decode(await request.body(), op.body)
            result = await op.handler(ctx, body)
        else:
            result = await op.handler(ctx)
        if result is None:
            return Response(status_code=204)
        if isinstance(result, Response):
            return result
        return Response(wire.encode(result), op.status, media_type="application/json")

    endpoint.__name__ = op.handler.__name__
    return endpoint


def routes(operations: Sequence[Operation]) -> list[Route]:
    return [Route(op.path, _endpoint(op), methods=[op.method]) for op in operations]
