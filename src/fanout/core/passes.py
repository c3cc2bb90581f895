"""Group commit for async work: calls made while a pass runs are joined into the next pass.

A lone call starts a pass at once (no waiting for company); under load, everything submitted
while one pass runs goes together in the next, so passes grow with the backlog and shrink when
it clears. A caller returns when the pass holding its items is done, and raises what that pass
raised: every caller of a failed pass sees the failure, and may retry its own items alone —
or the pass itself falls back to its items one by one (:func:`together_or_alone`), so that one
bad item fails only its own caller.
Nothing queues beyond the callers themselves: each waits for its own items, so the waiting
calls are at most the callers at once (the fan-out worker's: its consumer runner's handlers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from fanout.core.errors import Unavailable

__all__ = ["Passes", "together_or_alone"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Fallible(Protocol):
    error: Exception | None  # what making this item alone raised, for its caller


F = TypeVar("F", bound=_Fallible)


async def together_or_alone(
    items: Sequence[F],
    together: Callable[[Sequence[F]], Awaitable[None]],
    alone: Callable[[F], Awaitable[None]],
) -> None:
    """A pass's items in one go (``together``, when there are several), else each ``alone``:
    a lone item, or every item of a failed joined call (undone as a whole). An item's own
    failure goes to its ``error`` for its caller alone; ``Unavailable`` (an outage, not an item's
    fault) fails the whole pass."""
    if len(items) > 1:
        try:
            await together(items)
            return
        except Unavailable:
            raise
        except Exception:  # undone as a whole: each item is made alone, below
            log.debug("a joined call of %d items failed; making them one by one", len(items))
    for item in items:
        try:
            await alone(item)
        except Unavailable:
            raise
        except Exception as exc:  # this item's own failure, for its caller alone
            item.error = exc


class Passes(Generic[T]):
    """Runs ``run`` over the items of waiting calls, at most ``at_once`` passes at a time and
    ``most`` items a pass (a call's items are never split; a larger call is a pass of its own).
    Two passes at once let one pass's reads overlap another's writes."""

    def __init__(
        self, run: Callable[[list[T]], Awaitable[object]], *, most: int, at_once: int = 1
    ) -> None:
        if most < 1 or at_once < 1:
            raise ValueError("most and at_once must be at least 1")
        self._run = run
        self._most = most
        self._at_once = at_once
        self._waiting: list[tuple[Sequence[T], asyncio.Future[None]]] = []
        self._drains: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, items: Sequence[T]) -> None:
        """Return once ``items`` went through a pass. A cancelled caller leaves its items in
        the pass: they are processed or not, and the caller must treat them as unknown.
        ``Unavailable`` when the pass was cancelled (:meth:`aclose`) before it finished: the
        items may or may not be done."""
        if not items:
            return
        if self._closed:
            raise Unavailable("no more passes: closed")
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((items, done))
        if len(self._drains) < self._at_once:
            task = asyncio.create_task(self._drain(), name="passes")
            self._drains.add(task)
            task.add_done_callback(self._drain_done)
        await asyncio.shield(done)

    async def aclose(self, grace_s: float) -> None:
        """Take no more calls; let running passes finish for ``grace_s``, then cancel them
        (their callers get ``Unavailable``)."""
        self._closed = True
        drains = list(self._drains)
        if drains:
            _, pending = await asyncio.wait(drains, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*drains, return_exceptions=True)
        self._fail(self._waiting, Unavailable("no more passes: closed"))
        self._waiting = []

    def _take(self) -> list[tuple[Sequence[T], asyncio.Future[None]]]:
        """The next pass: waiting calls in order, up to ``most`` items (at least one call)."""
        taken, size = 0, 0
        for items, _ in self._waiting:
            if taken and size + len(items) > self._most:
                break
            taken, size = taken + 1, size + len(items)
        calls, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return calls

    @staticmethod
    def _fail(calls: Sequence[tuple[Sequence[T], asyncio.Future[None]]], exc: Exception) -> None:
        for _, done in calls:
            if not done.done():
                done.set_exception(exc)
                done.exception()  # seen here: a caller that went away must not log it

    def _drain_done(self, task: asyncio.Task[None]) -> None:
        """Also runs for a drain cancelled before it started (its ``finally`` never ran)."""
        self._drains.discard(task)
        if not self._drains:
            self._fail(self._waiting, Unavailable("the pass was cancelled"))
            self._waiting = []

    async def _drain(self) -> None:
        me = asyncio.current_task()
        try:
            while self._waiting:
                calls = self._take()
                batch = [item for items, _ in calls for item in items]
                try:
                    await self._run(batch)
                except asyncio.CancelledError:
                    # Not the callers' cancellation: they must not take it for their own.
                    self._fail(calls, Unavailable("the pass was cancelled"))
                    raise
                except Exception as exc:  # handed to every caller of the pass
                    self._fail(calls, exc)
                else:
                    for _, done in calls:
                        done.set_result(None)
        finally:
            # No await between the last look at the waiting calls and leaving the set: a call
            # made after that look finds a free slot and starts a drain of its own.
            self._drains.discard(me)
            if not self._drains:  # cancelled with calls waiting and nobody left to serve them
                self._fail(self._waiting, Unavailable("the pass was cancelled"))
                self._waiting = []
