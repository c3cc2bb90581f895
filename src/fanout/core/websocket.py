"""The WebSocket wire format (RFC 6455), sans I/O: the server side of the handshake, frames out,
and a reader that turns a client's byte stream into whole messages and control frames.

No extension is negotiated (per-message deflate costs ~100 KB of state per socket), so the
reserved bits must be clear. Client frames must be masked; server frames never are, which is
why one frame's bytes suit every connection it goes to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameReader",
    "ProtocolError",
    "accept_key",
    "close_frame",
    "frame",
    "parse_close",
    "unmask",
]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = (OP_TEXT, OP_BINARY)
_CONTROL = (OP_CLOSE, OP_PING, OP_PONG)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_CONTROL = 125  # payload bytes a control frame may carry
MAX_REASON = 123  # a close frame's reason, after its two-byte code


class ProtocolError(Exception):
    """The peer broke the protocol: close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def accept_key(key: str) -> str | None:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``; None if the key is not
    the base64 of 16 bytes."""
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, size))
    elif size < 65_536:
        head = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return head + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to what fits (at a character boundary)."""
    raw = reason.encode()[:MAX_REASON].decode("utf-8", "ignore").encode()
    return frame(OP_CLOSE, code.to_bytes(2, "big") + raw)


def _valid_close_code(code: int) -> bool:
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a close frame's payload (1005 when it has none)."""
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolError(1002, "a close frame's code takes two bytes")
    code = int.from_bytes(payload[:2], "big")
    if not _valid_close_code(code):
        raise ProtocolError(1002, f"close code {code} is not allowed")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolError(1007, "the close reason is not UTF-8") from None
    return code, reason


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the repeated four-byte ``mask`` (one big-integer XOR, in C)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class FrameReader:
    """Client bytes in, ``(opcode, payload)`` out: whole data messages (fragments joined, opcode
    of the first) and control frames, in arrival order. Raises :class:`ProtocolError` on
    anything RFC 6455 forbids and on a message over ``max_size`` bytes — told as soon as the
    header says so, before the payload is buffered. Text payloads are not decoded here."""

    __slots__ = ("_max", "_need", "_opcode", "_parts", "_pending", "_size")

    def __init__(self, max_size: int) -> None:
        self._max = max_size
        self._pending: bytearray | None = None  # an incomplete frame's bytes so far
        self._need = 0  # bytes _pending must reach before parsing can go on
        self._opcode: int | None = None  # of the fragmented message in progress
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._pending is not None:
            self._pending += data
            if len(self._pending) < self._need:
                return []
            data, self._pending = bytes(self._pending), None
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(data)
        while pos < end:
            after = self._frame(data, pos, end, out)
            if after < 0:
                self._pending, self._need = bytearray(data[pos:]), -after
                break
            pos = after
        return out

    def _frame(self, data: bytes, pos: int, end: int, out: list[tuple[int, bytes]]) -> int:
        """Parse the frame at ``pos`` into ``out`` and answer where it ends; or, negated, the
        bytes (counted from ``pos``) needed before it can be parsed."""
        if end - pos < 2:
            return -2
        b0, b1 = data[pos], data[pos + 1]
        if b0 & 0x70:
            raise ProtocolError(1002, "reserved bits are set (no extension was agreed)")
        if not b1 & 0x80:
            raise ProtocolError(1002, "client frames must be masked")
        size, head = b1 & 0x7F, 2
        if size >= 126:
            head = 4 if size == 126 else 10
            if end - pos < head:
                return -head
            size = int.from_bytes(data[pos + 2 : pos + head], "big")
        fin, opcode = bool(b0 & 0x80), b0 & 0x0F
        self._check(fin, opcode, size)
        total = head + 4 + size
        if end - pos < total:
            return -total
        start = pos + head + 4
        self._deliver(fin, opcode, unmask(data[start : pos + total], data[pos + head : start]), out)
        return pos + total

    def _check(self, fin: bool, opcode: int, size: int) -> None:
        if opcode in _CONTROL:
            if not fin or size > MAX_CONTROL:
                raise ProtocolError(1002, "control frames are final and carry ≤ 125 bytes")
        elif opcode in _DATA or opcode == OP_CONT:
            if (opcode == OP_CONT) != (self._opcode is not None):
                raise ProtocolError(1002, "fragments out of order")
            if self._size + size > self._max:
                raise ProtocolError(1009, f"messages are limited to {self._max} bytes")
        else:
            raise ProtocolError(1002, f"unknown opcode {opcode}")

    def _deliver(
        self, fin: bool, opcode: int, payload: bytes, out: list[tuple[int, bytes]]
    ) -> None:
        if opcode in _CONTROL or (fin and opcode != OP_CONT):
            out.append((opcode, payload))
            return
        if opcode != OP_CONT:
            self._opcode = opcode
        self._parts.append(payload)
        self._size += len(payload)
        if fin:
            assert self._opcode is not None
            out.append((self._opcode, b"".join(self._parts)))
            self._opcode, self._parts, self._size = None, [], 0
