"""Group commit (``core/passes.py``): calls made while a pass runs share the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.core.errors import Unavailable
from fanout.core.passes import Passes, together_or_alone


class Recorder:
    """A pass function that records its passes and can be held open."""

    def __init__(self) -> None:
        self.passes: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_on: set[int] = set()

    async def run(self, items: list[int]) -> None:
        self.passes.append(items)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
            await asyncio.sleep(0)
            if self.fail_on & set(items):
                raise RuntimeError(f"failed on {sorted(self.fail_on & set(items))}")
        finally:
            self.running -= 1


async def test_a_lone_call_runs_at_once_and_later_calls_share_the_next_pass() -> None:
    rec = Recorder()
    passes = Passes(rec.run, most=100)
    await passes.submit([1])
    assert rec.passes == [[1]]
    rec.gate.clear()
    first = asyncio.create_task(passes.submit([2]))
    await asyncio.sleep(0.01)  # the pass of [2] is running, held at the gate
    waiting = [asyncio.create_task(passes.submit(items)) for items in ([3, 4], [5], [6])]
    await asyncio.sleep(0.01)
    rec.gate.set()
    await asyncio.gather(first, *waiting)
    assert rec.passes == [[1], [2], [3, 4, 5, 6]]


async def test_a_pass_holds_at_most_most_items_but_never_splits_a_call() -> None:
    rec = Recorder()
    rec.gate.clear()
    passes = Passes(rec.run, most=3)
    calls = [
        asyncio.create_task(passes.submit(items)) for items in ([0], [1, 2], [3], [4, 5, 6, 7], [8])
    ]
    await asyncio.sleep(0.01)
    rec.gate.set()
    await asyncio.gather(*calls)
    assert rec.passes == [[0, 1, 2], [3], [4, 5, 6, 7], [8]]


async def test_a_failed_pass_fails_its_callers_only() -> None:
    rec = Recorder()
    rec.gate.clear()
    rec.fail_on = {2}
    passes = Passes(rec.run, most=2)
    calls = [asyncio.create_task(passes.submit([n])) for n in range(4)]
    await asyncio.sleep(0.01)
    rec.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert rec.passes == [[0, 1], [2, 3]]
    assert results[:2] == [None, None]
    assert all(isinstance(r, RuntimeError) for r in results[2:])
    await passes.submit([9])  # the failure left nothing behind
    assert rec.passes[-1] == [9]


async def test_two_passes_at_once_overlap_and_no_more() -> None:
    rec = Recorder()
    rec.gate.clear()
    passes = Passes(rec.run, most=1, at_once=2)
    calls = [asyncio.create_task(passes.submit([n])) for n in range(5)]
    await asyncio.sleep(0.01)
    assert rec.running == 2
    rec.gate.set()
    await asyncio.gather(*calls)
    assert rec.most_running == 2
    assert sorted(item for p in rec.passes for item in p) == list(range(5))


async def test_a_cancelled_caller_leaves_the_pass_and_the_others_intact() -> None:
    rec = Recorder()
    rec.gate.clear()
    passes = Passes(rec.run, most=10)
    first = asyncio.create_task(passes.submit([1]))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(passes.submit([2]))
    stays = asyncio.create_task(passes.submit([3]))
    await asyncio.sleep(0.01)
    gone.cancel()
    rec.gate.set()
    await asyncio.gather(first, stays)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert rec.passes == [[1], [2, 3]]  # its items went through: the caller treats them as unknown


async def test_aclose_lets_a_pass_finish_within_grace_then_refuses_calls() -> None:
    rec = Recorder()
    rec.gate.clear()
    passes = Passes(rec.run, most=10)
    running = asyncio.create_task(passes.submit([1]))
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(passes.aclose(grace_s=5))
    await asyncio.sleep(0.01)
    rec.gate.set()
    await asyncio.gather(running, closing)
    assert rec.passes == [[1]]
    with pytest.raises(Unavailable):
        await passes.submit([2])


async def test_a_pass_cancelled_at_close_fails_its_callers_without_cancelling_them() -> None:
    rec = Recorder()
    rec.gate.clear()  # never opens: the pass outlives the grace
    passes = Passes(rec.run, most=1, at_once=1)
    running = asyncio.create_task(passes.submit([1]))
    waiting = asyncio.create_task(passes.submit([2]))
    await asyncio.sleep(0.01)
    await passes.aclose(grace_s=0.01)
    for call in (running, waiting):
        with pytest.raises(Unavailable):  # an error of theirs, not a CancelledError
            await call
    assert not passes._drains  # nothing left that would hold a slot


async def test_a_drain_cancelled_before_it_ran_frees_its_slot() -> None:
    rec = Recorder()
    passes = Passes(rec.run, most=10, at_once=1)
    first = asyncio.create_task(passes.submit([1]))
    await asyncio.sleep(0)  # the call is waiting; its drain task exists but has not run
    (drain,) = passes._drains
    drain.cancel()
    with pytest.raises(Unavailable):
        await first
    await passes.submit([2])  # a new drain starts: the cancelled one holds no slot
    assert rec.passes == [[2]]


def test_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        Passes(Recorder().run, most=0)
    with pytest.raises(ValueError):
        Passes(Recorder().run, most=1, at_once=0)


@settings(max_examples=60, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.integers(1, 6), st.integers(0, 3)), min_size=1, max_size=25
    ),  # (items in the call, loop turns to wait before making it)
    most=st.integers(1, 8),
    at_once=st.integers(1, 3),
)
def test_every_item_once_in_call_order_within_the_bounds(
    calls: list[tuple[int, int]], most: int, at_once: int
) -> None:
    async def scenario() -> Recorder:
        rec = Recorder()
        passes = Passes(rec.run, most=most, at_once=at_once)
        counter = iter(range(10**6))

        async def caller(size: int, delay: int) -> list[int]:
            for _ in range(delay):
                await asyncio.sleep(0)
            items = [next(counter) for _ in range(size)]
            await passes.submit(items)
            return items

        made = await asyncio.gather(*(caller(size, delay) for size, delay in calls))
        flat = [item for p in rec.passes for item in p]
        assert sorted(flat) == sorted(item for items in made for item in items)  # each once
        for items in made:  # a call is never split, and keeps its order
            (holder,) = [p for p in rec.passes if items[0] in p]
            start = holder.index(items[0])
            assert holder[start : start + len(items)] == items
        for p in rec.passes:
            assert (
                len(p) <= most
                or len({next(i for i, c in enumerate(made) if x in c) for x in p}) == 1
            )
        assert rec.most_running <= at_once
        return rec

    asyncio.run(scenario())


@dataclass
class _Item:
    n: int
    done_by: str = ""
    error: Exception | None = None


async def test_together_or_alone_falls_back_item_by_item() -> None:
    async def together(items: Sequence[_Item]) -> None:
        if any(i.n < 0 for i in items):
            raise ValueError("one bad item undoes the joined call")
        for item in items:
            item.done_by = "together"

    async def alone(item: _Item) -> None:
        if item.n < 0:
            raise ValueError(f"bad {item.n}")
        item.done_by = "alone"

    good = [_Item(1), _Item(2)]
    await together_or_alone(good, together, alone)
    assert [(i.done_by, i.error) for i in good] == [("together", None)] * 2
    mixed = [_Item(1), _Item(-1), _Item(3)]
    await together_or_alone(mixed, together, alone)
    assert [i.done_by for i in mixed] == ["alone", "", "alone"]
    assert [type(i.error) for i in mixed] == [type(None), ValueError, type(None)]
    lone = [_Item(5)]
    await together_or_alone(lone, together, alone)
    assert lone[0].done_by == "alone"  # one item: no joined call to try first


async def test_together_or_alone_lets_an_outage_fail_the_pass() -> None:
    async def down(_: object) -> None:
        raise Unavailable("the store is down")

    items = [_Item(1), _Item(2)]
    with pytest.raises(Unavailable):
        await together_or_alone(items, down, down)
    assert all(i.error is None for i in items)
