"""The SQLite engine: one writer thread that batches commits, and a pool of reader threads.

Every write is a *job*, a function ``fn(tx)`` run on the writer connection. The writer takes
every job waiting (up to ``BATCH_MAX``), runs each inside its own SAVEPOINT of one transaction
and commits once: many small writes cost one fsync-free WAL commit instead of one each, while a
failing job rolls back alone and raises to its caller. A job's result is returned only after the
commit, so "returned" means "durable". Callbacks registered with ``tx.on_commit`` run on the event
loop after the commit (the log uses this to wake its consumers).

Reads run on per-thread connections of a small pool; WAL lets them proceed during writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fanout.core.errors import Unavailable
from fanout.storage.migrations import discover

__all__ = ["SqliteEngine", "WriteTx"]

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_MAX = 256  # jobs per commit: bounds the latency one commit adds to its first job
QUEUE_MAX = 10_000  # jobs waiting for the writer before callers wait for room
READERS = 4
BUSY_TIMEOUT_MS = 5_000
MIGRATIONS_PACKAGE = "fanout.storage.embedded.migrations"


@dataclass(slots=True)
class WriteTx:
    """What a write job sees: the writer connection and a place for after-commit callbacks."""

    conn: sqlite3.Connection
    _callbacks: list[Callable[[], None]] = field(default_factory=list)

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the event loop once this job's transaction has committed."""
        self._callbacks.append(callback)


@dataclass(slots=True)
class _Job:
    fn: Callable[[WriteTx], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class SqliteEngine:
    dialect = "sqlite"
    supports_returning = True

    def __init__(self, path: Path, *, readers: int = READERS) -> None:
        self.path = path
        self._readers = readers
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_MAX)
        self._writer: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._room: asyncio.Semaphore | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database, apply pending migrations, start the writer and the readers."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        self._room = asyncio.Semaphore(QUEUE_MAX)
        self._writer = threading.Thread(
            target=self._writer_main, args=(loop, ready), name="sqlite-writer", daemon=True
        )
        self._writer.start()
        await ready
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="sqlite-reader")

    async def close(self) -> None:
        """Finish the jobs already queued, then stop; later writes raise ``Unavailable``."""
        writer, self._writer = self._writer, None  # write() refuses from here on
        if writer is not None:
            await asyncio.to_thread(self._jobs.put, _STOP)
            await asyncio.to_thread(writer.join)
            self._fail_leftovers()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._conns_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    # -- public API ----------------------------------------------------------------------------

    async def write(self, fn: Callable[[WriteTx], T]) -> T:
        """Run ``fn`` in a transaction on the writer; return its result once committed."""
        if self._writer is None or self._room is None:
            raise Unavailable("the SQLite engine is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        async with self._room:
            self._jobs.put(_Job(fn, future, loop))
            return await future

    def _fail_leftovers(self) -> None:
        """Jobs queued behind the stop marker by writes racing close(): fail, never hang."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Job):
                failure = Unavailable("the SQLite engine was closed")
                job.loop.call_soon_threadsafe(_settle_error, job.future, failure)

    async def read(self, fn: Callable[[sqlite3.Connection], T], *, snapshot: bool = False) -> T:
        """Run ``fn`` with a reader connection on the reader pool; with ``snapshot`` inside one
        read transaction, so all its statements see the same commit."""
        if self._pool is None:
            raise Unavailable("the SQLite engine is not running")
        loop = asyncio.get_running_loop()
        run = functools.partial(self._run_read, _in_snapshot(fn) if snapshot else fn)
        return await loop.run_in_executor(self._pool, run)

    async def ping(self) -> None:
        await self.read(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- threads -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._conns_lock:
                self._reader_conns.append(conn)
        return fn(conn)

    def _writer_main(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
            self._migrate(conn)
        except Exception as exc:
            loop.call_soon_threadsafe(_settle_error, ready, exc)
            return
        loop.call_soon_threadsafe(_settle, ready, None)
        try:
            while True:
                first = self._jobs.get()
                if first is _STOP:
                    return
                batch = [first]
                while len(batch) < BATCH_MAX:
                    try:
                        nxt = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        self._jobs.put(_STOP)  # finish this batch, then stop
                        break
                    batch.append(nxt)
                self._run_batch(conn, batch)
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[_Job, bool, Any, list[Callable[[], None]]]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                tx = WriteTx(conn)
                conn.execute("SAVEPOINT job")
                try:
                    result = job.fn(tx)
                except BaseException as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((job, False, exc, []))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((job, True, result, tx._callbacks))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # no transaction left to roll back
                conn.execute("ROLLBACK")
            failure = Unavailable(f"SQLite commit failed: {exc}")
            for job in batch:
                job.loop.call_soon_threadsafe(_settle_error, job.future, failure)
            return
        for job, ok, value, callbacks in outcomes:
            if ok:
                job.loop.call_soon_threadsafe(_settle_with_callbacks, job.future, value, callbacks)
            else:
                job.loop.call_soon_threadsafe(_settle_error, job.future, value)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for migration in discover(MIGRATIONS_PACKAGE):
            if migration.version in done:
                continue
            log.info("applying SQLite migration %04d_%s", migration.version, migration.name)
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time_ns() // 1_000_000),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise


def _in_snapshot(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    def run(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    return run


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``executescript`` would commit on its own)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--") and not current:
            continue
        current.append(line)
        candidate = "\n".join(current)
        if sqlite3.complete_statement(candidate):
            statements.append(candidate.strip())
            current = []
    if "\n".join(current).strip():
        raise RuntimeError("a migration ends with an incomplete statement")
    return statements


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _settle_error(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _settle_with_callbacks(
    future: asyncio.Future[Any], value: Any, callbacks: list[Callable[[], None]]
) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:  # a wake-up hook failing must not lose the committed result
            log.exception("after-commit callback failed")
    _settle(future, value)
