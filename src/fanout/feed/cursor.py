"""Opaque cursors. Chronological cursors encode a position (score, id); ranked cursors name a
snapshot and an offset in it. Anything else a client sends is ``Invalid`` (422)."""

from __future__ import annotations

import base64
import binascii
import re

from fanout.core.errors import Invalid
from fanout.feed.model import Position

__all__ = ["decode_position", "decode_ranked", "encode_position", "encode_ranked"]

_POSITION = re.compile(r"^p:(-?\d{1,19}):(-?\d{1,19})$")
_RANKED = re.compile(r"^r:([A-Za-z0-9_-]{1,64}):(\d{1,6})$")


def _wrap(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unwrap(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise _bad() from exc


def _bad() -> Invalid:
    return Invalid(
        "the cursor is not one this server issued",
        details=[{"field": "cursor", "message": "not a valid cursor"}],
    )


def encode_position(position: Position) -> str:
    return _wrap(f"p:{position.score_ms}:{position.post_id}")


def decode_position(cursor: str | None) -> Position | None:
    if cursor is None or cursor == "":
        return None
    match = _POSITION.match(_unwrap(cursor))
    if match is None:
        raise _bad()
    score, ident = int(match.group(1)), int(match.group(2))
    if not (-(2**63) <= score < 2**63 and 0 <= ident < 2**63):  # what every store can hold
        raise _bad()
    return Position(score, ident)


def encode_ranked(snapshot: str, offset: int) -> str:
    return _wrap(f"r:{snapshot}:{offset}")


def decode_ranked(cursor: str) -> tuple[str, int]:
    match = _RANKED.match(_unwrap(cursor))
    if match is None:
        raise _bad()
    return match.group(1), int(match.group(2))
