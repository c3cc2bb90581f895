"""Transactional outbox: scaled mode's log records commit with the write they describe.

In embedded mode a write and its log record commit together because the log lives in the same
SQLite file (DESIGN.md §4). In scaled mode the log is Redis Streams, which cannot join a
PostgreSQL transaction, so adapters write their records to table ``log_outbox`` inside their own
transaction (:meth:`PostgresOutbox.append`) and :class:`OutboxRelay` moves committed rows to the
log afterwards. A post therefore never exists without its fan-out record, nor a record without
its post: a rolled-back write leaves no row to relay.

Relay guarantees:

* **At-least-once.** Rows are deleted in the transaction that read them, after the log accepted
  them. A crash (or outage, or cancellation) between publishing and commit rolls the deletion
  back and the rows are published again by the next pass: duplicates, never losses.
* **Order.** One relay moves rows at a time, across all processes (a transaction-level advisory
  lock; a process that does not get it moves nothing), oldest id first, and publishes each
  topic's rows in id order. Ids come from a sequence, so a write that saw another write's commit
  has a higher id, and each key's records reach its partition in causal order. (Writes that were
  concurrent may be relayed in either order: neither saw the other.)
* **Latency.** An append issues ``NOTIFY fanout_outbox``, delivered at commit; an idle relay
  listens on a dedicated connection and also polls every ``poll_s`` in case a notification was
  missed (listener reconnecting, notification sent before it listened). Records nobody waits
  for are appended ``wake=False``: no NOTIFY, relayed by the next poll (at most ``poll_s``
  later) or the next pass another append wakes. A NOTIFY per chat message cost PostgreSQL
  30 to 60 µs and every listening process ~40 µs of its event loop (measured).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import asyncpg

from fanout.core.errors import Unavailable
from fanout.core.log import Log, Publish
from fanout.storage.postgres.engine import PgConnection, PostgresEngine

__all__ = ["OUTBOX_CHANNEL", "RELAY_LOCK_KEY", "OutboxRelay", "PostgresOutbox"]

log = logging.getLogger(__name__)

T = TypeVar("T")

OUTBOX_CHANNEL = "fanout_outbox"  # NOTIFY channel; the payload is empty: it only means "look"
RELAY_LOCK_KEY = 0x6F7574626F78  # "outbox" in ASCII; advisory lock keys are per database
DEFAULT_BATCH = 500  # rows per relay pass: one Redis round trip per topic, a few ms of locking
POLL_S = 0.2  # an idle relay looks anyway this often: bounds latency when a NOTIFY is missed
LISTEN_CONNECT_TIMEOUT_S = 10.0  # as the engine's connect timeout: longer means unreachable
LISTEN_COMMAND_TIMEOUT_S = 10.0  # LISTEN is instant on a healthy server
LISTEN_RETRY_S = 5.0  # a lost listener is reconnected at most this often; polling covers the gap
CLOSE_TIMEOUT_S = 5.0  # closing the listener at shutdown; after that it is dropped
STOP_GRACE_S = 0.5  # time a pass running at stop gets to finish (a healthy one takes ms)
BACKOFF_MIN_S = 0.1  # first pause after a failed pass (PostgreSQL or Redis unreachable)
BACKOFF_MAX_S = 5.0  # pauses double up to this: an outage costs one warning per 5 s, not a spin

# One statement, one round trip: the data-modifying CTE always runs to completion, and the
# notification is queued in the same transaction, so it is delivered only if the rows commit
# (several appends in one transaction collapse into one notification). ORDER BY ordinality makes
# the sequence number the events in the order given.
_APPEND = (
    "WITH appended AS ("
    " INSERT INTO log_outbox (topic, key, payload)"
    " SELECT topic, key, payload"
    " FROM unnest($1::text[], $2::text[], $3::bytea[]) WITH ORDINALITY AS e(topic, key, payload, n)"
    " ORDER BY n"
    ") SELECT pg_notify('" + OUTBOX_CHANNEL + "', '')"
)
_APPEND_QUIETLY = (
    "INSERT INTO log_outbox (topic, key, payload)"
    " SELECT topic, key, payload"
    " FROM unnest($1::text[], $2::text[], $3::bytea[]) WITH ORDINALITY AS e(topic, key, payload, n)"
    " ORDER BY n"
)


class PostgresOutbox:
    """Writes log records into ``log_outbox`` inside the caller's transaction."""

    async def append(
        self, conn: PgConnection, events: Sequence[Publish], *, wake: bool = True
    ) -> None:
        """Store ``events`` (in this order) in the transaction open on ``conn``.

        They become visible to the relay, and the relay is notified (unless not ``wake``), only
        when that transaction commits; nothing is stored or notified if it rolls back. No
        events: no statement.
        """
        if not events:
            return
        await conn.execute(
            _APPEND if wake else _APPEND_QUIETLY,
            [event.topic for event in events],
            [event.key for event in events],
            [event.payload for event in events],
        )


