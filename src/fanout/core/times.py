"""RFC 3339 times on the wire (API.md: times are RFC 3339 UTC strings)."""

from __future__ import annotations

import datetime as dt
import functools

from fanout.core.errors import Invalid

__all__ = ["MAX_MS", "MIN_MS", "iso", "parse_iso"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MIN_MS = 0  # 1970-01-01T00:00:00Z: no time before the epoch means anything here
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last time RFC 3339 can write


def iso(unix_ms: int) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-21T20:33:07.123Z``."""
    second, ms = divmod(unix_ms, 1000)
    return _second(second) + f"{ms:03d}Z"


@functools.lru_cache(maxsize=4096)  # times on the wire cluster around now: one format a second
def _second(unix_s: int) -> str:
    moment = dt.datetime.fromtimestamp(unix_s, tz=dt.UTC)
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.")


def parse_iso(text: str) -> int:
    """Unix milliseconds of an RFC 3339 time; ``Invalid`` if it is not one or has no zone."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise Invalid(f"not an RFC 3339 time: {text!r}") from exc
    if moment.tzinfo is None:
        raise Invalid(f"the time {text!r} needs a time zone (use Z for UTC)")
    try:
        unix_ms = (moment - _EPOCH) // dt.timedelta(milliseconds=1)  # exact, no float
    except (OverflowError, ValueError) as exc:
        raise Invalid(f"the time {text!r} is out of range") from exc
    if not MIN_MS <= unix_ms <= MAX_MS:
        raise Invalid(f"the time {text!r} is out of range (1970 to 9999)")
    return unix_ms
