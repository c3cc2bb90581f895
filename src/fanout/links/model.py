"""Link records and clicks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from fanout.accounts.model import UserId

__all__ = ["Click", "Link", "LinkStats", "Series", "decode_clicks", "encode_clicks"]


@dataclass(frozen=True, slots=True)
class Link:
    code: str
    owner_id: UserId
    url: str
    redirect: int  # 301 or 302
    created_ms: int
    expires_ms: int | None
    max_visits: int | None = None
    deleted: bool = False

    def gone(self, now_ms: int) -> bool:
        """Deleted or expired: the code answers 410."""
        return self.deleted or (self.expires_ms is not None and now_ms >= self.expires_ms)


class Click(msgspec.Struct, frozen=True, array_like=True):
    """One redirect served, as the analytics see it (no raw IP is ever stored). A Struct, not
    a dataclass: one is built per redirect and per aggregated click, and its C constructor
    and codec cost a fraction of a frozen dataclass's. On the log it is an array of its fields
    in this order (append new fields at the end, with defaults)."""

    code: str  # "" for an orphan visit (unknown code)
    at_ms: int
    visitor: str  # keyed hash of client address + user agent: uniques without identities
    referrer_host: str  # "" when absent
    country: str  # ISO 3166 alpha-2, "" when unknown
    device: str  # desktop | mobile | tablet | bot | other
    bot: bool
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list[Click]).decode
# Records written before clicks were JSON: MessagePack, a batch or (before batches) one click.
_decode_packed_many = msgspec.msgpack.Decoder(list[Click]).decode
_decode_packed_one = msgspec.msgpack.Decoder(Click).decode


def encode_clicks(clicks: Sequence[Click]) -> bytes:
    """A record's payload on ``links.clicks``: a JSON array of clicks, each an array of its
    fields — JSON so that a store can count a record's clicks without decoding them here
    (SQLite reads it with its JSON functions)."""
    return _encode(clicks)


def decode_clicks(raw: bytes) -> list[Click]:
    """The clicks of a record, in any form the log has carried."""
    if raw[:1] == b"[":
        return _decode(raw)
    try:
        return _decode_packed_many(raw)
    except msgspec.ValidationError:
        return [_decode_packed_one(raw)]


@dataclass(frozen=True, slots=True)
class Series:
    t_ms: int
    clicks: int
    uniques: int


@dataclass(frozen=True, slots=True)
class LinkStats:
    total: int  # human clicks ever (bots excluded)
    bots: int
    series: list[Series]
    referrers: list[tuple[str, int]]
    countries: list[tuple[str, int]]
    devices: list[tuple[str, int]]
    utm: dict[str, list[tuple[str, int]]]
