"""Which targets a short link may point to, and which aliases a user may choose.

A target is an absolute http or https URL of at most 2048 characters with a valid host and no
credentials; IDN hosts are accepted when they encode to valid IDNA. The server never fetches
it. Refused with ``Invalid`` (422): other schemes (``javascript:``, ``data:``, ``file:``…),
user:password@, missing or malformed hosts, over-long URLs, hosts on the blocklist.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from fanout.core.errors import Conflict, Invalid

__all__ = ["RESERVED", "check_alias", "check_target"]

URL_MAX_CHARS = 2048
_ALIAS = re.compile(r"^[A-Za-z0-9_-]{3,64}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Every first path segment the app serves, plus words a short link must never shadow.
RESERVED = frozenset(
    {"v1", "healthz", "readyz", "metrics", "openapi.json", "static", "api", "admin", "docs",
     "favicon.ico", "robots.txt", "login", "logout", "ws", "assets", "well-known"}
)  # fmt: skip


def _problem(field: str, message: str) -> Invalid:
    return Invalid(message, details=[{"field": field, "message": message}])


def _normal_host(host: str) -> str | None:
    """The host as a resolver sees it (IDNA ASCII, lower case, no trailing dot; full-width
    dots and letters folded by nameprep), or None if it is not a valid host."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii").lower().rstrip(".")
    except UnicodeError:
        return None
    labels = ascii_host.split(".")
    ok = len(ascii_host) <= 253 and len(labels) >= 2 and all(_LABEL.match(x) for x in labels)
    return ascii_host if ok else None


def check_target(url: str, blocklist: Iterable[str] = ()) -> str:
    """``url`` if it may be a link's target; ``Invalid`` naming the reason otherwise."""
    if len(url) > URL_MAX_CHARS:
        raise _problem("url", f"at most {URL_MAX_CHARS} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        # No control character or space may reach a Location header (servers refuse them).
        raise _problem("url", "whitespace and control characters are not allowed")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _problem("url", "not a valid URL") from exc
    if parts.scheme.lower() not in {"http", "https"}:
        raise _problem("url", "only http and https URLs")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _problem("url", "credentials in the URL are not allowed")
    host = _normal_host(parts.hostname or "") if parts.hostname else None
    if host is None or port == 0:
        raise _problem("url", "the URL needs a valid host")
    blocked = {b.lower().strip(".") for b in blocklist}
    if any(host == b or host.endswith("." + b) for b in blocked):
        raise _problem("url", "this domain is not allowed")
    return url


def check_alias(alias: str) -> str:
    """A custom alias: ``[A-Za-z0-9_-]{3,64}`` and not a reserved word (409 if reserved)."""
    if alias.lower() in RESERVED:  # first: a reserved word is a conflict whatever its shape
        raise Conflict(f"the alias {alias!r} is reserved")
    if not _ALIAS.match(alias):
        raise _problem("alias", "must match [A-Za-z0-9_-]{3,64}")
    return alias
