"""``fanout bench log``: publish + consume records/s through the log on each backend.

For each backend: publish N records from concurrent producers (``publish_many`` batches), then
consume them all with the real worker runner (no-op handler, batch acks) and check that every
record was handled. On Redis, C ``redis-benchmark -P 100 XADD`` runs against the same server in
the same run and the figures are reported as ratios of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.report import print_table, redis_benchmark, write_json, write_plot
from bench.servers import redis_server
from fanout.core.clock import SystemClock
from fanout.core.consumer import ConsumerRunner, Subscription
from fanout.core.log import Log, LogRecord

TOPIC = "bench.records"
PARTITIONS = 8
PRODUCERS = 8
BATCH = 100  # records per publish_many call


@contextlib.asynccontextmanager
async def open_log(backend: str) -> AsyncIterator[tuple[Log, str | None]]:
    clock = SystemClock()
    if backend == "sqlite":
        from fanout.storage.embedded.engine import SqliteEngine
        from fanout.storage.embedded.log import SqliteLog

        with tempfile.TemporaryDirectory(prefix="fanout-bench-") as tmp:
            engine = SqliteEngine(Path(tmp) / "bench.sqlite3")
            await engine.start()
            try:
                yield SqliteLog(engine, clock, partitions=PARTITIONS), None
            finally:
                await engine.close()
    elif backend == "redis":
        from fanout.storage.redis.connection import connect
        from fanout.storage.redis.log import RedisLog

        with contextlib.ExitStack() as stack:
            url = os.environ.get("FANOUT_REDIS_URL") or stack.enter_context(redis_server())
            client = await connect(url)
            await client.flushdb()
            try:
                yield RedisLog(client, clock, partitions=PARTITIONS), url
            finally:
                await client.aclose()
    else:
        raise ValueError(f"unknown backend {backend!r}")


async def run_backend(backend: str, records: int, payload_bytes: int) -> dict[str, Any]:
    payload = os.urandom(payload_bytes // 2).hex().encode()[:payload_bytes]
    async with open_log(backend) as (log, url):
        per_producer = records // PRODUCERS

        async def produce(p: int) -> None:
            for start in range(0, per_producer, BATCH):
                count = min(BATCH, per_producer - start)
                await log.publish_many(
                    TOPIC, [(f"key-{p}-{(start + i) % 64}", payload) for i in range(count)]
                )

        began = time.perf_counter()
        await asyncio.gather(*(produce(p) for p in range(PRODUCERS)))
        publish_s = time.perf_counter() - began
        total = per_producer * PRODUCERS

        handled = 0
        done = asyncio.Event()

        async def handler(record: LogRecord) -> None:
            nonlocal handled
            handled += 1
            if handled >= total:
                done.set()

        runner = ConsumerRunner(
            log, [Subscription(TOPIC, "bench", handler, batch=500)], "bench-consumer"
        )
        began = time.perf_counter()
        await runner.start()
        await asyncio.wait_for(done.wait(), timeout=600)
        consume_s = time.perf_counter() - began
        await runner.stop()
        lag = await log.lag(TOPIC, "bench")
        row: dict[str, Any] = {
            "backend": backend,
            "records": total,
            "publish_per_s": total / publish_s,
            "consume_per_s": total / consume_s,
            "end_to_end_per_s": total / (publish_s + consume_s),
            "lag_after": lag,
            "handled": handled,
        }
        if url is not None:
            xadd = redis_benchmark(url, ["XADD", "bench:xadd", "*", "payload", "x" * payload_bytes],
                                   requests=max(total, 100_000))  # fmt: skip
            row["redis_benchmark_xadd_per_s"] = xadd
            row["publish_ratio"] = row["publish_per_s"] / xadd
            row["consume_ratio"] = row["consume_per_s"] / xadd
        return row


def main(
    *, records: int, payload_bytes: int, backends: list[str], out: Path
) -> list[dict[str, Any]]:
    rows = [asyncio.run(run_backend(b, records, payload_bytes)) for b in backends]
    columns = [
        "backend", "records", "publish_per_s", "consume_per_s", "end_to_end_per_s",
        "redis_benchmark_xadd_per_s", "publish_ratio", "consume_ratio", "lag_after",
    ]  # fmt: skip
    title = f"log: {records:,} records of {payload_bytes} B, {PARTITIONS} partitions"
    print_table(title, rows, columns)
    write_json(out, "log", {"records": records, "payload_bytes": payload_bytes, "rows": rows})
    write_plot(
        out, "log", "log throughput (records/s)", [r["backend"] for r in rows],
        {"publish": [r["publish_per_s"] for r in rows],
         "consume": [r["consume_per_s"] for r in rows]},
        "records/s",
    )  # fmt: skip
    return rows
