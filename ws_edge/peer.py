"""One WebSocket after its handshake: the protocol on its connection, from the first frame to the close.

aiohttp does the opening handshake (``ws_edge.sockets``); then the connection's transport is handed to
this object (``transport.set_protocol``, for plain and TLS connections alike). Frames are parsed and
built by the ``websockets`` library's sans-I/O protocol (RFC 6455 as it implements it: masking, reserved
bits and opcodes, control frames, fragments, close codes, the size limit); this module only does I/O
and what this edge adds. An open socket costs a transport, a ``Peer`` and that protocol object (a few KB),
where aiohttp's request machinery kept about 18 KB per socket alive for the socket's whole life.

Out: the broadcast path hands frames to ``offer`` and never waits for a socket (one slow client would
stall its whole session). A socket that keeps up gets each frame written at once. One that does not (its
transport paused writing: the kernel did not take the last frame whole) holds at most one frame per type,
the latest, so its memory stays bounded and it gets the newest state when it catches up; if it stays
blocked longer than the configured limit it is dropped, as it is not reading.

In: the only thing a client sends is a ping (text, or a protocol ping). Every frame, of any kind, counts
against the flood limit. A frame RFC 6455 forbids, a message over the size limit, text that is not UTF-8
(checked as each fragment arrives) or a flood *fails* the connection (RFC 6455 7.1.7): the close frame
with its code, then the edge closes TCP at once and processes nothing more. A peer that sends nothing for
a heartbeat interval gets a protocol ping, and is dropped when it has still sent nothing half an interval
later.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, cast

from websockets.exceptions import PayloadTooBig
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import SEND_EOF, Protocol, Side, State

from ctxmeter.limits import (
    INBOUND_FRAME_BURST,
    INBOUND_FRAMES_PER_S,
    MAX_INBOUND_FRAME_BYTES,
    SOCKET_SEND_BUFFER_BYTES,
    WS_CLOSE_TIMEOUT_S,
    WS_LINGER_S,
)
from ws_edge.metrics import EdgeMetrics
from ws_edge.security import TokenBucket

log = logging.getLogger(__name__)
# The library's own log: it reports every connection's end at INFO, which at thousands of sockets is noise
# (the edge's metrics count closes); its warnings and errors still get through.
_LIBRARY_LOG: Final = logging.getLogger(f"{__name__}.websockets")
_LIBRARY_LOG.setLevel(logging.WARNING)

PING_TEXT: Final = "ping"
PONG_KIND: Final = "pong"
PONG_FRAME: Final = b'{"type":"pong"}'

# Pause writing as soon as the kernel leaves any of a frame unsent, resume once all of it has left: a
# socket is either keeping up (frames written at once) or not (the latest per type held). 1, not 0: a TLS
# transport pauses at a buffer size >= its high-water mark, so at 0 it would pause with nothing unsent.
_WRITE_HIGH_WATER: Final = 1


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one server text frame (unmasked, whole, no extension), ready for any socket."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def is_ping(text: str) -> bool:
    text = text.strip()
    if text == PING_TEXT:
        return True
    if not text.startswith("{"):
        return False
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        # Not JSON, or nested deeper than the parser recurses: a 4 KiB frame nests 2,000 deep. Not a ping.
        return False
    return isinstance(message, dict) and message.get("type") == PING_TEXT


@dataclass(frozen=True, slots=True)
class PeerRules:
    """What every socket of an edge shares (one object, not one copy per socket)."""

    metrics: EdgeMetrics
    write_timeout_s: float
    heartbeat_s: float
    # Called once per socket, when its connection is gone, for the edge's bookkeeping.
    on_closed: Callable[[Peer], None]


class Peer(asyncio.Protocol):
    __slots__ = (
        "_flood",
        "_gone",
        "_holding",
        "_last_heard",
        "_paused",
        "_pending",
        "_ping_sent_at",
        "_rules",
        "_slow",
        "_text",
        "_timer",
        "_token_expiry",
        "_ws",
        "closed",
        "session_id",
        "transport",
    )

    def __init__(self, session_id: str, rules: PeerRules) -> None:
        self.session_id = session_id
        self._rules = rules
        self.transport: asyncio.Transport | None = None
        self._ws = Protocol(Side.SERVER, state=State.OPEN, max_size=MAX_INBOUND_FRAME_BYTES, logger=_LIBRARY_LOG)
        # Insertion-ordered: frames (already framed) go out in the order their types first became pending.
        self._pending: dict[str, bytes] = {}
        # Until its first state is out, nothing is sent (``open_with``): that state always comes first.
        self._holding = True
        self._paused = False
        # No more event frames: the socket is closing or gone.
        self.closed = False
        # A fragmented text message in progress.
        self._text: _TextMessage | None = None
        self._flood: TokenBucket | None = None
        self._last_heard = 0.0
        self._ping_sent_at: float | None = None
        # The heartbeat's next check, or, once closing, the deadline for the connection's end.
        self._timer: asyncio.TimerHandle | None = None
        self._slow: asyncio.TimerHandle | None = None
        self._token_expiry: asyncio.TimerHandle | None = None
        # Set when the connection is gone (made on demand: only a shutdown waits for it).
        self._gone: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            # Left to itself, Linux grows a socket's send buffer up to 4 MiB: a client that never reads
            # would park megabytes in the kernel before the transport ever paused, and the slow-socket
            # timeout would never start. Bounded, the transport pauses within a few frames.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER_BYTES)
        now = self._now()
        self._last_heard = now
        self._flood = TokenBucket(INBOUND_FRAMES_PER_S, INBOUND_FRAME_BURST, now)
        self._arm(self._rules.heartbeat_s, self._beat)

    def data_received(self, data: bytes) -> None:
        now = self._now()
        self._last_heard = now
        ws = self._ws
        assert self._flood is not None
        if ws.state is not State.OPEN:
            # Closing: the library answers what it must (its close handshake); a flood is dropped.
            ws.receive_data(data)
            if any(not self._flood.take(now) for _ in ws.events_received()) and ws.close_rcvd is None:
                self._rules.metrics.policy_closed.labels("flood").inc()
                self.abort()
                return
            self._write(ws.data_to_send())
            return
        ws.receive_data(data)
        # A protocol that starts open yields frames only (requests and responses are the handshake's).
        frames = cast(list[Frame], ws.events_received())
        # What the library has to send, in order: a pong per protocol ping among ``frames``, then, when it
        # ended the connection (the client's close frame echoed, or a violation), a close frame and EOF.
        queued = ws.data_to_send()
        out: list[bytes] = []
        pongs = 0
        for frame in frames:
            if not self._flood.take(now) and ws.close_rcvd is None:
                # A close frame ends a flood (answered as any close); otherwise the flood fails the
                # connection, and nothing after it is answered.
                self._rules.metrics.policy_closed.labels("flood").inc()
                queued = self._fail(CloseCode.POLICY_VIOLATION, "too many frames")
                break
            if frame.opcode is Opcode.PING:
                out.append(queued[pongs])
                pongs += 1
            elif frame.opcode is Opcode.TEXT or frame.opcode is Opcode.CONT:
                try:
                    ping = self._is_ping_message(frame)
                except UnicodeDecodeError:
                    self._rules.metrics.policy_closed.labels("protocol_error").inc()
                    queued = self._fail(CloseCode.INVALID_DATA, "a text frame that is not UTF-8")
                    break
                if ping:
                    self.pong(out)
            # Binary messages, pongs and close frames carry nothing this protocol needs (the library echoes
            # a close): they only count as frames.
        else:
            queued = queued[pongs:]
            if ws.parser_exc is not None:
                # The library failed the connection on a frame (its close frame and EOF are ``queued``).
                reason = "too_big" if isinstance(ws.parser_exc, PayloadTooBig) else "protocol_error"
                self._rules.metrics.policy_closed.labels(reason).inc()
        self._write(out)
        self._write(queued)

    def eof_received(self) -> bool | None:
        # The client's end of TCP: the protocol answers as RFC 6455 says, and the transport closes.
        self._ws.receive_eof()
        self._flush()
        return False

    def pause_writing(self) -> None:
        # Whatever is unsent (a frame, pongs, a close) must leave within the write timeout.
        self._paused = True
        if self._slow is None:
            self._slow = asyncio.get_running_loop().call_later(self._rules.write_timeout_s, self._abort_slow)

    def resume_writing(self) -> None:
        self._paused = False
        if self._slow is not None:
            self._slow.cancel()
            self._slow = None
        transport = self.transport
        if transport is None or self._holding:
            return  # held frames wait for the first state (``open_with``)
        while self._pending and not self._paused and not self.closed:
            kind = next(iter(self._pending))
            transport.write(self._pending.pop(kind))
            self._rules.metrics.frames_sent.inc()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closed = True
        self._pending.clear()
        for handle in (self._timer, self._slow, self._token_expiry):
            if handle is not None:
                handle.cancel()
        self._timer = self._slow = self._token_expiry = None
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        self._rules.on_closed(self)

    # -- frames in --------------------------------------------------------------------------

    def _is_ping_message(self, frame: Frame) -> bool:
        """Whether ``frame`` completes a text message that is a ping. Text is checked as each fragment
        arrives, not when the message ends: a message already known to be invalid does not keep the
        connection busy (nor does the library: it bounds a message's size)."""
        if frame.opcode is Opcode.TEXT:
            self._text = _TextMessage()
        elif self._text is None:
            return False  # a fragment of a binary message
        text = self._text.add(frame.data, frame.fin)
        if text is None:
            return False
        self._text = None
        return is_ping(text)

    def _fail(self, code: int, reason: str) -> list[bytes]:
        """Fail the connection (RFC 6455 7.1.7): what to send instead of what the library still had queued
        for frames after the violation: the close frame and the end of TCP."""
        self._text = None
        self.closed = True
        self._pending.clear()
        if self._ws.state is State.OPEN:
            self._ws.fail(code, reason)
            return self._ws.data_to_send()
        # The library failed too, on a frame further on: the first violation names the code.
        return [Frame(Opcode.CLOSE, Close(code, reason).serialize()).serialize(mask=False), SEND_EOF]

    # -- frames out -------------------------------------------------------------------------

    def offer(self, kind: str, frame: bytes) -> bool:
        """Send ``frame`` (framed: ``text_frame``) now if the socket keeps up, else hold it as the socket's
        latest of ``kind``. True when it was written now: the caller counts those (in bulk for a
        broadcast); the rest are counted when they are written."""
        if self.closed:
            return False
        if self._holding:
            return False  # its first state will be newer (``Session.open``)
        transport = self.transport
        if not self._pending and not self._paused and transport is not None:
            transport.write(frame)
            return True
        if kind in self._pending:
            self._rules.metrics.frames_coalesced.inc()
        self._pending[kind] = frame  # sent when the transport drains (``resume_writing``)
        return False

    def open_with(self, first: Sequence[bytes]) -> None:
        """Send the socket's first state (frames in order), then relay events to it."""
        self._holding = False
        held, self._pending = self._pending, {}
        for frame in (*first, *held.values()):
            self._send(frame)

    def _send(self, frame: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(frame)
            self._rules.metrics.frames_sent.inc()

    def pong(self, out: list[bytes]) -> None:
        """Answer a text ping: into ``out`` (written in order with the protocol's own frames)."""
        if self._holding:
            self._pending[PONG_KIND] = _PONG_WIRE  # after the first state
        elif not self.closed:
            out.append(_PONG_WIRE)
            self._rules.metrics.frames_sent.inc()

    def _flush(self) -> None:
        self._write(self._ws.data_to_send())

    def _write(self, frames: list[bytes]) -> None:
        """Write frames in order; an empty one is the library's call to end TCP (``_end_tcp``)."""
        transport = self.transport
        for data in frames:
            if transport is None or transport.is_closing():
                return
            if data:
                transport.write(data)
            else:
                self._end_tcp(transport)

    def _end_tcp(self, transport: asyncio.Transport) -> None:
        """The server closes TCP first (RFC 6455 7.1.1) once close frames were exchanged, and at once when
        it fails the connection (7.1.7). A half-close when the transport has one: the client reads the
        close frame, then EOF; what it still sends is discarded unread until its own end, or for at most
        ``WS_LINGER_S``, so a reset never overtakes the close frame. (TLS has no half-close: closed.)"""
        self.closed = True
        self._pending.clear()
        if transport.can_write_eof():
            transport.write_eof()
            self._arm(WS_LINGER_S, self.abort)
        else:
            transport.close()
            self._arm(WS_LINGER_S, self.abort)

    def _abort_slow(self) -> None:
        self._slow = None
        self._rules.metrics.slow_closed.inc()
        log.info("closed a socket whose writes stayed blocked", extra={"session_id": self.session_id})
        # A close frame could not get through either: drop the connection.
        self.abort()

    # -- the end ----------------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake: a close frame, no more events; the connection ends when the
        client's close frame comes (at once if it came first), or is dropped ``WS_CLOSE_TIMEOUT_S`` later."""
        if self.transport is None or self._ws.state is not State.OPEN:
            return
        self.closed = True
        self._pending.clear()
        self._ws.send_close(code, reason)
        self._flush()
        self._arm(WS_CLOSE_TIMEOUT_S, self.abort)

    def close_at(self, expires_at: float, code: int, reason: str) -> None:
        """Close with ``code`` at ``expires_at`` (Unix seconds), as when a token runs out."""
        if self.closed:
            return
        delay = max(0.0, expires_at - time.time())
        self._token_expiry = asyncio.get_running_loop().call_later(delay, self.close, code, reason)

    def abort(self) -> None:
        """Drop the connection now, with no close frame."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def gone(self) -> bool:
        """The connection is closed (``connection_lost`` has run)."""
        return self.transport is None and self.closed

    async def wait_gone(self) -> None:
        if self.gone:
            return
        if self._gone is None:
            self._gone = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._gone)

    # -- heartbeat --------------------------------------------------------------------------

    def _beat(self) -> None:
        self._timer = None
        if self._ws.state is not State.OPEN:
            return
        now = self._now()
        heartbeat = self._rules.heartbeat_s
        if self._ping_sent_at is not None:
            if self._last_heard < self._ping_sent_at:
                log.debug("dropped a socket that stopped answering pings", extra={"session_id": self.session_id})
                self.abort()
                return
            self._ping_sent_at = None
        due = self._last_heard + heartbeat
        if due > now:
            self._arm(due - now, self._beat)
            return
        self._ws.send_ping(b"")
        self._flush()
        self._ping_sent_at = now
        self._arm(heartbeat / 2, self._beat)

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


_PONG_WIRE: Final = text_frame(PONG_FRAME)


class _TextMessage:
    """A text message as its frames arrive: UTF-8 checked fragment by fragment (the library bounds its size)."""

    __slots__ = ("_decoder", "_parts")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._parts: list[str] = []

    def add(self, data: bytes | bytearray | memoryview, fin: bool) -> str | None:
        """The whole text once ``fin``, else None; raises ``UnicodeDecodeError`` at the first bad byte."""
        self._parts.append(self._decoder.decode(bytes(data), final=fin))
        return "".join(self._parts) if fin else None
