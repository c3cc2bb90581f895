"""What the chat benchmark's clients read: server frames off the socket, and the tally of them.

:class:`ServerFrames` parses the server's side of a WebSocket (frames arrive unmasked and, from
``fanout serve``, unfragmented) with a few slices per frame, where websockets' sans-I/O parser
costs a generator step and a ``Frame`` object each: the clients share the 2 cores with the
servers they measure, so every microsecond they spend per frame is taken from the server.
"""

from __future__ import annotations

import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

__all__ = ["OP_CLOSE", "OP_PING", "OP_TEXT", "Phase", "Receiver", "ServerFrames", "Tally"]

OP_TEXT, OP_CLOSE, OP_PING = 0x1, 0x8, 0x9


class Receiver(Protocol):
    user_id: str

    def acked(self, client_msg_id: str | None) -> None: ...

    def ponged(self) -> None: ...


class ServerFrames:
    """Unmasked frames in, ``(opcode, payload)`` out, across reads split anywhere."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._rest + data if self._rest else data
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            size, head = buf[pos + 1] & 0x7F, 2
            if size >= 126:
                head = 4 if size == 126 else 10
                if end - pos < head:
                    break
                size = int.from_bytes(buf[pos + 2 : pos + head], "big")
            if end - pos < head + size:
                break
            out.append((buf[pos] & 0x0F, buf[pos + head : pos + head + size]))
            pos += head + size
        self._rest = buf[pos:]
        return out


class _Message(msgspec.Struct):
    sender_id: str
    text: str


class _Frame(msgspec.Struct):
    type: str
    message: _Message | str | None = None  # an error frame's message is its text
    client_msg_id: str | None = None
    code: str | None = None  # of an error frame


_decode = msgspec.json.Decoder(_Frame).decode


@dataclass
class Phase:
    samples: array.array[int] = field(default_factory=lambda: array.array("q"))
    frames: int = 0  # event frames received, the senders' own copies included
    last_ns: int = 0
    refused: int = 0  # sends answered with an error frame


class Tally:
    """What one process's clients received, per phase (frames of a phase may arrive late)."""

    def __init__(self) -> None:
        self.phases: dict[int, Phase] = {}
        self.errors: Counter[str] = Counter()  # error frames by code
        self.closes: Counter[int] = Counter()

    def phase(self, phase: int) -> Phase:
        if phase not in self.phases:
            self.phases[phase] = Phase()
        return self.phases[phase]

    def frame(self, client: Receiver, data: bytes, now: int) -> None:
        try:
            frame = _decode(data)
        except msgspec.DecodeError:  # counted: an exception here would close the connection
            self.errors["undecodable"] += 1
            return
        kind = frame.type
        if kind == "event":
            message = frame.message
            if not isinstance(message, _Message):  # a join or leave: not ours
                return
            tag, _, sent = message.text.partition(" ")
            got = self.phase(int(tag))
            got.frames += 1
            got.last_ns = now
            if message.sender_id != client.user_id:
                got.samples.append(now - int(sent))
        elif kind == "sent":
            client.acked(frame.client_msg_id)
        elif kind == "pong":
            client.ponged()
        elif kind == "error":
            self.errors[frame.code or "?"] += 1
            if frame.client_msg_id:  # "<phase>-…": a send of that phase was refused
                self.phase(int(frame.client_msg_id.split("-", 1)[0])).refused += 1
            client.acked(frame.client_msg_id)
