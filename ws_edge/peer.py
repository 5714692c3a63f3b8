"""One socket's writer: the broadcast path hands it frames and never waits for the socket.

The seed's broadcast awaited each socket in turn, so one slow client stalled its whole room. Here
``offer`` only stores the frame; a writer task of the socket's own sends what is pending. A socket
that does not keep up holds at most one frame per type (the latest), so its memory stays bounded and
it gets the newest state when it catches up. A socket whose write stays blocked longer than the
configured limit is aborted: it is not reading, and waiting for it longer only wastes the buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from aiohttp import WSMsgType, web

from ws_edge.metrics import EdgeMetrics

log = logging.getLogger(__name__)

PONG_KIND: Final = "pong"
PONG_FRAME: Final = b'{"type":"pong"}'

# Frame kinds that carry a KV revision; anything else (pong) is never considered stale.
REVISION_NONE: Final = -1


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
        self.closed = False
        self.aborted_slow = False

    def offer(self, kind: str, revision: int, frame: bytes) -> None:
        """Queue ``frame`` as this socket's latest of ``kind``; drop it when the socket already has newer."""
        if self.closed:
            return
        if revision != REVISION_NONE:
            if revision < self._revisions.get(kind, REVISION_NONE):
                self._metrics.stale_dropped.inc()
                return
            self._revisions[kind] = revision
        if kind in self._pending:
            self._metrics.frames_coalesced.inc()
        self._pending[kind] = frame
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending())

    def pong(self) -> None:
        self.offer(PONG_KIND, REVISION_NONE, PONG_FRAME)

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
