"""``at_most``: a bounded run of jobs, started in order, whose first failure stops the rest."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fanout.core.concurrency import at_most


def _jobs(
    n: int, log: list[tuple[str, int]], running: list[int], fail: int | None = None
) -> list[Callable[[], Awaitable[object]]]:
    async def job(i: int) -> None:
        log.append(("start", i))
        running[0] += 1
        running[1] = max(running[1], running[0])
        try:
            await asyncio.sleep(0.001 * (i % 3))
            if i == fail:
                raise LookupError(i)
        finally:
            running[0] -= 1
        log.append(("end", i))

    return [lambda i=i: job(i) for i in range(n)]


async def test_every_job_runs_once_in_order_and_never_more_than_the_limit() -> None:
    log: list[tuple[str, int]] = []
    running = [0, 0]  # now, most at once
    await at_most(3, _jobs(20, log, running))
    assert [i for what, i in log if what == "start"] == list(range(20))
    assert sorted(i for what, i in log if what == "end") == list(range(20))
    assert running == [0, 3]


async def test_the_first_failure_is_raised_as_itself_and_stops_the_rest() -> None:
    log: list[tuple[str, int]] = []
    running = [0, 0]
    with pytest.raises(LookupError):
        await at_most(2, _jobs(20, log, running, fail=4))
    started = [i for what, i in log if what == "start"]
    assert started == list(range(len(started))) and len(started) < 20  # the rest never start
    assert running[0] == 0  # nothing left running behind the caller's back


async def test_a_failure_after_the_last_start_stops_the_jobs_still_running() -> None:
    log: list[tuple[str, int]] = []
    running = [0, 0]
    with pytest.raises(LookupError):
        await at_most(5, [*_jobs(2, log, running, fail=0), lambda: asyncio.sleep(10)])
    assert running[0] == 0 and len(asyncio.all_tasks()) == 1  # the sleeper was cancelled


async def test_jobs_failing_together_raise_the_earliest_and_leave_no_error_unread() -> None:
    unread: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unread.append(context))

    async def fail(i: int) -> None:
        await asyncio.sleep(0.01)
        raise LookupError(i)

    with pytest.raises(LookupError) as caught:
        await at_most(3, [lambda i=i: fail(i) for i in range(3)])
    assert caught.value.args == (0,)
    del caught  # its traceback holds at_most's frame, and so the tasks
    gc.collect()  # an error never read is reported when its task is collected
    await asyncio.sleep(0)
    assert unread == []


async def test_cancelling_the_caller_cancels_the_running_jobs() -> None:
    log: list[tuple[str, int]] = []
    running = [0, 0]
    slow = [lambda: asyncio.sleep(10)] * 4
    task = asyncio.create_task(at_most(2, [*_jobs(2, log, running), *slow]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(asyncio.all_tasks()) == 1  # only this test's own


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        asyncio.run(at_most(0, []))
