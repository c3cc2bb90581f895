"""The RFC 6455 codec (fanout.core.websocket): frames, handshake key, and the reader against
client byte streams split anywhere."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.core import websocket as ws


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None,
                 rsv: int = 0, masked: bool = True) -> bytes:  # fmt: skip
    """A frame as a client sends it (masked), built independently of the module under test."""
    mask = os.urandom(4) if mask is None else mask
    size = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, bit | size))
    elif size < 65_536:
        head = bytes((first, bit | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, bit | 127)) + size.to_bytes(8, "big")
    if not masked:
        return head + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def test_the_accept_key_is_the_rfc_example() -> None:
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("key", ["", "not base64!", "c2hvcnQ=", "dGhlIHNhbXBsZSBub25jZQ"])
def test_keys_that_are_not_16_bytes_of_base64_are_refused(key: str) -> None:
    assert ws.accept_key(key) is None


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536])
def test_server_frames_carry_the_length_in_the_shortest_form(size: int) -> None:
    data = ws.frame(ws.OP_TEXT, b"x" * size)
    assert data[0] == 0x81
    head = 2 if size < 126 else 4 if size < 65_536 else 10
    assert len(data) == head + size
    assert data[1] & 0x80 == 0  # never masked


def test_close_frames_cut_the_reason_at_a_character_boundary() -> None:
    data = ws.close_frame(4408, "é" * 100)
    code, reason = ws.parse_close(data[2:])
    assert code == 4408 and len(reason.encode()) <= 123 and set(reason) == {"é"}


@pytest.mark.parametrize(
    ("payload", "code"),
    [(b"\x03", 1002), ((999).to_bytes(2, "big"), 1002), ((1005).to_bytes(2, "big"), 1002),
     ((5000).to_bytes(2, "big"), 1002), ((1000).to_bytes(2, "big") + b"\xff", 1007)],
)  # fmt: skip
def test_bad_close_payloads_are_protocol_errors(payload: bytes, code: int) -> None:
    with pytest.raises(ws.ProtocolError) as caught:
        ws.parse_close(payload)
    assert caught.value.code == code


def test_an_empty_close_means_no_status() -> None:
    assert ws.parse_close(b"") == (1005, "")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(ws.OP_TEXT, b"hi", masked=False), 1002),
        (client_frame(ws.OP_TEXT, b"hi", rsv=0x40), 1002),
        (client_frame(0x3, b"hi"), 1002),
        (client_frame(ws.OP_CONT, b"hi"), 1002),
        (client_frame(ws.OP_TEXT, b"a", fin=False) + client_frame(ws.OP_TEXT, b"b"), 1002),
        (client_frame(ws.OP_PING, b"x" * 126), 1002),
        (client_frame(ws.OP_PING, b"x", fin=False), 1002),
    ],
)
def test_forbidden_frames_are_protocol_errors(data: bytes, code: int) -> None:
    with pytest.raises(ws.ProtocolError) as caught:
        ws.FrameReader(1 << 20).feed(data)
    assert caught.value.code == code


def test_an_oversize_message_is_refused_from_its_header_alone() -> None:
    reader = ws.FrameReader(1000)
    header = client_frame(ws.OP_BINARY, b"x" * 70_000)[:14]  # the payload never arrives
    with pytest.raises(ws.ProtocolError) as caught:
        reader.feed(header)
    assert caught.value.code == 1009


def test_fragments_add_up_against_the_limit() -> None:
    reader = ws.FrameReader(1000)
    reader.feed(client_frame(ws.OP_TEXT, b"x" * 600, fin=False))
    with pytest.raises(ws.ProtocolError):
        reader.feed(client_frame(ws.OP_CONT, b"x" * 600))


messages = st.lists(
    st.tuples(
        st.sampled_from([ws.OP_TEXT, ws.OP_BINARY, ws.OP_PING, ws.OP_PONG, ws.OP_CLOSE]),
        st.binary(max_size=300),
        st.integers(min_value=1, max_value=4),  # fragments of a data message
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_the_reader_yields_each_message_once_however_the_bytes_are_split(
    sent: list[tuple[int, bytes, int]], data: st.DataObject
) -> None:
    stream = bytearray()
    expected: list[tuple[int, bytes]] = []
    for opcode, payload, parts in sent:
        if opcode in (ws.OP_PING, ws.OP_PONG, ws.OP_CLOSE):
            payload = payload[:125]
            stream += client_frame(opcode, payload)
            expected.append((opcode, payload))
            continue
        cuts = sorted(data.draw(st.lists(st.integers(0, len(payload)), min_size=parts - 1,
                                         max_size=parts - 1)))  # fmt: skip
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            stream += client_frame(opcode if i == 0 else ws.OP_CONT, piece,
                                   fin=i == len(pieces) - 1)  # fmt: skip
            if i == 0 and len(pieces) > 1 and data.draw(st.booleans()):
                stream += client_frame(ws.OP_PING, b"between")  # controls may interleave
                expected.append((ws.OP_PING, b"between"))
        expected.append((opcode, payload))
    splits = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = ws.FrameReader(1 << 20)
    got: list[tuple[int, bytes]] = []
    for a, b in zip([0, *splits], [*splits, len(stream)], strict=True):
        got += reader.feed(bytes(stream[a:b]))
    assert got == expected


@given(st.binary(max_size=2000), st.binary(min_size=4, max_size=4))
def test_unmasking_twice_gives_the_payload_back(payload: bytes, mask: bytes) -> None:
    masked = ws.unmask(payload, mask)
    assert masked == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert ws.unmask(masked, mask) == payload


@given(st.lists(st.tuples(st.sampled_from([ws.OP_TEXT, ws.OP_PING, ws.OP_CLOSE]),
                          st.binary(max_size=70_000)), max_size=6), st.data())  # fmt: skip
@settings(max_examples=100, deadline=None)
def test_the_benchmark_clients_read_server_frames_however_the_bytes_are_split(
    sent: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    from bench.chat_wire import ServerFrames

    stream = b"".join(ws.frame(opcode, payload) for opcode, payload in sent)
    splits = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader, got = ServerFrames(), []
    for a, b in zip([0, *splits], [*splits, len(stream)], strict=True):
        got += reader.feed(stream[a:b])
    assert got == sent
