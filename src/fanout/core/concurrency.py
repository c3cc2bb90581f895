"""Bounded concurrency for a run of independent awaitables."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

__all__ = ["at_most"]


async def at_most(limit: int, jobs: Iterable[Callable[[], Awaitable[object]]]) -> None:
    """Run ``jobs`` in their order, at most ``limit`` at once; return when all are done.

    A failure cancels the jobs still running, and jobs not started yet never start; of the
    jobs found failed together, the earliest one's error is raised as itself (not wrapped in
    an exception group, as ``asyncio.TaskGroup`` would), so callers keep catching what a job
    raises, and the others' errors are dropped. Cancelling the caller cancels every job. A job
    that cancels itself counts as failed: its ``CancelledError`` reaches the caller.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    running: dict[asyncio.Future[object], int] = {}  # a job's task → its place in ``jobs``

    async def settle(when: str) -> None:
        done, _ = await asyncio.wait(running, return_when=when)
        failed: list[tuple[int, BaseException]] = []
        for task in done:
            place = running.pop(task)
            if task.cancelled():
                failed.append((place, asyncio.CancelledError()))
            elif (error := task.exception()) is not None:  # read: never "not retrieved"
                failed.append((place, error))
        if failed:
            raise min(failed, key=lambda f: f[0])[1]

    try:
        for place, job in enumerate(jobs):
            if len(running) >= limit:
                await settle(asyncio.FIRST_COMPLETED)
            running[asyncio.ensure_future(job())] = place
        while running:
            await settle(asyncio.FIRST_EXCEPTION)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
