"""One WebSocket after its handshake: the protocol on its connection, from the first frame to the close.

aiohttp does the opening handshake (``ws_edge.sockets``); from then on the socket is this object, the
asyncio protocol of its connection. It holds no task, no request and no parser beyond ``FrameReader``: an
open socket costs a transport and a ``Peer`` (a few KB), where aiohttp's request machinery kept about
18 KB per socket alive for the socket's whole life.

Out: the broadcast path hands frames to ``offer`` and never waits for a socket (one slow client would
stall its whole session). A socket that keeps up gets each frame written at once. One that does not (its
transport paused writing: the kernel did not take the last frame whole) holds at most one frame per type,
the latest, so its memory stays bounded and it gets the newest state when it catches up; if it stays
blocked longer than the configured limit it is dropped, as it is not reading.

In: the only thing a client sends is a ping (text, or a protocol ping). Every frame, of any kind, counts
against the flood limit; messages over the size limit, and anything RFC 6455 forbids, close the socket
with the code the RFC names, after which the reader still looks for the client's close frame so the close
is clean. A peer that sends nothing for a heartbeat interval gets a protocol ping, and is dropped when it
has still sent nothing half an interval later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, cast

from ctxmeter.limits import INBOUND_FRAME_BURST, INBOUND_FRAMES_PER_S, MAX_INBOUND_FRAME_BYTES, WS_CLOSE_TIMEOUT_S
from ws_edge.metrics import EdgeMetrics
from ws_edge.security import TokenBucket
from ws_edge.state import Frame
from ws_edge.wire import (
    CLOSE_INVALID_DATA,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    ProtocolViolation,
    close_code,
    close_frame,
    server_frame,
    text_frame,
)

log = logging.getLogger(__name__)

PING_TEXT: Final = "ping"
PONG_KIND: Final = "pong"
PONG_FRAME: Final = b'{"type":"pong"}'

# Frame kinds that carry a KV revision; anything else (pong) is never considered stale.
REVISION_NONE: Final = -1

# Frames read after the edge's close frame while looking for the client's: a client that answers a close
# sends its own at once, among the first few; one that floods on gets no more parsing than this.
FRAMES_AFTER_CLOSE: Final = 64

# Pause writing as soon as the kernel leaves any of a frame unsent, resume once all of it has left: a
# socket is either keeping up (frames written at once) or not (the latest per type held).
_WRITE_HIGH_WATER: Final = 0


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
        "_close_received",
        "_close_sent",
        "_flood",
        "_frames_after_close",
        "_gone",
        "_holding",
        "_last_heard",
        "_paused",
        "_pending",
        "_ping_sent_at",
        "_reader",
        "_revisions",
        "_rules",
        "_slow",
        "_timer",
        "_token_expiry",
        "aborted_slow",
        "closed",
        "session_id",
        "transport",
    )

    def __init__(self, session_id: str, rules: PeerRules) -> None:
        self.session_id = session_id
        self._rules = rules
        self.transport: asyncio.Transport | None = None
        # Insertion-ordered: frames go out in the order their types first became pending.
        self._pending: dict[str, bytes] = {}
        self._revisions: dict[str, int] = {}
        # Until its first state is out, events for the socket are held (newest per type), so that state
        # always comes first: context_update, then token_count, whatever raced with the read.
        self._holding = True
        self._paused = False
        # No more event frames: the socket is closing or gone.
        self.closed = False
        self.aborted_slow = False
        self._close_sent = False
        self._close_received = False
        self._frames_after_close = 0
        self._reader = FrameReader(MAX_INBOUND_FRAME_BYTES)
        self._flood: TokenBucket | None = None
        self._last_heard = 0.0
        self._ping_sent_at: float | None = None
        # The heartbeat's next check, or, once a close frame is sent, the deadline for the peer's.
        self._timer: asyncio.TimerHandle | None = None
        self._slow: asyncio.TimerHandle | None = None
        self._token_expiry: asyncio.TimerHandle | None = None
        # Set when the connection is gone (made on demand: only a shutdown waits for it).
        self._gone: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        now = self._now()
        self._last_heard = now
        self._flood = TokenBucket(INBOUND_FRAMES_PER_S, INBOUND_FRAME_BURST, now)
        self._arm(self._rules.heartbeat_s, self._beat)

    def data_received(self, data: bytes) -> None:
        now = self._now()
        self._last_heard = now
        reader = self._reader
        reader.feed(data)
        while self.transport is not None:
            if self._close_sent:
                if self._frames_after_close >= FRAMES_AFTER_CLOSE:
                    # No close frame among them: stop reading (a flood costs no more parsing); the
                    # close deadline drops the connection.
                    reader.discard()
                    self.transport.pause_reading()
                    return
                self._frames_after_close += 1
            try:
                frame = reader.next_frame()
            except ProtocolViolation as violation:
                if not self._close_sent:
                    self._refuse(violation)
                continue  # still looking for the client's close frame
            if frame is None:
                return
            opcode, payload = frame
            if self._close_sent:
                if opcode == OP_CLOSE:
                    self._close_received = True
                    self.transport.close()
                continue  # after our close frame, only theirs matters
            # A close frame is honoured even over the flood limit: it ends the flood.
            assert self._flood is not None
            if not self._flood.take(now) and opcode != OP_CLOSE:
                self._rules.metrics.policy_closed.labels("flood").inc()
                self.close(CLOSE_POLICY_VIOLATION, "too many frames")
                continue
            self._on_frame(opcode, payload)

    def eof_received(self) -> bool | None:
        return False  # the client half-closed: close our side too

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
            transport.write(text_frame(self._pending.pop(kind)))
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

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                self._refuse(ProtocolViolation(CLOSE_INVALID_DATA, "a text frame that is not UTF-8"))
                return
            if is_ping(text):
                self.pong()
        elif opcode == OP_PING:
            self._write_control(server_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self._close_received = True
            code = close_code(payload)
            self.close(CLOSE_NORMAL if code == CLOSE_NO_STATUS else code, "")
        # Binary frames, pongs and fragments carry nothing this protocol needs; they only count as frames.

    def _refuse(self, violation: ProtocolViolation) -> None:
        reason = "too_big" if violation.code == CLOSE_MESSAGE_TOO_BIG else "protocol_error"
        self._rules.metrics.policy_closed.labels(reason).inc()
        self.close(violation.code, violation.reason)

    # -- frames out -------------------------------------------------------------------------

    def send(self, kind: str, revision: int, frame: bytes) -> None:
        """``offer`` for a frame of this socket's alone (its first state, a pong)."""
        if self.offer(kind, revision, frame):
            self._rules.metrics.frames_sent.inc()

    def offer(
        self, kind: str, revision: int, frame: bytes, wire: bytes | None = None, *, replace: bool = False
    ) -> bool:
        """Send ``frame`` now if the socket keeps up, else hold it as the socket's latest of ``kind``.

        ``wire`` is ``frame`` already framed for the wire (``text_frame``), when the caller sends the
        same frame to many sockets. A frame older than one the socket already has is dropped, unless
        ``replace`` says the state store vouches for it over what the socket holds. True when the frame
        was written now: the caller counts those (in bulk for a broadcast); the rest are counted when
        they are written.
        """
        if self.closed:
            return False
        if revision != REVISION_NONE:
            if not replace and revision < self._revisions.get(kind, REVISION_NONE):
                self._rules.metrics.stale_dropped.inc()
                return False
            self._revisions[kind] = revision
        if self._holding:
            self._pending[kind] = frame
            return False
        transport = self.transport
        if not self._pending and not self._paused and transport is not None:
            transport.write(wire if wire is not None else text_frame(frame))
            return True
        if kind in self._pending:
            self._rules.metrics.frames_coalesced.inc()
        self._pending[kind] = frame  # sent when the transport drains (``resume_writing``)
        return False

    def open_with(self, first: Sequence[Frame]) -> None:
        """Send the socket's first state, then stop holding: per type the newer of that state and
        what arrived while it was read, in the state's order (context first)."""
        held, self._pending = self._pending, {}
        self._holding = False
        for frame in first:
            newer_held = frame.kind in held and self._revisions[frame.kind] > frame.revision
            if newer_held:
                self.send(frame.kind, self._revisions[frame.kind], held.pop(frame.kind))
            else:
                held.pop(frame.kind, None)
                self.send(frame.kind, frame.revision, frame.data)
        for kind, data in held.items():
            self.send(kind, self._revisions.get(kind, REVISION_NONE), data)

    def pong(self) -> None:
        self.send(PONG_KIND, REVISION_NONE, PONG_FRAME)

    def _write_control(self, frame: bytes) -> None:
        # Control frames are tiny and few (a flood is closed): written even while writing is paused.
        if self.transport is not None and not self._close_sent:
            self.transport.write(frame)

    def _abort_slow(self) -> None:
        self._slow = None
        self.aborted_slow = True
        self._rules.metrics.slow_closed.inc()
        log.info("closed a socket whose writes stayed blocked", extra={"session_id": self.session_id})
        # A close frame could not get through either: drop the connection.
        self.abort()

    # -- the end ----------------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Send a close frame and stop relaying; the connection closes when the client's close frame
        comes (at once if it came first) and all is sent, or is dropped ``WS_CLOSE_TIMEOUT_S`` later."""
        transport = self.transport
        if self._close_sent or transport is None:
            return
        self._close_sent = True
        self.closed = True
        self._pending.clear()
        transport.write(close_frame(code, reason))
        # The deadline holds either way: a transport closing with unsent bytes waits for a reader.
        self._arm(WS_CLOSE_TIMEOUT_S, self.abort)
        if self._close_received:
            transport.close()

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
        if self._close_sent:
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
        self._write_control(server_frame(OP_PING, b""))
        self._ping_sent_at = now
        self._arm(heartbeat / 2, self._beat)

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()