class OutboxRelay:
    """Moves committed outbox rows to the log; see the module docstring for the guarantees.

    Any number of processes may run a relay on one database: only one moves rows at a time.
    One :meth:`run_forever` per instance.
    """

    def __init__(
        self,
        engine: PostgresEngine,
        log_: Log,
        *,
        batch: int = DEFAULT_BATCH,
        poll_s: float = POLL_S,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._engine = engine
        self._log = log_
        self._batch = batch
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection[asyncpg.Record] | None = None
        self._listen_retry_at = 0.0  # event-loop time before which no reconnect is attempted

    async def run_once(self) -> int:
        """Move up to ``batch`` of the oldest rows to the log; the number moved.

        0 when the outbox is empty or another relay holds the lock. Raises ``Unavailable`` when
        PostgreSQL or the log cannot be reached; the rows then stay for the next pass (some may
        have been published already: they are published again).
        """

        async def relay_outbox(conn: PgConnection) -> int:
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RELAY_LOCK_KEY):
                return 0
            # A new statement, so a new snapshot under READ COMMITTED: it sees the deletions
            # of the relay that held the lock before (its commit is visible before its lock is
            # released). FOR UPDATE guards against anything else deleting rows meanwhile.
            rows = await conn.fetch(
                "SELECT id, topic, key, payload FROM log_outbox ORDER BY id LIMIT $1 FOR UPDATE",
                self._batch,
            )
            if not rows:
                return 0
            for topic, entries in _by_topic(rows).items():
                await self._log.publish_many(topic, entries)
            # By id, not "id <= max": rows committed since the SELECT were not published.
            await conn.execute(
                "DELETE FROM log_outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows]
            )
            return len(rows)

        return await self._engine.transaction(relay_outbox)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set, then close the listener and return.

        Passes follow each other while they move full batches; otherwise the relay waits for a
        notification or ``poll_s``, whichever comes first. A failed pass (PostgreSQL or Redis
        down) is logged and retried with exponential backoff up to ``BACKOFF_MAX_S``; nothing
        here gives up. Setting ``stop`` ends any wait at once; a pass in progress gets
        ``STOP_GRACE_S`` to finish, then is cancelled. Cancelling (the pass, or this coroutine)
        is safe: an interrupted pass rolls back and its rows are relayed again later.
        """
        stopping = asyncio.create_task(stop.wait(), name="outbox-relay-stop")
        backoff_s = BACKOFF_MIN_S
        try:
            while not stop.is_set():
                await self._unless_stopping(self._ensure_listener(), stopping, 0.0)
                self._wake.clear()  # before the pass: a NOTIFY during it triggers the next one
                try:
                    # A healthy pass takes milliseconds: within the grace period it completes
                    # and publishes nothing twice; one stuck on an outage is cancelled (rolled
                    # back, relayed again later).
                    moved = await self._unless_stopping(self.run_once(), stopping, STOP_GRACE_S)
                except Exception as exc:
                    # Safe to swallow: the rows stay in the outbox and the next pass retries
                    # them. Anything unexpected is logged with its traceback and retried too,
                    # because a relay that dies silently would stop every feed's fan-out.
                    if isinstance(exc, Unavailable):
                        log.warning("outbox relay: %s; retrying in %.1f s", exc, backoff_s)
                    else:
                        log.exception("outbox relay pass failed; retrying in %.1f s", backoff_s)
                    await self._pause(stopping, backoff_s, wake_on_notify=False)
                    backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
                    continue
                backoff_s = BACKOFF_MIN_S
                if moved is not None and moved < self._batch:
                    await self._pause(stopping, self._poll_s, wake_on_notify=True)
        finally:
            stopping.cancel()
            await self._close_listener()

    # -- internals -----------------------------------------------------------------------------

    async def _unless_stopping(
        self, work: Coroutine[Any, Any, T], stopping: asyncio.Task[Any], grace_s: float
    ) -> T | None:
        """Run ``work``; if stopping comes first, give it ``grace_s`` more, then cancel it.

        None when it was cancelled. Used so that a connect or a pass stuck on an outage (up to
        the engine's or Redis's timeouts, tens of seconds) cannot hold up shutdown.
        """
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and grace_s > 0:
                await asyncio.wait({task}, timeout=grace_s)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        return None if task.cancelled() else task.result()

    async def _pause(
        self, stopping: asyncio.Task[Any], timeout_s: float, *, wake_on_notify: bool
    ) -> None:
        """Wait ``timeout_s``, less if stopping (or, if asked, notified)."""
        waiters: set[asyncio.Task[Any]] = {stopping}
        waking = asyncio.create_task(self._wake.wait()) if wake_on_notify else None
        if waking is not None:
            waiters.add(waking)
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if waking is not None:
                waking.cancel()

    def _notified(self, conn: object, pid: int, channel: str, payload: object, /) -> None:
        self._wake.set()

    async def _ensure_listener(self) -> None:
        """(Re)connect the LISTEN connection if it is missing, at most every LISTEN_RETRY_S."""
        if self._listener is not None and not self._listener.is_closed():
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._listen_retry_at:
            return
        self._listen_retry_at = loop.time() + LISTEN_RETRY_S
        await self._close_listener()
        try:
            async with asyncio.timeout(LISTEN_CONNECT_TIMEOUT_S + LISTEN_COMMAND_TIMEOUT_S):
                conn = await self._engine.dedicated_connection(
                    LISTEN_CONNECT_TIMEOUT_S, LISTEN_COMMAND_TIMEOUT_S
                )
                try:
                    await conn.add_listener(OUTBOX_CHANNEL, self._notified)
                except BaseException:
                    conn.terminate()
                    raise
        except Exception as exc:
            # Safe to swallow: without a listener the relay still polls every poll_s.
            log.warning(
                "outbox relay cannot LISTEN (%s: %s); polling every %s s until it can",
                type(exc).__name__,
                exc,
                self._poll_s,
            )
            return
        self._listener = conn

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None or conn.is_closed():
            return
        try:
            await conn.close(timeout=CLOSE_TIMEOUT_S)
        except Exception:  # a connection that cannot close cleanly is dropped: nothing is lost
            conn.terminate()


def _by_topic(rows: Sequence[asyncpg.Record]) -> dict[str, list[tuple[str, bytes]]]:
    """Rows (in id order) grouped by topic, each topic's entries still in id order.

    One ``publish_many`` per topic rather than per run of consecutive rows: the log orders
    records within a partition of one topic only, so order across topics is not observable.
    """
    grouped: dict[str, list[tuple[str, bytes]]] = {}
    for row in rows:
        grouped.setdefault(row["topic"], []).append((row["key"], row["payload"]))
    return grouped
