"""The click sink on a real log: each click lands in its code's partition, nothing queued or in
flight is lost on a clean stop, and a stop with the log down ends within the grace period
instead of hanging."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fanout.core.clock import SystemClock
from fanout.core.log import Topics
from fanout.core.partition import partition_for
from fanout.links import clicks as clicks_module
from fanout.links.clicks import ClickSink
from fanout.links.model import Click, decode_clicks
from fanout.storage.embedded.engine import SqliteEngine
from fanout.storage.embedded.log import SqliteLog


def click(i: int) -> Click:
    return Click(f"c{i % 7}", 1_767_225_600_000 + i, f"v{i}", "", "", "desktop", False)


async def logged(engine: SqliteEngine) -> list[Click]:
    """Every click in the log, in record order."""
    rows = await engine.read(
        lambda c: c.execute(
            "SELECT partition, key, payload FROM log_records WHERE topic = ? ORDER BY id",
            (Topics.LINKS_CLICKS,),
        ).fetchall()
    )
    found = []
    for partition, key, payload in rows:
        batch = decode_clicks(payload)
        assert key == batch[0].code  # keyed by a code of the record
        assert all(partition_for(c.code, 4) == partition for c in batch)  # each in its code's
        found += batch
    return found


async def test_stopping_publishes_everything_queued_and_in_flight(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "s.sqlite3")
    await engine.start()
    try:
        sink = ClickSink(SqliteLog(engine, SystemClock(), partitions=4))
        runner = asyncio.create_task(sink.run())
        for i in range(5_000):
            await sink.add(click(i))
        await asyncio.sleep(0)  # cancel while batches are still in flight
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        found = await logged(engine)
        assert {c.at_ms for c in found} == {click(i).at_ms for i in range(5_000)}
        assert len(found) >= 5_000  # at-least-once: a batch may land twice
    finally:
        await engine.close()


async def test_stopping_with_the_log_down_ends_within_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clicks_module, "FLUSH_GRACE_S", 0.5)
    engine = SqliteEngine(tmp_path / "s.sqlite3")
    await engine.start()
    sink = ClickSink(SqliteLog(engine, SystemClock(), partitions=4))
    await engine.close()  # every publish now fails with Unavailable
    runner = asyncio.create_task(sink.run())
    for i in range(10):
        await sink.add(click(i))
    await asyncio.sleep(0.05)
    began = time.monotonic()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert time.monotonic() - began < 3.0


async def test_a_full_queue_makes_redirects_wait_and_loses_nothing(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "s.sqlite3")
    await engine.start()
    try:
        sink = ClickSink(SqliteLog(engine, SystemClock(), partitions=4), capacity=10)
        for i in range(10):
            assert not sink.full()
            sink.add_nowait(click(i))
        assert sink.full()
        with pytest.raises(asyncio.QueueFull):
            sink.add_nowait(click(10))
        waiting = [asyncio.create_task(sink.add(click(i))) for i in range(10, 25)]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiting)  # nothing takes clicks yet: they wait
        runner = asyncio.create_task(sink.run())
        await asyncio.wait_for(asyncio.gather(*waiting), 5)
        for _ in range(100):
            if sink.published >= 25:
                break
            await asyncio.sleep(0.02)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        found = await logged(engine)
        assert sorted(c.at_ms for c in found) == [click(i).at_ms for i in range(25)]
    finally:
        await engine.close()
