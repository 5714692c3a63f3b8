"""RFC 6455 framing: what the reader accepts, what it refuses (and with which code), and that it reads on."""

from __future__ import annotations

import os
import struct

import pytest

from tests.edge.helpers import client_frame
from ws_edge.wire import (
    CLOSE_INVALID_DATA,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_PROTOCOL_ERROR,
    FRAGMENT,
    MAX_CONTROL_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    FrameReader,
    ProtocolViolation,
    close_code,
    close_frame,
    server_frame,
)

LIMIT = 4096


def read_all(data: bytes, reader: FrameReader | None = None) -> list[object]:
    """Every frame, or the violation's code in its place, as the reader goes on after each."""
    reader = reader or FrameReader(LIMIT)
    reader.feed(data)
    out: list[object] = []
    while True:
        try:
            got = reader.next_frame()
        except ProtocolViolation as violation:
            out.append(violation.code)
            continue
        if got is None:
            return out
        out.append(got)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 4096])
def test_masked_frames_of_every_length_form_are_read(size: int) -> None:
    payload = os.urandom(size)
    assert read_all(client_frame(OP_BINARY, payload)) == [(OP_BINARY, payload)]


def test_frames_split_at_every_byte_come_out_whole() -> None:
    data = client_frame(OP_TEXT, b"ping") + client_frame(OP_PING, b"hi") + client_frame(OP_TEXT, b"x" * 300)
    reader = FrameReader(LIMIT)
    seen: list[object] = []
    for byte in data:
        reader.feed(bytes([byte]))
        while (got := reader.next_frame()) is not None:
            seen.append(got)
    assert seen == [(OP_TEXT, b"ping"), (OP_PING, b"hi"), (OP_TEXT, b"x" * 300)]


def test_fragments_are_joined_and_control_frames_may_come_between() -> None:
    data = (
        client_frame(OP_TEXT, b"pi", fin=False)
        + client_frame(OP_PING, b"!")
        + client_frame(OP_CONTINUATION, b"n", fin=False)
        + client_frame(OP_CONTINUATION, b"g")
    )
    assert read_all(data) == [FRAGMENT, (OP_PING, b"!"), FRAGMENT, (OP_TEXT, b"ping")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(OP_TEXT, b"ping", masked=False), CLOSE_PROTOCOL_ERROR),
        (client_frame(OP_TEXT, b"ping", rsv=0x40), CLOSE_PROTOCOL_ERROR),  # a compressed frame: nothing was agreed
        (client_frame(0x3, b"?"), CLOSE_PROTOCOL_ERROR),  # reserved data opcode
        (client_frame(0xB, b"?"), CLOSE_PROTOCOL_ERROR),  # reserved control opcode
        (client_frame(OP_PING, b"x", fin=False), CLOSE_PROTOCOL_ERROR),
        (client_frame(OP_PING, b"x" * (MAX_CONTROL_PAYLOAD + 1)), CLOSE_PROTOCOL_ERROR),
        (client_frame(OP_CONTINUATION, b"x"), CLOSE_PROTOCOL_ERROR),  # nothing to continue
        (client_frame(OP_CLOSE, b"\x03"), CLOSE_PROTOCOL_ERROR),  # a 1-byte close payload
        (client_frame(OP_CLOSE, struct.pack("!H", 1005)), CLOSE_PROTOCOL_ERROR),  # a code only for reporting
        (client_frame(OP_CLOSE, struct.pack("!H", 999)), CLOSE_PROTOCOL_ERROR),
        (client_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff"), CLOSE_INVALID_DATA),
        (client_frame(OP_BINARY, b"x" * (LIMIT + 1)), CLOSE_MESSAGE_TOO_BIG),
    ],
)
def test_violations_name_their_close_code_and_reading_goes_on(data: bytes, code: int) -> None:
    # The frame after the bad one is still found: the client's close frame must be.
    assert read_all(data + client_frame(OP_CLOSE, struct.pack("!H", 1000))) == [
        code,
        (OP_CLOSE, struct.pack("!H", 1000)),
    ]


def test_a_64_bit_length_with_its_top_bit_set_is_a_protocol_error() -> None:
    header = struct.pack("!BBQ", 0x80 | OP_BINARY, 0x80 | 127, 1 << 63) + b"mask"
    assert read_all(header) == [CLOSE_PROTOCOL_ERROR]


def test_a_new_message_inside_a_fragmented_one_is_refused_and_both_are_dropped() -> None:
    data = client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b") + client_frame(OP_CONTINUATION, b"c")
    assert read_all(data) == [FRAGMENT, CLOSE_PROTOCOL_ERROR, CLOSE_PROTOCOL_ERROR]


def test_fragments_over_the_limit_are_too_big() -> None:
    half = b"x" * (LIMIT // 2 + 1)
    data = client_frame(OP_TEXT, half, fin=False) + client_frame(OP_CONTINUATION, half) + client_frame(OP_TEXT, b"ping")
    assert read_all(data) == [FRAGMENT, CLOSE_MESSAGE_TOO_BIG, (OP_TEXT, b"ping")]


def test_an_oversized_frame_is_skipped_from_its_header_never_buffered() -> None:
    reader = FrameReader(LIMIT)
    header = struct.pack("!BBQ", 0x80 | OP_BINARY, 0x80 | 127, 10**12) + b"\0\0\0\0"
    reader.feed(header)
    with pytest.raises(ProtocolViolation) as refused:
        reader.next_frame()
    assert refused.value.code == CLOSE_MESSAGE_TOO_BIG
    for _ in range(100):
        reader.feed(b"\0" * 65536)
        assert reader.next_frame() is None
    assert reader.buffered == 0  # skipped as it came


def test_server_frames_are_unmasked_in_every_length_form() -> None:
    for size in (0, 125, 126, 65535, 65536):
        data = server_frame(OP_TEXT, b"y" * size)
        assert data[0] == 0x81 and not data[1] & 0x80
        assert data.endswith(b"y" * size) and len(data) - size in (2, 4, 10)


def test_a_close_frame_fits_a_control_frame_and_cuts_at_a_character() -> None:
    data = close_frame(1008, "é" * 100)
    payload = data[2:]
    assert data[1] == len(payload) <= MAX_CONTROL_PAYLOAD
    assert close_code(payload) == 1008
    payload[2:].decode("utf-8")  # still UTF-8 after the cut
