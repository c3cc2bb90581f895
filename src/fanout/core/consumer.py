"""The worker runner: runs handlers over the log with bounded concurrency and drains on stop.

For each subscription (topic, group, handler) the runner keeps partition leases in balance with
the group's other live consumers (``ceil(partitions / consumers)`` each), reads every leased
partition in order and calls the handler once per record, one record at a time per partition
(so order within a partition — within a key — is kept), at most ``max_concurrency`` handler calls
at once across partitions. A record is acknowledged after its handler returns. A handler that
raises is retried with backoff; after ``max_attempts`` deliveries the record goes to
``<topic>.dlq`` with the error and the partition moves on. Nothing is dropped silently.

``stop()`` stops reading, lets running handlers finish until the grace deadline, then cancels
them; unacknowledged records stay pending and are redelivered to whoever leases the partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fanout.core.log import Log, LogRecord

__all__ = ["BatchHandler", "ConsumerRunner", "Handler", "Subscription"]

log = logging.getLogger(__name__)

Handler = Callable[[LogRecord], Awaitable[None]]
BatchHandler = Callable[[list[LogRecord]], Awaitable[None]]

LEASE_MS = 10_000  # a dead consumer's partitions move after at most this long
IDLE_WAIT_S = 0.25  # upper bound on the wait for new records when a partition is idle
RETRY_BACKOFF_S = 0.05  # first retry delay; doubles per attempt


@dataclass(frozen=True, slots=True)
class Subscription:
    """``handler`` takes one record. With ``batch_handler`` a whole read batch goes to it at
    once (one transaction for many records); if it fails, the batch is handled record by record
    through ``handler`` so that one poison record is retried and dead-lettered alone."""

    topic: str
    group: str
    handler: Handler
    batch: int = 100  # records fetched per read
    batch_handler: BatchHandler | None = None
    # After a batch short of ``batch``, or a wait for new records, pause this long before
    # reading the partition again, so that records arriving one by one are read (claimed,
    # acknowledged) in batches, and a partition woken by another's record does not read in
    # vain each time: for consumers whose records may wait that long. 0: read at once.
    # A log may return fewer than ``batch`` with more waiting (the Redis log reads at most
    # 1 000, and redeliveries apart): a lingering partition then reads at most ``batch`` or
    # that many a pause.
    linger_s: float = 0.0


class ConsumerRunner:
    def __init__(
        self,
        log_: Log,
        subscriptions: Sequence[Subscription],
        consumer: str,
        *,
        max_concurrency: int = 16,
        max_attempts: int = 3,
        lease_ms: int = LEASE_MS,
        retry_backoff_s: float = RETRY_BACKOFF_S,
    ) -> None:
        self._log = log_
        self._subs = list(subscriptions)
        self.consumer = consumer
        self._slots = asyncio.Semaphore(max_concurrency)
        self._max_attempts = max_attempts
        self._lease_ms = lease_ms
        self._backoff_s = retry_backoff_s
        self._stopping = asyncio.Event()
        self._owned: dict[tuple[str, str, int], asyncio.Task[None]] = {}
        self._balancers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start balancing and consuming in background tasks; returns at once."""
        for sub in self._subs:
            self._balancers.append(
                asyncio.create_task(self._balance_loop(sub), name=f"balance:{sub.topic}")
            )

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop intake, let handlers finish until ``grace_s``, cancel the rest, free leases."""
        self._stopping.set()
        for task in self._balancers:
            task.cancel()
        await asyncio.gather(*self._balancers, return_exceptions=True)
        tasks = list(self._owned.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for topic, group, partition in list(self._owned):
            with contextlib.suppress(Exception):  # the lease expires on its own anyway
                await self._log.release(topic, group, self.consumer, partition)
        self._owned.clear()

    def owned_partitions(self, sub: Subscription) -> list[int]:
        return sorted(
            p
            for (topic, group, p), task in self._owned.items()
            if (topic, group) == (sub.topic, sub.group) and not task.done()
        )

    async def _balance_loop(self, sub: Subscription) -> None:
        interval_s = self._lease_ms / 3000
        while not self._stopping.is_set():
            try:
                await self._rebalance(sub)
            except Exception:
                log.exception("rebalancing %s/%s failed; retrying", sub.topic, sub.group)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval_s)

    async def _rebalance(self, sub: Subscription) -> None:
        log_, me, ttl = self._log, self.consumer, self._lease_ms
        alive = max(await log_.join(sub.topic, sub.group, me, ttl), 1)
        target = math.ceil(log_.partitions / alive)
        for partition in self.owned_partitions(sub):  # renew; notice leases lost (long pauses)
            if not await log_.acquire(sub.topic, sub.group, me, partition, ttl):
                await self._finish((sub.topic, sub.group, partition))
        mine = self.owned_partitions(sub)
        for partition in mine[target:]:  # give back extras so newcomers get a share
            await self._finish((sub.topic, sub.group, partition))
            await log_.release(sub.topic, sub.group, me, partition)
        for partition in range(log_.partitions):
            if len(self.owned_partitions(sub)) >= target or self._stopping.is_set():
                break
            if partition in mine:
                continue
            if await log_.acquire(sub.topic, sub.group, me, partition, ttl):
                self._owned[(sub.topic, sub.group, partition)] = asyncio.create_task(
                    self._partition_loop(sub, partition), name=f"consume:{sub.topic}:{partition}"
                )

    async def _finish(self, key: tuple[str, str, int]) -> None:
        """Stop a partition loop (its current handler is cancelled; what it handled is acked,
        what it did not attempt is unclaimed) before the lease is handed back."""
        task = self._owned.pop(key, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _partition_loop(self, sub: Subscription, partition: int) -> None:
        while not self._stopping.is_set():
            try:
                records = await self._log.read(
                    sub.topic, sub.group, self.consumer, partition, sub.batch
                )
            except Exception:
                log.exception("reading %s[%d] failed; retrying", sub.topic, partition)
                await asyncio.sleep(IDLE_WAIT_S)
                continue
            if records:
                await self._handle_batch(sub, records)
                if len(records) == sub.batch:
                    continue  # more may be waiting: read on at once
            else:
                await self._log.wait(sub.topic, IDLE_WAIT_S)  # woken by any partition's record
            if sub.linger_s > 0:
                await asyncio.sleep(sub.linger_s)

    async def _handle_batch(self, sub: Subscription, records: list[LogRecord]) -> None:
        if sub.batch_handler is not None and not self._stopping.is_set():
            try:
                async with self._slots:
                    await sub.batch_handler(records)
            except asyncio.CancelledError:
                await asyncio.shield(self._settle(sub, [], records))
                raise
            except Exception as exc:  # isolate the failing record below, one at a time
                log.warning("batch handler for %s failed, handling one by one: %r",
                            sub.topic, exc)  # fmt: skip
            else:
                await asyncio.shield(self._settle(sub, records, []))
                return
        handled: list[LogRecord] = []
        done = 0  # records finished: handled, or dead-lettered (acknowledged by the DLQ move)
        try:
            for record in records:
                if self._stopping.is_set():
                    return
                if await self._handle(sub, record):
                    handled.append(record)
                done += 1
        finally:
            # One acknowledgement per batch, not per record: a crash before it redelivers
            # records already handled, which idempotent handlers absorb. Records not finished
            # (stopped or cancelled: not a failure) give their delivery back.
            await asyncio.shield(self._settle(sub, handled, records[done:]))

    async def _settle(
        self, sub: Subscription, handled: list[LogRecord], unfinished: list[LogRecord]
    ) -> None:
        try:
            if handled:
                await self._log.ack(sub.group, handled)
            if unfinished:
                await self._log.unclaim(sub.group, self.consumer, unfinished)
        except Exception:  # the records stay pending and are redelivered: at-least-once holds
            log.exception("settling a batch of %s failed", sub.topic)

    async def _handle(self, sub: Subscription, record: LogRecord) -> bool:
        """Run the handler with retries: True when it succeeded, False when dead-lettered."""
        attempt = record.deliveries
        while True:
            if attempt > self._max_attempts:
                await self._log.dead_letter(
                    sub.group, record, f"delivered {attempt - 1} times without success"
                )
                return False
            try:
                async with self._slots:
                    await sub.handler(record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "handler for %s[%d]@%s failed (attempt %d/%d): %r",
                    record.topic,
                    record.partition,
                    record.offset,
                    attempt,
                    self._max_attempts,
                    exc,
                )
                if attempt >= self._max_attempts:
                    await self._log.dead_letter(sub.group, record, repr(exc))
                    return False
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - record.deliveries))
                attempt += 1
                continue
            return True
