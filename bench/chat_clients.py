"""The WebSocket clients of ``fanout bench chat``, in client processes driven over pipes.

``bench.chat_setup.place`` decides which process holds which client, on which server. Each
process runs uvloop and holds its clients as ``asyncio.Protocol`` objects (a connection costs
no task). websockets' sans-I/O ``ClientProtocol`` does the handshake and masks what clients
send; once the handshake is done, ``bench.chat_wire.ServerFrames`` reads the server's frames.
Client CPU per received frame, with 500 connections receiving a 500-member group's frames:
websockets' asyncio client 24 µs, its sans-I/O parser 11 µs, the hand-written one 7 µs.

Latency: the sender writes ``"<phase> <perf_counter_ns>"`` as the text. ``perf_counter`` is
CLOCK_MONOTONIC, one clock for every process of the machine, so a receiver in the other process
subtracts it from the time its read returned: send → that recipient, client-side parsing and
scheduling included. The sender's own copy of an event counts as a delivered frame, not as a
latency sample (the issue: send → every recipient, the sender is not one).
"""

from __future__ import annotations

import array
import asyncio
import bisect
import contextlib
import itertools
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from bench.chat_setup import Spec
from bench.chat_wire import OP_CLOSE, OP_PING, OP_TEXT, Phase, ServerFrames, Tally

__all__ = ["ClientProcs"]

CONNECT_CONCURRENCY = 100  # handshakes in flight per process (uvicorn's backlog is 2048)
CONNECT_TIMEOUT_S = 30.0
HEARTBEAT_S = 30.0  # a ping per connection per this: the presence heartbeat (DESIGN.md §5.2)
PROGRESS_EVERY = 100  # connections between progress reports to the benchmark process
ACK_TIMEOUT_S = 10.0  # a blast sender gives up waiting for its ``sent`` after this
_PING = b'{"type":"ping"}'


