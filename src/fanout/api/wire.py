"""Wire helpers: JSON decoding into msgspec types with 400/422 errors, encoding, times."""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import msgspec

from fanout.core.errors import Invalid, MalformedInput
from fanout.core.times import iso, parse_iso

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
