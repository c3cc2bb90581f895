"""The one exception tree of fanout.

    FanoutError                  base of everything raised on purpose
    ├── Invalid                  a field or value a client sent is not acceptable (422)
    ├── MalformedInput           the body is not parseable at all (400)
    ├── Unauthorized             no, bad or expired credentials (401)
    ├── Forbidden                authenticated but not allowed (403)
    ├── NotFound                 the named resource does not exist (404)
    ├── Conflict                 the resource exists or is in a conflicting state (409)
    ├── Gone                     the resource existed and is no longer served (410)
    ├── TooLarge                 a body or upload is over its limit (413)
    ├── RateLimited              too many requests; carries retry_after_s (429)
    └── Unavailable              a store or the log cannot be reached (503)

Product code raises these; adapters translate driver errors into them (re-raised ``from exc``);
``fanout.api.errors`` is the only place that maps them to HTTP statuses and close codes.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conflict",
    "FanoutError",
    "Forbidden",
    "Gone",
    "Invalid",
    "MalformedInput",
    "NotFound",
    "RateLimited",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]


class FanoutError(Exception):
    """Base of every error fanout raises on purpose. ``code`` is the wire error code."""

    code = "error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Invalid(FanoutError):
    """A value is not acceptable; ``details`` names the offending fields."""

    code = "invalid"


class MalformedInput(FanoutError):
    code = "malformed_json"


class Unauthorized(FanoutError):
    code = "unauthorized"


class Forbidden(FanoutError):
    code = "forbidden"


class NotFound(FanoutError):
    code = "not_found"

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident} was not found")
        self.kind = kind
        self.ident = ident


class Conflict(FanoutError):
    code = "conflict"


class Gone(FanoutError):
    code = "gone"


class TooLarge(FanoutError):
    code = "too_large"


class RateLimited(FanoutError):
    code = "rate_limited"

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("too many requests, retry later")
        self.retry_after_s = retry_after_s


class Unavailable(FanoutError):
    code = "unavailable"
