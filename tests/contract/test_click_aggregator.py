"""The click aggregator's window on a real click store: batches from every partition are applied
in one transaction, each handler returns only once its clicks are in, a failure reaches every
handler of the window, and a handler that goes away leaves the rest of the window intact."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from fanout.core.clock import SystemClock
from fanout.core.log import LogRecord, Topics
from fanout.links.clicks import ClickAggregator
from fanout.links.model import Click, encode_clicks
from tests.contract.conftest import LinksUnderTest

T0 = 1_767_225_600_000


def record(partition: int, offset: int, *codes: str) -> LogRecord:
    clicks = [Click(code, T0 + offset, f"v{offset}", "", "", "desktop", False) for code in codes]
    return LogRecord(Topics.LINKS_CLICKS, partition, str(offset), codes[0], encode_clicks(clicks))


class Counting:
    """The real store, with its ``apply`` calls recorded (and made to fail on demand)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: list[dict[int, int]] = []
        self.fail = False

    async def apply(self, group: str, batches: Mapping[int, Sequence[tuple[str, bytes]]]) -> int:
        self.calls.append({p: len(records) for p, records in batches.items()})
        if self.fail:
            raise RuntimeError("the store is down")
        return int(await self.store.apply(group, batches))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_a_window_applies_every_partition_once_and_then_releases_its_handlers(
    links: LinksUnderTest,
) -> None:
    store = Counting(links.clicks)
    aggregator = ClickAggregator(store, SystemClock(), window_s=0.3)
    loop = asyncio.get_running_loop()
    began = loop.time()
    handlers = [
        asyncio.create_task(aggregator.handle_batch([record(0, 1, "a", "a"), record(0, 2, "b")])),
        asyncio.create_task(aggregator.handle_batch([record(1, 1, "c")])),
    ]
    await asyncio.sleep(0.1)
    assert not any(h.done() for h in handlers)  # nothing is acknowledged before it is counted
    assert await links.clicks.totals(["a"]) == {}
    handlers.append(asyncio.create_task(aggregator.handle_batch([record(2, 7, "d", "e")])))
    await asyncio.gather(*handlers)
    assert loop.time() - began >= 0.29
    assert store.calls == [{0: 2, 1: 1, 2: 1}]  # one transaction for the whole window
    assert await links.clicks.totals(["a", "b", "c", "d", "e"]) == dict.fromkeys("bcde", 1) | {
        "a": 2
    }


async def test_a_full_window_closes_at_once(links: LinksUnderTest) -> None:
    store = Counting(links.clicks)
    first_record = record(0, 1, "a", "b")
    window_bytes = len(first_record.payload) + 1  # full with the next record
    aggregator = ClickAggregator(store, SystemClock(), window_s=30, window_bytes=window_bytes)
    first = asyncio.create_task(aggregator.handle_batch([first_record]))
    await asyncio.sleep(0.05)
    async with asyncio.timeout(5):
        await aggregator.handle_batch([record(1, 1, "c")])
        await first
    assert store.calls == [{0: 1, 1: 1}]


async def test_a_failed_window_fails_every_handler_and_counts_nothing(
    links: LinksUnderTest,
) -> None:
    store = Counting(links.clicks)
    store.fail = True
    aggregator = ClickAggregator(store, SystemClock(), window_s=0.1)
    results = await asyncio.gather(
        aggregator.handle_batch([record(0, 1, "a")]),
        aggregator.handle_batch([record(1, 1, "b")]),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    store.fail = False
    await aggregator.handle(record(0, 1, "a"))  # one record, applied at once, no window
    assert store.calls[-1] == {0: 1}
    assert await links.clicks.totals(["a", "b"]) == {"a": 1}


async def test_a_cancelled_handler_leaves_the_window_to_the_others(links: LinksUnderTest) -> None:
    aggregator = ClickAggregator(links.clicks, SystemClock(), window_s=0.2)
    gone = asyncio.create_task(aggregator.handle_batch([record(0, 1, "a")]))
    staying = asyncio.create_task(aggregator.handle_batch([record(1, 1, "b")]))
    await asyncio.sleep(0.05)
    gone.cancel()
    await staying
    with pytest.raises(asyncio.CancelledError):
        await gone
    # Its clicks were applied with the window; redelivered, the watermark skips them.
    assert await links.clicks.totals(["a", "b"]) == {"a": 1, "b": 1}
    await aggregator.handle_batch([record(0, 1, "a")])
    assert await links.clicks.totals(["a"]) == {"a": 1}
