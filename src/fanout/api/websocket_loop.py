"""Per-event-loop machinery of the WebSocket protocol (``api/websocket.py``): the write flush
that batches one iteration's frames per socket (the redirect protocol's answers use it too),
and the keepalive sweep.

Both are one object per event loop, not a timer or a callback per socket: with 10 000 idle
sockets, per-socket timers are memory and per-socket callbacks are loop iterations.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Protocol

__all__ = ["SWEEP_SLICE", "Flush", "Flushable", "Keepalive", "Socket"]

SWEEP_SLICE = 256  # sockets the keepalive sweep handles before letting other work run


class Flushable(Protocol):
    def flush(self) -> None: ...


class Socket(Flushable, Protocol):
    seen: bool  # bytes arrived since the last sweep
    pinged: bool  # a keepalive ping went out in the last sweep

    def ping(self) -> None: ...

    def expire(self) -> None: ...


class Flush:
    """One event loop's sockets with frames taken in this iteration, written once it ran."""

    _loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Flush] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self.pending: list[Flushable] = []

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Flush:
        flush = cls._loops.get(loop)
        if flush is None:
            flush = cls._loops[loop] = cls()
        return flush

    def soon(self, protocol: Flushable) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.run)
        self.pending.append(protocol)

    def run(self) -> None:
        pending, self.pending = self.pending, []
        for protocol in pending:
            protocol.flush()


class Keepalive:
    """One sweep per event loop over its open sockets (a timer per socket costs memory)."""

    _sweeps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Keepalive] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.sockets: set[Socket] = set()
        self.task = asyncio.get_running_loop().create_task(self._sweep())

    @classmethod
    def watch(cls, protocol: Socket, interval: float | None) -> None:
        if not interval or interval <= 0:
            return
        loop = asyncio.get_running_loop()
        sweep = cls._sweeps.get(loop)
        if sweep is None or sweep.task.done():
            sweep = cls._sweeps[loop] = cls(interval)
        sweep.sockets.add(protocol)

    @classmethod
    def forget(cls, protocol: Socket) -> None:
        try:
            sweep = cls._sweeps.get(asyncio.get_running_loop())
        except RuntimeError:
            return
        if sweep is not None:
            sweep.sockets.discard(protocol)

    async def _sweep(self) -> None:
        while self.sockets:  # ends with the last socket; the next one starts a new sweep
            await asyncio.sleep(self.interval)
            for n, protocol in enumerate(list(self.sockets)):
                if n % SWEEP_SLICE == SWEEP_SLICE - 1:
                    await asyncio.sleep(0)  # let deliveries run between slices
                if protocol.seen:
                    protocol.seen = False
                elif protocol.pinged:
                    self.sockets.discard(protocol)
                    protocol.expire()
                else:
                    protocol.pinged = True
                    protocol.ping()
