"""Country of a click: from a MaxMind database when one is configured, else from a header set
by a trusted proxy (e.g. Cloudflare's ``CF-IPCountry``). Unknown is ``""``."""

from __future__ import annotations

import functools
from typing import Any, Protocol

__all__ = ["CountryResolver", "HeaderCountry", "MaxMindCountry"]

LOOKUP_CACHE = 65_536  # recent addresses: a burst from one client costs one lookup


class CountryResolver(Protocol):
    def country(self, address: str, header_value: str | None) -> str:
        """ISO 3166 alpha-2 of ``address``; ``header_value`` is the trusted proxy's header
        (None when the peer is not trusted)."""
        ...


def _iso(value: object) -> str:
    text = str(value or "")[:2].upper()
    return text if len(text) == 2 and text.isalpha() and text.isascii() else ""


class HeaderCountry:
    def country(self, address: str, header_value: str | None) -> str:
        return _iso(header_value)


class MaxMindCountry:
    """A GeoIP2/GeoLite2 Country or City database, read with ``maxminddb`` (memory-mapped)."""

    def __init__(self, path: str) -> None:
        import maxminddb

        self._reader: Any = maxminddb.open_database(path)
        self._lookup = functools.lru_cache(maxsize=LOOKUP_CACHE)(self._uncached)

    def _uncached(self, address: str) -> str:
        try:
            record = self._reader.get(address)
        except ValueError:  # not an IP address (a unix socket peer, "unknown")
            return ""
        if not isinstance(record, dict):
            return ""
        country = record.get("country") or record.get("registered_country") or {}
        return _iso(country.get("iso_code") if isinstance(country, dict) else "")

    def country(self, address: str, header_value: str | None) -> str:
        return self._lookup(address) or _iso(header_value)
