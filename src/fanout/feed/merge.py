"""Newest-first merging of paged sources, without repeats.

A :class:`Source` turns a paged fetch (``fetch(before, limit)`` → entries strictly older than
``before``, newest first) into a stream it refills on demand. :class:`Chain` reads a first source
to its end, then continues with a second one that starts exactly where the first ended.
:func:`newest_first` merges streams by position and drops duplicates of one post.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from fanout.feed.model import Entry, Position

__all__ = ["Chain", "Fetch", "Source", "Stream", "newest_first"]

Fetch = Callable[[Position | None, int], Awaitable[list[Entry]]]


class Stream(Protocol):
    async def peek(self) -> Entry | None: ...

    def take(self) -> Entry: ...


class Source:
    def __init__(
        self, fetch: Fetch, start: Position | None, batch: int, first: list[Entry] | None = None
    ) -> None:
        """``first``: the first page, when the caller fetched it already (with others)."""
        self._fetch = fetch
        self._before = start
        self._batch = batch
        self._buffer: deque[Entry] = deque()
        self._done = False
        self.last = start  # the position of the last entry taken (or the start)
        if first is not None:
            self._buffer.extend(first)
            self._done = len(first) < batch
            self._before = first[-1].position if first else start

    async def peek(self) -> Entry | None:
        if not self._buffer and not self._done:
            page = await self._fetch(self._before, self._batch)
            self._done = len(page) < self._batch
            if page:
                self._buffer.extend(page)
                self._before = page[-1].position
        return self._buffer[0] if self._buffer else None

    def take(self) -> Entry:
        entry = self._buffer.popleft()
        self.last = entry.position
        return entry


class Chain:
    """``first`` until it is exhausted, then ``then(first.last)``."""

    def __init__(self, first: Source, then: Callable[[Position | None], Source]) -> None:
        self._first = first
        self._then = then
        self._second: Source | None = None

    async def peek(self) -> Entry | None:
        if self._second is None:
            head = await self._first.peek()
            if head is not None:
                return head
            self._second = self._then(self._first.last)
        return await self._second.peek()

    def take(self) -> Entry:
        return self._first.take() if self._second is None else self._second.take()


async def newest_first(streams: Sequence[Stream]) -> AsyncIterator[Entry]:
    """Every entry of every stream once, by descending position (a post in several streams has
    the same position in each, so its copies meet at the heads and are dropped together)."""
    while True:
        best: Entry | None = None
        best_stream: Stream | None = None
        for stream in streams:
            head = await stream.peek()
            if head is not None and (best is None or head.position > best.position):
                best, best_stream = head, stream
        if best is None or best_stream is None:
            return
        best_stream.take()
        for stream in streams:
            head = await stream.peek()
            while head is not None and head.post_id == best.post_id:
                stream.take()
                head = await stream.peek()
        yield best