class _Client(asyncio.Protocol):
    def __init__(self, user_id: str, uri: str, tally: Tally) -> None:
        self.user_id = user_id
        self._ws = ClientProtocol(parse_uri(uri), max_size=None)  # handshake and sending
        self._frames: ServerFrames | None = None  # reading, once the handshake is done
        self._tally = tally
        self.close_code = 1006
        self._transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending: dict[str, asyncio.Future[None]] = {}
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._ws.send_request(self._ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()  # once per read: when these frames reached the client
        ws = self._ws
        if self._frames is not None:
            for opcode, payload in self._frames.feed(data):
                if opcode == OP_TEXT:
                    self._tally.frame(self, payload, now)
                elif opcode == OP_PING:
                    ws.send_pong(payload)
                elif opcode == OP_CLOSE:
                    self.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
                    ws.send_close(self.close_code if self.close_code != 1005 else 1000)
                    self._flush()
                    self.close()
                    return
            self._flush()
            return
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Response):
                if ws.handshake_exc is not None:
                    self._fail(ws.handshake_exc)
                else:
                    self.open = True
                    ws.send_text(_PING)  # the first frame: no events held back for a resume
            elif event.opcode is Opcode.TEXT:
                self._tally.frame(self, event.data, now)
        if self.open and self._frames is None and not ws.reader.buffer:
            self._frames = ServerFrames()  # nothing half-read by the library: take over
        self._flush()

    def _flush(self) -> None:
        assert self._transport is not None
        for chunk in self._ws.data_to_send():
            if chunk:
                self._transport.write(chunk)
            else:  # the protocol's end of stream
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self._tally.closes[self._ws.close_code or self.close_code] += 1
        self.open = False
        self._fail(exc or ConnectionError("connection lost"))
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))

    def _fail(self, exc: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)

    def ponged(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)  # attached: the hub answers frames after attach

    def acked(self, client_msg_id: str | None) -> None:
        fut = self.pending.pop(client_msg_id or "", None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def send(self, text: bytes) -> None:
        if self.open:
            self._ws.send_text(text)
            self._flush()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _send_frame(room: str, client_msg_id: str, phase: int) -> bytes:
    return (f'{{"type":"send","channel_id":"{room}","client_msg_id":"{client_msg_id}",'
            f'"text":"{phase} {time.perf_counter_ns()}"}}').encode()  # fmt: skip


class _Fleet:
    """One process's clients and what the benchmark process asks of them."""

    def __init__(self, spec: Spec, pipe: Pipe) -> None:
        self.spec, self._pipe = spec, pipe
        self.tally = Tally()
        self.clients: list[_Client] = []
        weights = [len(r.local) / r.size for r in spec.rooms]
        self._share = sum(weights) / spec.rooms_total  # of the run's rate, sent from here
        self._cum = list(itertools.accumulate(weights))
        self._heartbeat: asyncio.Task[None] | None = None

    async def connect(self, _: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        failures: Counter[str] = Counter()
        done = 0

        async def one(user_id: str, uri: str) -> None:
            nonlocal done
            parts = parse_uri(uri)
            async with gate:
                client = _Client(user_id, uri, self.tally)
                self.clients.append(client)
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT_S):
                        await loop.create_connection(lambda: client, parts.host, parts.port)
                        await client.ready
                except Exception as exc:  # counted and reported: the run says how many failed
                    failures[type(exc).__name__ + ": " + str(exc)[:80]] += 1
                    client.close()
            done += 1
            if done % PROGRESS_EVERY == 0:
                self._pipe.send(("progress", done))

        began = time.perf_counter()
        await asyncio.gather(*(one(u, uri) for u, uri in self.spec.clients))
        self._pipe.send(("progress", done))
        self._heartbeat = asyncio.create_task(self._beat())
        return {"open": sum(c.open for c in self.clients), "failures": dict(failures),
                "seconds": time.perf_counter() - began}  # fmt: skip

    async def _beat(self) -> None:
        """A ping per connection every ``HEARTBEAT_S``, spread over the period."""
        while True:
            pause = HEARTBEAT_S / max(len(self.clients), 1) * PROGRESS_EVERY
            for i, client in enumerate(self.clients):
                client.send(_PING)
                if i % PROGRESS_EVERY == PROGRESS_EVERY - 1:
                    await asyncio.sleep(pause)
            await asyncio.sleep(pause)

    async def paced(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Send this process's share of ``rate`` msg/s for ``duration_s`` from ``t0_ns`` on:
        each message into a channel drawn uniformly (this process draws those with a local
        member, weighted by its share of the members), from a random local member."""
        phase, t0 = int(arg["phase"]), int(arg["t0_ns"])
        rate = float(arg["rate"]) * self._share
        total = int(rate * float(arg["duration_s"]))
        period_ns = 1e9 / rate if rate else 0.0
        rng = random.Random(self.spec.seed * 1_000_003 + phase)
        rooms, cum, top = self.spec.rooms, self._cum, self._cum[-1] if self._cum else 0.0
        lags = array.array("q")
        sent = expected = skipped = 0
        await asyncio.sleep(max(t0 - time.perf_counter_ns(), 0) / 1e9)
        while sent < total:
            due = min(total, int((time.perf_counter_ns() - t0) / period_ns) + 1)
            while sent < due:
                room = rooms[bisect.bisect_left(cum, rng.random() * top)]
                client = self.clients[rng.choice(room.local)]
                lags.append(time.perf_counter_ns() - int(t0 + sent * period_ns))
                if client.open:  # a closed client's message is not sent, and not expected
                    client.send(_send_frame(room.id, f"{phase}-{self.spec.index}-{sent}", phase))
                    expected += room.size - 1
                else:
                    skipped += 1
                sent += 1
            await asyncio.sleep(max(t0 + sent * period_ns - time.perf_counter_ns(), 0) / 1e9)
        return {"sent": sent - skipped, "skipped": skipped, "expected": expected,
                "ended_ns": time.perf_counter_ns(), "lag_ns": lags.tobytes()}  # fmt: skip

    async def blast(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Send into the blast room from each blast sender, ``window`` messages in flight each,
        until ``duration_s`` after ``t0_ns``."""
        phase, t0 = int(arg["phase"]), int(arg["t0_ns"])
        end = t0 + int(float(arg["duration_s"]) * 1e9)
        room = next((r for r in self.spec.rooms if r.id == self.spec.blast_room), None)
        counts = {"sent": 0, "expected": 0, "unacked": 0}
        await asyncio.sleep(max(t0 - time.perf_counter_ns(), 0) / 1e9)

        async def sender(client: _Client, lane: str) -> None:
            n = 0
            while room is not None and client.open and time.perf_counter_ns() < end:
                cid = f"{phase}-{self.spec.index}-{lane}-{n}"
                fut = client.pending[cid] = asyncio.get_running_loop().create_future()
                client.send(_send_frame(room.id, cid, phase))
                counts["sent"] += 1
                counts["expected"] += room.size - 1
                n += 1
                try:
                    await asyncio.wait_for(fut, ACK_TIMEOUT_S)
                except (TimeoutError, ConnectionError):
                    counts["unacked"] += 1
                    client.pending.pop(cid, None)

        window = int(arg["window"])
        await asyncio.gather(*(
            sender(self.clients[pos], f"{pos}.{w}")
            for pos in self.spec.blast_senders for w in range(window)
        ))  # fmt: skip
        return {**counts, "ended_ns": time.perf_counter_ns()}

    async def count(self, phase: int) -> int:
        """Latency samples (frames at recipients other than the sender) of ``phase`` so far."""
        return len(self.tally.phase(phase).samples)

    async def collect(self, phase: int) -> dict[str, Any]:
        got = self.tally.phases.pop(phase, Phase())
        return {"samples": got.samples.tobytes(), "frames": got.frames, "last_ns": got.last_ns,
                "refused": got.refused}  # fmt: skip

    async def stats(self, _: Any) -> dict[str, Any]:
        return {"open": sum(c.open for c in self.clients), "errors": dict(self.tally.errors),
                "closes": dict(self.tally.closes)}  # fmt: skip

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for client in self.clients:
            client.close()
        await asyncio.sleep(0.1)


async def _serve(spec: Spec, pipe: Pipe) -> None:
    fleet = _Fleet(spec, pipe)
    handlers: dict[str, Callable[[Any], Any]] = {
        "connect": fleet.connect, "paced": fleet.paced, "blast": fleet.blast,
        "count": fleet.count, "collect": fleet.collect, "stats": fleet.stats,
    }  # fmt: skip
    while True:
        # A thread waits on the pipe: the loop's reader would make it non-blocking, and large
        # answers (latency samples) would then fail to send.
        command, arg = await asyncio.to_thread(pipe.recv)
        if command == "stop":
            break
        try:
            pipe.send(("ok", await handlers[command](arg)))
        except Exception as exc:  # reported to the benchmark process, which raises it
            pipe.send(("failed", f"{type(exc).__name__}: {exc}"))
    await fleet.close()


def _main(spec: Spec, pipe: Pipe) -> None:
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve(spec, pipe))


class ClientProcs:
    """The client processes, seen from the benchmark process: ``ask`` one, ``ask_all``."""

    def __init__(self, specs: list[Spec]) -> None:
        context = multiprocessing.get_context("spawn")  # no copy of the parent's event loop
        self._pipes: list[Pipe] = []
        self._procs = []
        for spec in specs:
            ours, theirs = context.Pipe()
            proc = context.Process(target=_main, args=(spec, theirs), daemon=True,
                                   name=f"bench-chat-clients-{spec.index}")  # fmt: skip
            proc.start()
            theirs.close()
            self._pipes.append(ours)
            self._procs.append(proc)

    @property
    def count(self) -> int:
        return len(self._procs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    async def ask(
        self, i: int, command: str, arg: Any = None, progress: Callable[[int], None] | None = None
    ) -> Any:
        pipe = self._pipes[i]
        pipe.send((command, arg))
        while True:
            kind, value = await asyncio.to_thread(pipe.recv)
            if kind == "progress":
                if progress is not None:
                    progress(value)
            elif kind == "failed":
                raise RuntimeError(f"client process {i}: {command} failed: {value}")
            else:
                return value

    async def ask_all(self, command: str, arg: Any = None) -> list[Any]:
        return list(await asyncio.gather(*(self.ask(i, command, arg) for i in range(self.count))))

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop", None))
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
