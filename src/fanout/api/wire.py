"""Wire helpers: JSON decoding into msgspec types with 400/422 errors, encoding, times."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, TypeVar

import msgspec

from fanout.core.errors import Invalid, MalformedInput

__all__ = ["Limit", "PageQuery", "convert", "decode", "encode", "iso", "parse_iso"]

T = TypeVar("T")

Limit = Annotated[int, msgspec.Meta(ge=1, le=100)]  # API.md: 20 by default, at most 100


class PageQuery(msgspec.Struct, forbid_unknown_fields=True):
    """The query of every cursor-paged list."""

    cursor: str | None = None
    limit: Limit = 20


_encoder = msgspec.json.Encoder()
_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode(body: bytes, kind: type[T]) -> T:
    """Decode JSON ``body`` into ``kind``: ``MalformedInput`` (400) or ``Invalid`` (422)."""
    try:
        return msgspec.json.decode(body, type=kind)
    except RecursionError as exc:
        raise MalformedInput("the body nests too deeply") from exc
    except msgspec.ValidationError as exc:
        # A typed decode stops at the first wrong type, before it sees whether the rest is JSON
        # at all: on this error path only, check that the body parses.
        try:
            msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError) as syntax:
            raise MalformedInput(f"the body is not valid JSON: {syntax}") from exc
        raise Invalid("the request does not match the schema", details=[_problem(exc)]) from exc
    except msgspec.DecodeError as exc:
        raise MalformedInput(f"the body is not valid JSON: {exc}") from exc


def convert(values: dict[str, Any], kind: type[T]) -> T:
    """Build ``kind`` from query-string values (strings converted to the declared types)."""
    try:
        return msgspec.convert(values, type=kind, strict=False)
    except msgspec.ValidationError as exc:
        raise Invalid("the query does not match the schema", details=[_problem(exc)]) from exc


def _problem(exc: msgspec.ValidationError) -> dict[str, str]:
    text = str(exc)
    match = _PATH.search(text)
    if match is None:
        return {"field": "", "message": text}
    field = match.group("path").lstrip(".")
    field = re.sub(r"\[(\d+)\]", r".\1", field)
    return {"field": field, "message": text[: match.start()]}


MIN_MS = 0  # 1970-01-01T00:00:00Z: no time before the epoch means anything here
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last time RFC 3339 can write


def iso(unix_ms: int) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-21T20:33:07.123Z``."""
    moment = dt.datetime.fromtimestamp(unix_ms // 1000, tz=dt.UTC)
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.") + f"{unix_ms % 1000:03d}Z"


def parse_iso(text: str) -> int:
    """Unix milliseconds of an RFC 3339 time; ``Invalid`` if it is not one or has no zone."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise Invalid(f"not an RFC 3339 time: {text!r}") from exc
    if moment.tzinfo is None:
        raise Invalid(f"the time {text!r} needs a time zone (use Z for UTC)")
    try:
        unix_ms = int(moment.timestamp() * 1000)
    except (OverflowError, ValueError) as exc:
        raise Invalid(f"the time {text!r} is out of range") from exc
    if not MIN_MS <= unix_ms <= MAX_MS:
        raise Invalid(f"the time {text!r} is out of range (1970 to 9999)")
    return unix_ms
