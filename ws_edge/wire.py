"""RFC 6455 framing, the server's side: frames out (unmasked) and client frames in (masked, bounded).

The edge serves its sockets itself once aiohttp has done the opening handshake (``ws_edge.sockets``), so
that an open socket holds a transport and a ``Peer`` rather than aiohttp's whole request machinery. What
a client may send is small (pings), so the reader favours strictness over speed: every rule a server
must enforce is enforced, a frame's size is known from its header before any of it is buffered, and a
violation names the close code to answer with. After a violation the reader still knows where frames
end, so the client's own close frame can be found and the connection closed cleanly.
"""

from __future__ import annotations

import struct
from typing import Final

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
_DATA_OPCODES: Final = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY})
_CONTROL_OPCODES: Final = frozenset({OP_CLOSE, OP_PING, OP_PONG})

# RFC 6455 close codes the edge sends or checks.
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_NO_STATUS: Final = 1005
CLOSE_INVALID_DATA: Final = 1007
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TRY_AGAIN_LATER: Final = 1013
# Codes a peer may put in a close frame (RFC 6455 7.4.1, 7.4.2 and IANA's registry up to 1014).
_VALID_CLOSE_CODES: Final = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
_APPLICATION_CLOSE_CODES: Final = range(3000, 5000)

_FIN: Final = 0x80
_RSV: Final = 0x70
_OPCODE: Final = 0x0F
_MASKED: Final = 0x80
_LEN_7BIT_MAX: Final = 125
_LEN_16BIT: Final = 126
_LEN_64BIT: Final = 127
# A control frame's payload is at most 125 bytes, and a close frame's reason what is left after its code.
MAX_CONTROL_PAYLOAD: Final = _LEN_7BIT_MAX
MAX_CLOSE_REASON: Final = MAX_CONTROL_PAYLOAD - 2

# A frame the reader has made sense of: opcode and payload. ``FRAGMENT`` is a frame that continues a
# message not yet complete: nothing to act on, but a frame all the same (the flood limit counts frames).
Frame = tuple[int, bytes]
FRAGMENT: Final[Frame] = (OP_CONTINUATION, b"")


class ProtocolViolation(Exception):
    """The client broke RFC 6455 or a limit; ``code`` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def server_frame(opcode: int, payload: bytes) -> bytes:
    """``payload`` as one unfragmented, unmasked frame, ready for the transport (no compression)."""
    size = len(payload)
    first = _FIN | opcode
    if size <= _LEN_7BIT_MAX:
        header = bytes((first, size))
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", first, _LEN_16BIT, size)
    else:
        header = struct.pack("!BBQ", first, _LEN_64BIT, size)
    return header + payload


def text_frame(payload: bytes) -> bytes:
    return server_frame(OP_TEXT, payload)


def close_frame(code: int, reason: str) -> bytes:
    """A close frame; the reason is cut to fit a control frame (at a character boundary)."""
    encoded = reason.encode("utf-8")[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    return server_frame(OP_CLOSE, struct.pack("!H", code) + encoded)


def close_code(payload: bytes) -> int:
    """The code of a close frame's payload the reader has accepted (1005: it carried none)."""
    return struct.unpack_from("!H", payload)[0] if payload else CLOSE_NO_STATUS


def unmask(payload: bytes, mask: bytes) -> bytes:
    size = len(payload)
    if not size:
        return payload
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


