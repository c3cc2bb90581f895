"""The SQLite engine's lifecycle edges and the embedded secret file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fanout.core.errors import Unavailable
from fanout.storage.embedded.accounts import FileSecretStore
from fanout.storage.embedded.engine import SqliteEngine, WriteTx


async def test_writes_racing_close_settle_instead_of_hanging(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "e.sqlite3")
    await engine.start()
    writes = [
        asyncio.create_task(engine.write(lambda tx: tx.execute("SELECT 1").fetchone()))
        for _ in range(50)
    ]
    await asyncio.sleep(0)
    closing = asyncio.create_task(engine.close())
    late = [asyncio.create_task(engine.write(lambda tx: None)) for _ in range(10)]
    results = await asyncio.wait_for(
        asyncio.gather(*writes, *late, return_exceptions=True), timeout=10
    )
    await closing
    assert all(r == (1,) or isinstance(r, Unavailable) for r in results[:50])
    assert all(isinstance(r, Unavailable) for r in results[50:])
    with pytest.raises(Unavailable):
        await engine.write(lambda tx: None)


async def test_a_failing_job_rolls_back_alone(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "e.sqlite3")
    await engine.start()
    try:

        def bad(tx):  # type: ignore[no-untyped-def]
            tx.execute("INSERT INTO meta (name, value) VALUES ('bad', 'x')")
            raise ValueError("boom")

        def good(tx):  # type: ignore[no-untyped-def]
            tx.execute("INSERT INTO meta (name, value) VALUES ('good', 'y')")

        outcome = await asyncio.gather(engine.write(bad), engine.write(good),
                                       return_exceptions=True)  # fmt: skip
        assert isinstance(outcome[0], ValueError) and outcome[1] is None
        names = await engine.read(lambda c: c.execute("SELECT name FROM meta").fetchall())
        assert names == [("good",)]
    finally:
        await engine.close()


async def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    stores = [FileSecretStore(tmp_path) for _ in range(20)]
    values = await asyncio.gather(
        *(asyncio.to_thread(asyncio.run, s.get_or_create("secret_key", f"v{i}" * 20))
          for i, s in enumerate(stores))
    )  # fmt: skip
    assert len(set(values)) == 1
    left = await asyncio.to_thread(os.listdir, tmp_path)
    assert left == ["secret_key"]  # no temporary file left behind


async def test_an_empty_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("")
    with pytest.raises(Unavailable, match="empty"):
        await FileSecretStore(tmp_path).get_or_create("secret_key", "x" * 40)


async def test_an_offloaded_job_leaves_the_loop_serving_and_writes_queue_behind_it(
    tmp_path: Path,
) -> None:
    engine = SqliteEngine(tmp_path / "e.sqlite3")
    await engine.start()
    try:
        order: list[str] = []

        def slow(tx):  # type: ignore[no-untyped-def]
            tx.execute("INSERT INTO meta (name, value) VALUES ('slow', 'x')")
            time.sleep(0.3)  # holds the writer connection, not the loop
            order.append("slow")

        def quick(tx):  # type: ignore[no-untyped-def]
            tx.execute("INSERT INTO meta (name, value) VALUES ('quick', 'y')")
            order.append("quick")

        offloaded = asyncio.create_task(engine.write(slow, offload=True))
        await asyncio.sleep(0.05)  # the slow job has the connection now
        began = time.perf_counter()
        quick_write = asyncio.create_task(engine.write(quick))
        await asyncio.sleep(0.01)
        assert time.perf_counter() - began < 0.15  # the loop was not blocked
        await asyncio.gather(offloaded, quick_write)
        assert order == ["slow", "quick"]
        names = await engine.read(lambda c: c.execute("SELECT name FROM meta").fetchall())
        assert sorted(names) == [("quick",), ("slow",)]
    finally:
        await engine.close()


async def test_loop_writes_behind_offloaded_ones_never_hang(tmp_path: Path) -> None:
    """The loop's batch, finding the writer held, waits to be woken by its holder: every
    interleaving of short offloaded jobs and loop writes finishes, each write once."""
    engine = SqliteEngine(tmp_path / "e.sqlite3")
    await engine.start()
    try:
        await engine.write(lambda tx: tx.execute("CREATE TABLE n (v INTEGER PRIMARY KEY)"))

        def insert(v: int) -> Callable[[WriteTx], None]:
            def job(tx: WriteTx) -> None:
                tx.execute("INSERT INTO n (v) VALUES (?)", (v,))

            return job

        writes = []
        for i in range(300):
            writes.append(asyncio.create_task(engine.write(insert(2 * i), offload=True)))
            writes.append(asyncio.create_task(engine.write(insert(2 * i + 1))))
            if i % 7 == 0:
                await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*writes), timeout=20)
        rows = await engine.read(lambda c: c.execute("SELECT v FROM n ORDER BY v").fetchall())
        assert [v for (v,) in rows] == list(range(600))
    finally:
        await engine.close()


async def test_a_holder_that_fails_still_wakes_the_waiting_loop(tmp_path: Path) -> None:
    """A thread holding the writer that ends in an error (a failed checkpoint) lets go of it
    and wakes the loop's waiting batch all the same."""
    engine = SqliteEngine(tmp_path / "e.sqlite3")
    await engine.start()
    try:
        holding, fail = threading.Event(), threading.Event()

        def holder() -> None:
            with contextlib.suppress(RuntimeError), engine._holding_writer():
                holding.set()
                fail.wait(5)
                raise RuntimeError("checkpoint failed")

        thread = threading.Thread(target=holder)
        thread.start()
        await asyncio.to_thread(holding.wait, 5)
        write = asyncio.create_task(engine.write(lambda tx: tx.execute("SELECT 1").fetchone()))
        await asyncio.sleep(0.05)  # the loop's batch found the writer held and waits
        assert not write.done()
        fail.set()
        assert await asyncio.wait_for(write, timeout=5) == (1,)
        await asyncio.to_thread(thread.join)
    finally:
        await engine.close()


