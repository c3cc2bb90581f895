"""Retention of the SQLite log: acknowledged records are deleted, nothing a group needs is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fanout.core.clock import SystemClock
from fanout.core.partition import partition_for
from fanout.storage.embedded.engine import SqliteEngine
from fanout.storage.embedded.log import SqliteLog

TOPIC = "t"


async def count(engine: SqliteEngine) -> int:
    row = await engine.read(lambda c: c.execute("SELECT count(*) FROM log_records").fetchone())
    return int(row[0])


async def test_compaction_keeps_what_any_group_still_needs(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "c.sqlite3")
    await engine.start()
    try:
        log = SqliteLog(engine, SystemClock(), partitions=2)
        for group in ("fast", "slow"):
            await log.join(TOPIC, group, "c", 5_000)
        await log.publish_many(TOPIC, [("k", str(i).encode()) for i in range(50)])
        await log.publish("orphan.dlq", "k", b"kept: no group reads this topic")
        partition = partition_for("k", 2)
        fast = await log.read(TOPIC, "fast", "c", partition, 100)
        await log.ack("fast", fast)
        slow = await log.read(TOPIC, "slow", "c", partition, 20)
        await log.ack("slow", slow[:10])  # 10..19 pending, 20..49 undelivered for "slow"
        assert await log.compact(chunk=3) == 10
        assert await count(engine) == 41
        rest = await log.read(TOPIC, "slow", "c", partition, 100)
        assert [r.payload for r in rest] == [str(i).encode() for i in range(10, 50)]
        await log.ack("slow", rest)
        assert await log.compact() == 40
        assert await count(engine) == 1  # the DLQ record
        assert await log.lag(TOPIC, "slow") == 0
        writes: list[object] = []
        write = engine.write

        async def counted(fn: Any, **options: Any) -> Any:
            writes.append(fn)
            return await write(fn, **options)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(engine, "write", counted)
            assert await log.compact() == 0
        assert writes == []  # nothing below any mark: not a single write job
        await log.publish(TOPIC, "k", b"after")  # offsets keep increasing after deletes
        (after,) = await log.read(TOPIC, "slow", "c", partition, 10)
        assert int(after.offset) > int(rest[-1].offset)
    finally:
        await engine.close()
