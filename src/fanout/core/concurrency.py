"""Bounded concurrency for a run of independent awaitables."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

__all__ = ["at_most"]


async def at_most(limit: int, jobs: Iterable[Callable[[], Awaitable[object]]]) -> None:
    """Run ``jobs`` in their order, at most ``limit`` at once; return when all are done.

    The first failure cancels the jobs still running and is raised as itself (not wrapped in an
    exception group, as ``asyncio.TaskGroup`` would), so callers keep catching what a job
    raises; jobs not started yet are never started. Cancelling the caller cancels them all.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    running: set[asyncio.Future[object]] = set()
    try:
        for job in jobs:
            if len(running) >= limit:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            running.add(asyncio.ensure_future(job()))
        while running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