async def test_commits_never_checkpoint_but_the_checkpointer_does(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite3"
    engine = SqliteEngine(path)
    await engine.start()
    try:
        before = path.stat().st_size
        blob = os.urandom(2_000_000)
        await engine.write(
            lambda tx: tx.execute("INSERT INTO meta (name, value) VALUES ('big', ?)", (blob,))
        )
        assert path.stat().st_size == before  # committed to the WAL only
        deadline = time.monotonic() + 5
        while path.stat().st_size < len(blob) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert path.stat().st_size >= len(blob)  # copied into the database by the checkpointer
    finally:
        await engine.close()


async def test_the_wal_stops_growing_under_writes_that_never_pause(tmp_path: Path) -> None:
    """A checkpoint running alongside writes never finishes, and an unfinished one never lets
    the WAL start over: without the checkpointer's pass that holds the writer, the file grows
    for as long as the writes go on."""
    path = tmp_path / "e.sqlite3"
    engine = SqliteEngine(path)
    await engine.start()
    try:
        await engine.write(lambda tx: tx.execute("CREATE TABLE t (v BLOB)"))
        wal, sizes, began = Path(f"{path}-wal"), [], time.monotonic()
        while time.monotonic() - began < 3:
            await asyncio.gather(*(
                engine.write(lambda tx: tx.execute("INSERT INTO t VALUES (randomblob(500))"))
                for _ in range(4)
            ))  # fmt: skip
            sizes.append((time.monotonic() - began, os.stat(wal).st_size))
        at_one = max(size for t, size in sizes if t <= 1)
        assert sizes[-1][1] < 2 * at_one, (at_one, sizes[-1])
    finally:
        await engine.close()


async def test_lookups_run_on_the_loop_and_see_every_commit(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "s.sqlite3")
    await engine.start()
    loop_thread = threading.get_ident()

    def value(conn: sqlite3.Connection) -> tuple[int, int | None]:
        row = conn.execute("SELECT value FROM counters WHERE name = 'n'").fetchone()
        return threading.get_ident(), row[0] if row else None

    try:
        assert await engine.read(value, lookup=True) == (loop_thread, None)
        for n in range(1, 4):
            await engine.write(
                lambda tx, n=n: tx.execute(
                    "INSERT INTO counters (name, value) VALUES ('n', ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (n,),
                )
            )
            assert await engine.read(value, lookup=True) == (loop_thread, n)
        pooled, seen = await engine.read(value)
        assert pooled != loop_thread and seen == 3  # without ``lookup``: a reader thread
    finally:
        await engine.close()
    with pytest.raises(Unavailable):
        await engine.read(value, lookup=True)