class FrameReader:
    """Client frames from the bytes of one connection: ``feed`` bytes, then take ``next_frame`` until None.

    Messages are at most ``max_message`` bytes, fragments included: a larger frame is refused from its
    header, and its payload is skipped as it arrives, never buffered. So the reader holds at most one
    frame of that size plus the rest of one read.
    """

    __slots__ = ("_buffer", "_fragments", "_fragments_size", "_max_message", "_message_opcode", "_skip")

    def __init__(self, max_message: int) -> None:
        self._max_message = max_message
        self._buffer = bytearray()
        # Payload bytes still to discard, of a frame refused for its size.
        self._skip = 0
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        # The opcode of the fragmented message in progress (``OP_CONTINUATION``: none).
        self._message_opcode = OP_CONTINUATION

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buffer)

    def discard(self) -> None:
        """Forget what is buffered (the connection is closing and nothing more will be read)."""
        self._buffer.clear()

    def feed(self, data: bytes) -> None:
        if self._skip:
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """The next complete frame (a control frame, a whole message, or ``FRAGMENT``); None until more
        bytes come. Raises ``ProtocolViolation`` with the frame consumed, so reading can go on after it."""
        buffer = self._buffer
        if self._skip or len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        length = second & 0x7F
        offset = 2
        if length == _LEN_16BIT:
            if len(buffer) < 4:
                return None
            length = struct.unpack_from("!H", buffer, 2)[0]
            offset = 4
        elif length == _LEN_64BIT:
            if len(buffer) < 10:
                return None
            length = struct.unpack_from("!Q", buffer, 2)[0]
            offset = 10
            if length >> 63:
                # RFC 6455 5.2: the most significant bit must be 0. The frame's end cannot be trusted.
                self._buffer.clear()
                self._skip = 0
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "a 64-bit payload length with its top bit set")
        masked = bool(second & _MASKED)
        if masked:
            offset += 4
        if len(buffer) < offset:
            return None
        opcode = first & _OPCODE
        if length > self._max_message:
            # Refused from its header: the payload is skipped, whatever comes of it.
            self._consume(offset, length)
            self._drop_message()
            raise ProtocolViolation(
                CLOSE_MESSAGE_TOO_BIG, f"a frame of {length} bytes; the limit is {self._max_message}"
            )
        if len(buffer) < offset + length:
            return None
        mask = bytes(buffer[offset - 4 : offset]) if masked else b""
        payload = bytes(buffer[offset : offset + length])
        del buffer[: offset + length]
        self._check_header(first, opcode, length, masked)
        return self._take(first & _FIN == _FIN, opcode, unmask(payload, mask))

    def _consume(self, header: int, length: int) -> None:
        available = len(self._buffer) - header
        if available >= length:
            del self._buffer[: header + length]
        else:
            self._skip = length - available
            self._buffer.clear()

    def _drop_message(self) -> None:
        self._fragments = []
        self._fragments_size = 0
        self._message_opcode = OP_CONTINUATION

    def _check_header(self, first: int, opcode: int, length: int, masked: bool) -> None:
        if first & _RSV:
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension was agreed)")
        if not masked:
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "a client frame must be masked")
        if opcode in _CONTROL_OPCODES:
            if not first & _FIN:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "a control frame must not be fragmented")
            if length > MAX_CONTROL_PAYLOAD:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "a control frame's payload is at most 125 bytes")
        elif opcode not in _DATA_OPCODES:
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")

    def _take(self, fin: bool, opcode: int, payload: bytes) -> Frame:
        if opcode == OP_CLOSE:
            check_close_payload(payload)
            return opcode, payload
        if opcode in _CONTROL_OPCODES:
            return opcode, payload
        if opcode == OP_CONTINUATION:
            if self._message_opcode == OP_CONTINUATION:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "a continuation frame with no message to continue")
        elif self._message_opcode != OP_CONTINUATION:
            self._drop_message()
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "a new message before the last one was finished")
        elif fin:
            return opcode, payload
        else:
            self._message_opcode = opcode
        self._fragments_size += len(payload)
        if self._fragments_size > self._max_message:
            self._drop_message()
            raise ProtocolViolation(CLOSE_MESSAGE_TOO_BIG, f"a fragmented message over {self._max_message} bytes")
        self._fragments.append(payload)
        if not fin:
            return FRAGMENT
        message = self._message_opcode, b"".join(self._fragments)
        self._drop_message()
        return message


def check_close_payload(payload: bytes) -> None:
    if not payload:
        return
    if len(payload) == 1:
        raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "a close frame with a 1-byte payload")
    code = close_code(payload)
    if code not in _VALID_CLOSE_CODES and code not in _APPLICATION_CLOSE_CODES:
        raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, f"close code {code} is not one a peer may send")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation(CLOSE_INVALID_DATA, "a close reason that is not UTF-8") from None
