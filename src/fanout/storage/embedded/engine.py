"""The SQLite engine: one writer connection used from the event loop, a pool of reader threads.

Every write is a *job*, a function ``fn(tx)`` run on the writer connection. Jobs written during
one event-loop iteration are run together at the start of the next, on the loop's own thread,
each inside its own SAVEPOINT of one transaction (up to ``BATCH_MAX`` per commit): many small
writes cost one WAL commit instead of one each, a failing job rolls back alone and raises to its
caller, and nothing is handed to another thread. A job's result is returned only after the
commit, so "returned" means "durable". Callbacks registered with ``tx.on_commit`` run on the
loop right after the commit (the log uses this to wake its consumers).

Why the loop's thread: a small write costs tens of microseconds of SQLite, less than handing it
to a thread and back; and a writer thread that gives up the GIL on every statement waits for
the busy loop to give it back each time, which serialised the whole process under load. Jobs
that may run long (a fan-out to thousands of timelines, an aggregation batch, retention) pass
``offload=True``: they run on a thread holding the connection, and the loop's batches wait for
it. WAL checkpoints (which write and sync the database file) run on their own thread and
connection, never in a commit on the loop.

Reads run on per-thread connections of a small pool; WAL lets them proceed during writes.
Point lookups on hot paths may ask to run on the loop instead, for the same reason as writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fanout.core.errors import Unavailable
from fanout.storage.embedded.migrate import migrate

__all__ = ["SqliteEngine", "WriteTx"]

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_MAX = 256  # jobs per commit: bounds the latency one commit adds to its first job
READERS = 4
BUSY_TIMEOUT_MS = 5_000
CHECKPOINT_EVERY_S = 0.5  # the checkpointer's pace
WAL_RESTART_FRAMES = 4_096  # pages in the WAL past which a checkpoint waits for writes to pause
WAL_SIZE_LIMIT = 64 * 1_048_576  # bytes the WAL file is cut back to when it starts over
# The lookup connection (a redirect's cache miss, on the event loop's thread) reads the database
# file through a memory map of up to this much (address space): a page is a memory access, not
# a pread() inside the SQLite step during which the loop has given up the GIL (~4 000 a second
# at 27k redirects/s before, ~700 after: WAL pages are still read).
LOOKUP_MMAP_B = 1 << 30


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


# A job's outcome: whether it succeeded, its result or exception, its after-commit callbacks.
_Outcome = tuple[bool, Any, list[Callable[[], None]]]


class SqliteEngine:
    dialect = "sqlite"
    supports_returning = True

    def __init__(self, path: Path, *, readers: int = READERS) -> None:
        self.path = path
        self._readers = readers
        self._conn: sqlite3.Connection | None = None  # the writer connection, while running
        # Held by whoever writes: a loop batch, an offloaded job, the checkpointer's second pass.
        self._conn_lock = threading.Lock()
        # Set by the loop when its batch found the writer held; whoever lets go of it then
        # wakes the loop (it used to poll every half millisecond, ~2 000 wake-ups a second for
        # as long as an aggregation batch held the writer, each one taking the GIL back).
        self._loop_waits = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Job] = []  # written since the last batch ran
        self._offloads: ThreadPoolExecutor | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lookups: sqlite3.Connection | None = None  # the loop's own, for ``lookup`` reads
        self._conns_lock = threading.Lock()
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database, apply pending migrations, start the readers and the checkpointer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = await asyncio.to_thread(self._open_writer)
        self._loop = asyncio.get_running_loop()
        self._offloads = ThreadPoolExecutor(1, thread_name_prefix="sqlite-offload")
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="sqlite-reader")
        self._stop.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_main, name="sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()
        self._conn = conn

    async def close(self) -> None:
        """Finish the jobs already written, then stop; later writes raise ``Unavailable``."""
        conn, self._conn = self._conn, None  # write() refuses from here on
        if conn is not None:
            if self._offloads is not None:
                await asyncio.to_thread(self._offloads.shutdown, wait=True)
                self._offloads = None
            with self._conn_lock:
                while self._pending:
                    self._run_pending(conn)
            self._stop.set()
            if self._checkpointer is not None:
                await asyncio.to_thread(self._checkpointer.join)
                self._checkpointer = None
            conn.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._lookups is not None:
            self._lookups.close()
            self._lookups = None
        with self._conns_lock:
            for reader in self._reader_conns:
                reader.close()
            self._reader_conns.clear()

    # -- public API ----------------------------------------------------------------------------

    async def write(self, fn: Callable[[WriteTx], T], *, offload: bool = False) -> T:
        """Run ``fn`` in a transaction on the writer; return its result once committed.

        ``offload``: run it on a thread, for a job that may hold the writer for long (the loop
        keeps serving meanwhile; its own batches wait for the connection)."""
        conn, loop = self._conn, asyncio.get_running_loop()
        if conn is None:
            raise Unavailable("the SQLite engine is not running")
        if offload or loop is not self._loop:
            return await self._offload(conn, fn)
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Job(fn, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    async def read(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        snapshot: bool = False,
        lookup: bool = False,
    ) -> T:
        """Run ``fn`` with a reader connection on the reader pool; with ``snapshot`` inside one
        read transaction, so all its statements see the same commit; with ``lookup`` as
        :meth:`lookup` when called on the loop."""
        if self._pool is None:
            raise Unavailable("the SQLite engine is not running")
        loop = asyncio.get_running_loop()
        if lookup and loop is self._loop:
            return self.lookup(fn)
        run = functools.partial(self._run_read, _in_snapshot(fn) if snapshot else fn)
        return await loop.run_in_executor(self._pool, run)

    def lookup(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn``, a point lookup by key (never a scan), at once on the calling thread —
        the event loop's — with a connection of its own. For hot paths: the hop to a reader
        thread and back, with the GIL handed over and back under load, cost a redirect's cache
        miss hundreds of microseconds against the lookup's few."""
        if self._pool is None:
            raise Unavailable("the SQLite engine is not running")
        if self._lookups is None:
            self._lookups = self._connect()
            self._lookups.execute("PRAGMA query_only=1")
            self._lookups.execute(f"PRAGMA mmap_size={LOOKUP_MMAP_B}")
        return fn(self._lookups)

    async def ping(self) -> None:
        await self.read(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- writing -------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Run what was written since the last batch, on the loop, unless another thread (an
        offloaded job, the checkpointer) holds the connection: then its holder calls this again
        when it lets go."""
        conn = self._conn
        if not self._pending:
            return
        if conn is None:  # closed meanwhile: close() ran what was pending
            return
        if not self._conn_lock.acquire(blocking=False):
            self._loop_waits = True
            # Asked again: the holder may have let go before it could see the flag.
            if not self._conn_lock.acquire(blocking=False):
                return  # the holder calls _flush when it lets go (_holding_writer)
            self._loop_waits = False
        try:
            while self._pending:
                self._run_pending(conn)
        finally:
            self._conn_lock.release()

    @contextlib.contextmanager
    def _holding_writer(self) -> Iterator[None]:
        """The writer connection, from a thread other than the loop's; once let go (however
        the holder ended: a failed checkpoint too), the loop's waiting batch is run."""
        self._conn_lock.acquire()
        try:
            yield
        finally:
            self._conn_lock.release()
            self._wake_loop()

    def _wake_loop(self) -> None:
        if self._loop_waits:
            self._loop_waits = False
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed: nothing waits
                    loop.call_soon_threadsafe(self._flush)

    def _run_pending(self, conn: sqlite3.Connection) -> None:
        batch = self._pending[:BATCH_MAX]
        del self._pending[:BATCH_MAX]
        outcomes = _run_batch(conn, [job.fn for job in batch])
        for job, (ok, value, callbacks) in zip(batch, outcomes, strict=True):
            if ok:
                _settle_with_callbacks(job.future, value, callbacks)
            else:
                _settle_error(job.future, value)

    async def _offload(self, conn: sqlite3.Connection, fn: Callable[[WriteTx], T]) -> T:
        executor = self._offloads
        if executor is None:
            raise Unavailable("the SQLite engine is not running")

        def run() -> _Outcome:
            with self._holding_writer():
                return _run_batch(conn, [fn])[0]

        try:
            ok, value, callbacks = await asyncio.get_running_loop().run_in_executor(executor, run)
        except RuntimeError as exc:  # the executor was shut down by close()
            raise Unavailable("the SQLite engine was closed") from exc
        if not ok:
            raise value
        for callback in callbacks:
            _call_back(callback)
        return value  # type: ignore[no-any-return]

    # -- threads -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
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

    def _checkpoint_main(self) -> None:
        """Copy committed WAL frames into the database now and then, so no commit on the loop
        ever does. A PASSIVE checkpoint runs alongside writes but cannot finish while they
        append, and the WAL starts over only after a finished one: once it holds more than
        ``WAL_RESTART_FRAMES``, a second pass runs holding the writer connection (what is left
        to copy is what the first pass missed, so writes wait briefly) and the next commit
        starts the WAL from its beginning."""
        conn = self._connect()
        try:
            while not self._stop.wait(CHECKPOINT_EVERY_S):
                try:
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames > WAL_RESTART_FRAMES:
                        with self._holding_writer():
                            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint failed: %s", exc)
        finally:
            conn.close()


def _run_batch(conn: sqlite3.Connection, fns: list[Callable[[WriteTx], Any]]) -> list[_Outcome]:
    """Run each job in its own savepoint of one transaction, then commit; a commit that fails
    fails every job with ``Unavailable``."""
    outcomes: list[_Outcome] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for fn in fns:
            tx = WriteTx(conn)
            conn.execute("SAVEPOINT job")
            try:
                result = fn(tx)
            except BaseException as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((False, exc, []))
            else:
                conn.execute("RELEASE job")
                outcomes.append((True, result, tx._callbacks))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):  # no transaction left to roll back
            conn.execute("ROLLBACK")
        failure = Unavailable(f"SQLite commit failed: {exc}")
        return [(False, failure, []) for _ in fns]
    return outcomes


def _in_snapshot(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    def run(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    return run


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _settle_error(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _call_back(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:  # a wake-up hook failing must not lose the committed result
        log.exception("after-commit callback failed")


def _settle_with_callbacks(
    future: asyncio.Future[Any], value: Any, callbacks: list[Callable[[], None]]
) -> None:
    for callback in callbacks:
        _call_back(callback)
    _settle(future, value)
