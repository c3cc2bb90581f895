"""Links routes (API.md "Links"), plus CSV statistics and QR codes. The redirect itself
(``GET /{code}``) is ``api/redirect.py``, in front of the router."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Annotated, Literal

import msgspec
from starlette.responses import Response

from fanout.api import wire
from fanout.api.routing import Context, Operation
from fanout.api.wire import PageQuery
from fanout.core.errors import Invalid
from fanout.links.model import Link, LinkStats
from fanout.links.service import NewLinkRequest

__all__ = ["OPERATIONS"]


class CreateLink(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    alias: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    expires_at: str | None = None
    redirect: Literal[301, 302] = 302
    reuse: bool = False
    max_visits: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None


class LinkOut(msgspec.Struct):
    code: str
    short_url: str
    url: str
    redirect: int
    expires_at: str | None
    created_at: str
    clicks: int
    max_visits: int | None = None


class LinkList(msgspec.Struct):
    items: list[LinkOut]
    next_cursor: str | None


class StatsQuery(msgspec.Struct, forbid_unknown_fields=True):
    granularity: Literal["minute", "hour", "day"] = "day"
    from_: str | None = msgspec.field(name="from", default=None)
    to: str | None = None


class QrQuery(msgspec.Struct, forbid_unknown_fields=True):
    format: Literal["png", "svg"] = "png"
    scale: Annotated[int, msgspec.Meta(ge=1, le=40)] = 8


class Point(msgspec.Struct):
    t: str
    clicks: int
    uniques: int


class Count(msgspec.Struct):
    value: str
    clicks: int


class StatsOut(msgspec.Struct):
    total: int
    bots: int
    series: list[Point]
    referrers: list[Count]
    countries: list[Count]
    devices: list[Count]
    utm: dict[str, list[Count]]


def _short_url(ctx: Context, code: str) -> str:
    base = ctx.platform.settings.links_base_url or str(ctx.request.base_url)
    return base.rstrip("/") + "/" + code


def link_out(ctx: Context, link: Link, clicks: int) -> LinkOut:
    expires = wire.iso(link.expires_ms) if link.expires_ms is not None else None
    return LinkOut(link.code, _short_url(ctx, link.code), link.url, link.redirect, expires,
                   wire.iso(link.created_ms), clicks, link.max_visits)  # fmt: skip


def _cursor(link: Link) -> str:
    return base64.urlsafe_b64encode(f"{link.created_ms}:{link.code}".encode()).decode()


def _decode_cursor(cursor: str | None) -> tuple[int, str] | None:
    if not cursor:
        return None
    try:
        ms, _, code = base64.urlsafe_b64decode(cursor.encode("ascii")).decode().partition(":")
        created = int(ms)
        if not 0 <= created < 2**63 or not code.isascii() or "\x00" in code:
            raise ValueError("cursor out of range")
        return created, code
    except (binascii.Error, UnicodeError, ValueError) as exc:
        problem = {"field": "cursor", "message": "not a valid cursor"}
        raise Invalid("not a valid cursor", details=[problem]) from exc


async def create_link(ctx: Context, body: CreateLink) -> LinkOut:
    expires = wire.parse_iso(body.expires_at) if body.expires_at is not None else None
    request = NewLinkRequest(body.url, body.alias, expires, body.redirect, body.reuse,
                             body.max_visits)  # fmt: skip
    link = await ctx.platform.links.create(ctx.user_id, request)
    clicks = (await ctx.platform.links.totals([link])).get(link.code, 0)
    return link_out(ctx, link, clicks)


async def my_links(ctx: Context) -> LinkList:
    query = ctx.query(PageQuery)
    found = await ctx.platform.links.mine(ctx.user_id, _decode_cursor(query.cursor), query.limit)
    totals = await ctx.platform.links.totals(found)
    cursor = _cursor(found[-1]) if len(found) == query.limit else None
    return LinkList([link_out(ctx, x, totals.get(x.code, 0)) for x in found], cursor)


async def get_link(ctx: Context) -> LinkOut:
    link = await ctx.platform.links.get(ctx.user_id, ctx.request.path_params["code"])
    return link_out(ctx, link, (await ctx.platform.links.totals([link])).get(link.code, 0))


async def delete_link(ctx: Context) -> None:
    await ctx.platform.links.delete(ctx.user_id, ctx.request.path_params["code"])


async def _stats(ctx: Context) -> LinkStats:
    query = ctx.query(StatsQuery)
    start = wire.parse_iso(query.from_) if query.from_ else None
    end = wire.parse_iso(query.to) if query.to else None
    return await ctx.platform.links.stats(
        ctx.user_id, ctx.request.path_params["code"], query.granularity, start, end
    )


def _counts(pairs: list[tuple[str, int]]) -> list[Count]:
    return [Count(value, clicks) for value, clicks in pairs]


async def link_stats(ctx: Context) -> StatsOut:
    stats = await _stats(ctx)
    return StatsOut(
        stats.total, stats.bots,
        [Point(wire.iso(p.t_ms), p.clicks, p.uniques) for p in stats.series],
        _counts(stats.referrers), _counts(stats.countries), _counts(stats.devices),
        {k: _counts(v) for k, v in stats.utm.items()},
    )  # fmt: skip


async def link_stats_csv(ctx: Context) -> Response:
    stats = await _stats(ctx)
    lines = ["t,clicks,uniques"] + [
        f"{wire.iso(p.t_ms)},{p.clicks},{p.uniques}" for p in stats.series
    ]
    code = ctx.request.path_params["code"]
    disposition = f'attachment; filename="{code}.csv"'
    return Response("\n".join(lines) + "\n", media_type="text/csv",
                    headers={"content-disposition": disposition})  # fmt: skip


async def link_qr(ctx: Context) -> Response:
    import segno

    query = ctx.query(QrQuery)
    link = await ctx.platform.links.get(ctx.user_id, ctx.request.path_params["code"])
    qr = segno.make(_short_url(ctx, link.code), error="m")
    out = io.BytesIO()
    qr.save(out, kind=query.format, scale=query.scale, border=2)
    media = "image/png" if query.format == "png" else "image/svg+xml"
    return Response(out.getvalue(), media_type=media)


OPERATIONS = [
    Operation("POST", "/v1/links", create_link, "Shorten a URL", body=CreateLink,
              response=LinkOut, status=201, tag="links"),
    Operation("GET", "/v1/links", my_links, "Your links, newest first", query=PageQuery,
              response=LinkList, tag="links"),
    Operation("GET", "/v1/links/{code}", get_link, "A link (owner only)", response=LinkOut,
              tag="links"),
    Operation("DELETE", "/v1/links/{code}", delete_link, "Delete a link (owner only)",
              tag="links"),
    Operation("GET", "/v1/links/{code}/stats", link_stats, "Click statistics (owner only)",
              query=StatsQuery, response=StatsOut, tag="links"),
    Operation("GET", "/v1/links/{code}/stats.csv", link_stats_csv,
              "Click series as CSV (owner only)", query=StatsQuery, tag="links"),
    Operation("GET", "/v1/links/{code}/qr", link_qr, "QR code of the short URL (PNG or SVG)",
              query=QrQuery, tag="links"),
]  # fmt: skip
