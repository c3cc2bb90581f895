"""Clicks: what a redirect records, how it reaches the log, and how it is aggregated.

A redirect never waits for analytics: it hands a :class:`Click` to :class:`ClickSink`, whose
background task publishes batches to ``links.clicks``. A record carries many clicks: each
flush writes one record per partition, holding the clicks whose codes hash to it and keyed by
the first of those codes — every click still lands in its code's partition, while the log pays
its per-record costs (insert, delivery, acknowledgement, compaction) once per batch instead of
once per click, which measured ~5 times the rest of a click's cost. The queue is bounded;
when it is full the redirect waits for room instead of dropping the click. On shutdown the sink
drains what is queued. The aggregator consumes the topic in batches and applies them to the
:class:`ClickStore` exactly once (see its docstring).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from fanout.core.clock import Clock
from fanout.core.log import Log, LogRecord, Topics
from fanout.core.partition import partition_for
from fanout.links.model import Click, encode_clicks
from fanout.links.ports import ClickStore

__all__ = [
    "ClickAggregator",
    "ClickSink",
    "classify",
    "click_records",
]

log = logging.getLogger(__name__)

# Parsed user agents and referrers: few distinct values carry most clicks, and the three
# regexes of ``classify`` measured ~40 us a click uncached (of ~200 us per redirect).
PARSE_CACHE = 16_384
SINK_QUEUE = 100_000  # clicks waiting for the log; past it redirects wait for room
SINK_BATCH = 500  # clicks per publish
PARTITIONS_KEPT = 65_536  # codes whose partition the sink remembers (cleared when full)
# By partition count: the partition of each code seen (a CRC-32 costs ~3 dict lookups, and the
# sink asks it of every click it publishes).
_PARTITIONS: dict[int, dict[str, int]] = {}
# How long the first click of a batch waits for others. The log's costs are per record and per
# commit (pages written to the WAL, a wake-up, read and acknowledgement by the aggregator):
# publishing whatever was queued, a few clicks at a time, cost ~100 us per redirect at
# 6 000 redirects/s against ~25 us with batches gathered this long.
SINK_LINGER_S = 0.05
FLUSH_GRACE_S = 5.0  # how long shutdown waits for the log to take the last clicks
GROUP = "links-aggregator"

_BOT = re.compile(
    r"bot|crawl|spider|slurp|curl|wget|python-|httpclient|okhttp|go-http|java/|headless|"
    r"preview|scanner|monitor|facebookexternalhit|whatsapp|telegram",
    re.IGNORECASE,
)
_TABLET = re.compile(r"ipad|tablet|kindle|silk|playbook|android(?!.*mobile)", re.IGNORECASE)
_MOBILE = re.compile(r"mobi|iphone|ipod|android|blackberry|windows phone", re.IGNORECASE)


@functools.lru_cache(maxsize=PARSE_CACHE)
def classify(user_agent: str) -> tuple[str, bool]:
    """(device class, is bot) from a user agent; an empty one is a bot."""
    if not user_agent or _BOT.search(user_agent):
        return "bot", True
    if _TABLET.search(user_agent):
        return "tablet", False
    if _MOBILE.search(user_agent):
        return "mobile", False
    return "desktop", False


@functools.lru_cache(maxsize=PARSE_CACHE)
def referrer_host(referrer: str) -> str:
    """The referring host only (never the path: it may carry personal data), IDNA ASCII."""
    if not referrer:
        return ""
    try:
        host = urlsplit(referrer).hostname or ""
        if "\x00" in host:  # no host has one; a store may cut text at it
            return ""
        return host.encode("idna").decode("ascii")[:253] if host else ""
    except (ValueError, UnicodeError):
        return ""


def utm(query: str) -> tuple[str, str, str]:
    if "utm_" not in query:  # most redirects carry no campaign: skip the parse
        return "", "", ""
    values = parse_qs(query, max_num_fields=50)
    # Percent-decoded, so a NUL may appear: dropped (stores may cut text at it).
    return tuple(  # type: ignore[return-value]  # three fields, by construction
        (values.get(f"utm_{name}") or [""])[0].replace("\x00", "")[:100]
        for name in ("source", "medium", "campaign")
    )


@functools.lru_cache(maxsize=PARSE_CACHE)
def visitor_hash(secret: bytes, client: str, user_agent: str) -> str:
    """A keyed hash of the client: counts uniques without storing an address."""
    digest = hashlib.blake2b(f"{client}\n{user_agent}".encode(), key=secret[:64], digest_size=8)
    return digest.hexdigest()


def click_records(clicks: Sequence[Click], partitions: int) -> list[tuple[str, bytes]]:
    """(key, payload) records for ``clicks``: one per partition their codes hash to, keyed by
    its first code, so that each click is in the partition of its own code."""
    by_partition: dict[int, list[Click]] = {}
    known = _PARTITIONS.setdefault(partitions, {})
    for click in clicks:
        code = click.code
        partition = known.get(code)
        if partition is None:
            if len(known) >= PARTITIONS_KEPT:
                known.clear()
            partition = known[code] = partition_for(code, partitions)
        group = by_partition.get(partition)
        if group is None:
            by_partition[partition] = [click]
        else:
            group.append(click)
    return [(group[0].code, encode_clicks(group)) for group in by_partition.values()]


class ClickSink:
    """Bounded hand-off from redirects to the log, flushed by :meth:`run`.

    A plain list, not an ``asyncio.Queue``: a redirect appends (the queue's bookkeeping per
    item cost more than the append) and the flusher, woken by the first click after it
    emptied the list, takes what gathered in one slice."""

    def __init__(
        self, log_: Log, *, linger_s: float = SINK_LINGER_S, capacity: int = SINK_QUEUE
    ) -> None:
        self._log = log_
        self._linger_s = linger_s
        self._capacity = capacity
        self._pending: list[Click] = []
        self._arrived = asyncio.Event()  # set by the first click the flusher has not seen
        self._room = asyncio.Event()  # set when the flusher takes clicks out of a full list
        self._inflight: list[Click] = []
        self.published = 0

    async def add(self, click: Click) -> None:
        while self.full():  # back-pressure rather than loss
            self._room.clear()
            await self._room.wait()
        self.add_nowait(click)

    def full(self) -> bool:
        """Whether :meth:`add` would wait; until it is, :meth:`add_nowait` cannot fail."""
        return len(self._pending) >= self._capacity

    def add_nowait(self, click: Click) -> None:
        """Queue ``click`` at once; raises ``asyncio.QueueFull`` when :meth:`full`."""
        pending = self._pending
        if len(pending) >= self._capacity:
            raise asyncio.QueueFull
        pending.append(click)
        if len(pending) == 1:
            self._arrived.set()

    def _take(self, most: int) -> list[Click]:
        taken = self._pending[:most]
        del self._pending[:most]
        if not self._pending:
            self._arrived.clear()
        self._room.set()
        return taken

    async def run(self) -> None:
        """Publish queued clicks in batches until cancelled; then, for at most
        ``FLUSH_GRACE_S``, the batch in flight (it may be published twice: at-least-once) and
        everything still queued."""
        try:
            while True:
                await self._arrived.wait()
                if len(self._pending) < SINK_BATCH:
                    await asyncio.sleep(self._linger_s)  # let a batch gather
                self._inflight = self._take(SINK_BATCH)
                await self._publish(self._inflight)
                self._inflight = []
        finally:
            left = self._inflight + self._take(len(self._pending))
            self._inflight = []
            if left:
                try:
                    async with asyncio.timeout(FLUSH_GRACE_S):
                        await asyncio.shield(self._publish_all(left))
                except (TimeoutError, asyncio.CancelledError):
                    log.error("shut down with the log unreachable: up to %d clicks lost", len(left))

    async def _publish_all(self, clicks: list[Click]) -> None:
        for start in range(0, len(clicks), SINK_BATCH):
            await self._publish(clicks[start : start + SINK_BATCH])

    async def _publish(self, batch: list[Click]) -> None:
        """Publish ``batch``, retrying until the log takes it."""
        while True:
            try:
                records = click_records(batch, self._log.partitions)
                await self._log.publish_many(Topics.LINKS_CLICKS, records)
                self.published += len(batch)
                return
            except Exception:  # the log is down: keep the clicks and retry
                log.exception("publishing %d clicks failed; retrying", len(batch))
                await asyncio.sleep(0.5)


VISITORS_KEPT_MS = 2 * 86_400_000  # uniques are per hour; two days absorb late redeliveries
MINUTES_KEPT_MS = 7 * 86_400_000  # minute series for a week; hours and days are kept
PRUNE_EVERY_S = 600.0
AGGREGATE_WINDOW_S = 1.0  # clicks are counted within about this long (plus the sink's linger)
# Or sooner, when this much waits (~40 000 clicks): on embedded a window holds SQLite's writer
# while it is counted, ~10 us a click, so this bounds how long a link's create may wait.
AGGREGATE_WINDOW_BYTES = 4_000_000
# Records a partition adds to a window at most (its consumer's read). A record holds one sink
# batch's clicks of its partition (~60 of 500 over 8 partitions), so at 32 a window took ~16 000
# clicks, and the aggregator fell behind under load (measured in-process: 5 s of 38 000 clicks/s
# were all counted 14.8 s after the first; 7.7 s at 128). The window's bytes close it first.
AGGREGATE_RECORDS = 128


class ClickAggregator:
    """Consumes ``links.clicks`` into the click store (exactly once), and prunes what the
    statistics no longer need.

    Batches read from every partition within ``window_s`` (or until ``window_bytes`` of
    records wait) are applied together, in one transaction, and each handler returns once its
    clicks are in. The records go to the store as they are: PostgreSQL's adapter decodes them;
    SQLite's has the database read them, so an embedded event loop builds no Python object per
    click it aggregates.
    Most of a click's cost is the counter rows it touches — six per distinct link and minute —
    so the longer the window, the more clicks of a popular link share rows: over a Zipf
    spread of 100 000 links, 300 clicks touch rows of ~175 links, a second's 6 000 clicks
    those of ~2 000. Records stay unacknowledged meanwhile; a crash redelivers them and the
    watermarks skip what committed."""

    def __init__(
        self,
        store: ClickStore,
        clock: Clock,
        *,
        window_s: float = AGGREGATE_WINDOW_S,
        window_bytes: int = AGGREGATE_WINDOW_BYTES,
    ) -> None:
        self._store = store
        self._clock = clock
        self._window_s = window_s
        self._window_bytes = window_bytes
        self._batches: dict[int, list[tuple[str, bytes]]] = {}
        self._size = 0
        self._window: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._applying: set[asyncio.Task[None]] = set()

    async def prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            now = self._clock.now_ms()
            try:
                await self._store.prune(now - VISITORS_KEPT_MS, now - MINUTES_KEPT_MS)
            except Exception:  # housekeeping: try again next round
                log.exception("pruning click aggregates failed")

    async def handle_batch(self, records: Sequence[LogRecord]) -> None:
        """Join the open window; return when it is applied (raise if that failed). A
        cancelled caller leaves its clicks in the window: applied or not, its records are
        redelivered, and the watermarks make that harmless."""
        loop = asyncio.get_running_loop()
        for record in records:
            self._batches.setdefault(record.partition, []).append(_entry(record))
            self._size += len(record.payload)
        window = self._window
        if window is None:
            window = self._window = loop.create_future()
            self._timer = loop.call_later(self._window_s, self._close)
        if self._size >= self._window_bytes:
            self._close()
        await asyncio.shield(window)

    async def handle(self, record: LogRecord) -> None:
        """One record alone, at once (the consumer's path to isolate a failing record)."""
        await self._store.apply(GROUP, {record.partition: [_entry(record)]})

    def _close(self) -> None:
        batches, window = self._batches, self._window
        if window is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._batches, self._size, self._window, self._timer = {}, 0, None, None
        task = asyncio.create_task(self._apply(batches, window))
        self._applying.add(task)
        task.add_done_callback(self._applying.discard)

    async def _apply(
        self, batches: dict[int, list[tuple[str, bytes]]], window: asyncio.Future[None]
    ) -> None:
        try:
            await self._store.apply(GROUP, batches)
        except asyncio.CancelledError:
            window.cancel()
            raise
        except Exception as exc:
            window.set_exception(exc)
            window.exception()  # seen here: callers that went away must not log it again
        else:
            window.set_result(None)


def _entry(record: LogRecord) -> tuple[str, bytes]:
    """The record as the store applies it: its offset and its clicks, encoded."""
    return record.offset, record.payload
