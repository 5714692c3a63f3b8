"""One socket's writer: the broadcast path hands it frames and never waits for the socket.

A broadcast never awaits a socket (one slow client would stall its whole session): ``offer`` only stores
the frame, or writes it at once when the socket keeps up; a writer task of the socket's own sends what is
pending. A socket
that does not keep up holds at most one frame per type (the latest), so its memory stays bounded and
it gets the newest state when it catches up. A socket whose write stays blocked longer than the
configured limit is aborted: it is not reading, and waiting for it longer only wastes the buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Sequence
from typing import Final

from aiohttp import WSMsgType, web

from ws_edge.metrics import EdgeMetrics
from ws_edge.state import Frame

log = logging.getLogger(__name__)

# RFC 6455 first byte of an unfragmented text frame (FIN + opcode 1); server frames are unmasked.
_TEXT_FIN: Final = 0x81
_LEN_16BIT: Final = 126
_LEN_64BIT: Final = 127

PONG_KIND: Final = "pong"
PONG_FRAME: Final = b'{"type":"pong"}'

# Frame kinds that carry a KV revision; anything else (pong) is never considered stale.
REVISION_NONE: Final = -1


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked WebSocket text frame, ready for the transport (no compression)."""
    size = len(payload)
    if size < _LEN_16BIT:
        header = bytes((_TEXT_FIN, size))
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", _TEXT_FIN, _LEN_16BIT, size)
    else:
        header = struct.pack("!BBQ", _TEXT_FIN, _LEN_64BIT, size)
    return header + payload


class Peer:
    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        session_id: str,
        metrics: EdgeMetrics,
        *,
        write_timeout_s: float,
    ) -> None:
        self.request = request
        self.ws = ws
        self.session_id = session_id
        self._metrics = metrics
        self._write_timeout = write_timeout_s
        # Insertion-ordered: frames go out in the order their types first became pending.
        self._pending: dict[str, bytes] = {}
        self._revisions: dict[str, int] = {}
        self._writer: asyncio.Task[None] | None = None
        # Until its first state is out, events for the socket are held (newest per type), so that state
        # always comes first: context_update, then token_count, whatever raced with the read.
        self._holding = True
        self.closed = False
        self.aborted_slow = False

    def send(self, kind: str, revision: int, frame: bytes) -> None:
        """``offer`` for a frame of this socket's alone (its first state, a pong)."""
        if self.offer(kind, revision, frame):
            self._metrics.frames_sent.inc()

    def offer(
        self, kind: str, revision: int, frame: bytes, wire: bytes | None = None, *, replace: bool = False
    ) -> bool:
        """Send ``frame`` now if the socket keeps up, else hold it as the socket's latest of ``kind``.

        ``wire`` is ``frame`` already framed for the wire (``text_frame``), when the caller sends the
        same frame to many sockets. A frame older than one the socket already has is dropped, unless
        ``replace`` says the state store vouches for it over what the socket holds. True when the frame
        was written now: the caller counts those (in bulk for a broadcast); the writer task counts the rest.
        """
        if self.closed:
            return False
        if revision != REVISION_NONE:
            if not replace and revision < self._revisions.get(kind, REVISION_NONE):
                self._metrics.stale_dropped.inc()
                return False
            self._revisions[kind] = revision
        if self._holding:
            self._pending[kind] = frame
            return False
        if not self._pending and self._writer is None and self._write_now(frame, wire):
            return True
        if kind in self._pending:
            self._metrics.frames_coalesced.inc()
        self._pending[kind] = frame
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending())
        return False

    def _write_now(self, frame: bytes, wire: bytes | None) -> bool:
        """The common case, a socket that keeps up: write the frame now, with no task and no timer.

        Only when the socket has nothing queued, its last writes have fully left (an empty transport
        buffer) and it is not closing. A task and a timeout per frame and socket were most of the edge's
        CPU under load, and their garbage set off long full collections. Frames written here are whole
        WebSocket frames, so they interleave safely with aiohttp's own (pings, close).
        """
        transport = self.request.transport
        if transport is None or transport.is_closing() or self.ws.closed or transport.get_write_buffer_size():
            return False
        transport.write(wire if wire is not None else text_frame(frame))
        return True

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

    async def _write_pending(self) -> None:
        try:
            while self._pending and not self.closed:
                kind = next(iter(self._pending))
                frame = self._pending.pop(kind)
                try:
                    async with asyncio.timeout(self._write_timeout):
                        await self.ws.send_frame(frame, WSMsgType.TEXT)
                except TimeoutError:
                    self._abort_slow()
                    return
                except (ConnectionError, RuntimeError):
                    # The socket closed under us (the client left, or shutdown closed it).
                    self.closed = True
                    return
                except Exception:
                    # Whatever else a write raises ends this socket only, never the broadcast.
                    log.exception("write to a socket failed", extra={"session_id": self.session_id})
                    self.closed = True
                    return
                self._metrics.frames_sent.inc()
        finally:
            self._writer = None

    def _abort_slow(self) -> None:
        self.closed = True
        self.aborted_slow = True
        self._pending.clear()
        self._metrics.slow_closed.inc()
        log.info("closed a socket whose writes stayed blocked", extra={"session_id": self.session_id})
        # A close frame could not get through either: drop the connection. The handler's receive loop
        # then ends, and its ``finally`` removes the peer from its session.
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        """Stop writing (the handler is done with the socket)."""
        self.closed = True
        self._pending.clear()
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
