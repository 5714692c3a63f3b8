"""The connection guard: every TCP connection the edge accepts is counted, and must send requests in time.

aiohttp bounds neither how long a request head may take to arrive (a client sending a byte every few
seconds held its connection for ever) nor the number of plain HTTP connections. The guard sees each
connection open, receive bytes and close (it wraps aiohttp's protocol, one per connection), and where each
request starts and ends (its middleware, the outermost but ``observe``). It

- counts open connections, WebSockets and plain HTTP alike: one beyond ``max_connections`` is answered
  503 ``unavailable`` at its first request and closed;
- drops a connection whose request head is not complete ``header_timeout`` seconds after it opened, or
  after the first byte following its last response (idle between requests, a kept-alive connection is
  left to aiohttp's ``keepalive_timeout``);
- drops a request whose body is not complete ``body_timeout`` seconds after its head, so no handler
  waits on ``request.read()`` for ever.

Dropping means ``abort()``: a client this slow would not read a 408 either, and a close that waits to
flush could wait for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import Final, cast

from aiohttp import StreamReader, web
from aiohttp.typedefs import Handler

from schemas.models import ErrorCode
from ws_edge.keys import METRICS
from ws_edge.params import wants_websocket
from ws_edge.responses import error_response

log = logging.getLogger(__name__)

# What the edge answers at its connection limit (HTTP and WebSocket upgrades alike).
AT_CAPACITY: Final = "this edge is at its connection limit; try another or retry"
# A request whose body stopped coming; its client is gone by the time a handler sees this.
BODY_TOO_SLOW: Final = "the request body did not arrive in time"

ProtocolFactory = Callable[[], asyncio.Protocol]


class GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard's deadlines around it: every event is
    passed on unchanged, after the guard has looked at it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self.transport: asyncio.Transport | None = None
        # Holds one of the guard's slots (False: beyond the limit, refused at its first request).
        self.admitted = False
        # A request is being handled: its head is in; its body has a deadline of its own.
        self.busy = False
        self.body_expired = False
        self._deadline: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._guard.opened(self)
        self._inner.connection_made(transport)
        self._expect_head()

    def data_received(self, data: bytes) -> None:
        # The first byte after a response starts the next head's clock (before aiohttp parses it: a
        # complete head then reaches the middleware, which stops the clock).
        if not self.busy and self._deadline is None:
            self._expect_head()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._guard.closed(self)
        self._inner.connection_lost(exc)

    # -- requests (called by the middleware) ------------------------------------------------

    def begin(self, body: StreamReader) -> None:
        """A request's head is in; its body, if still coming, has ``body_timeout`` to arrive."""
        self.busy = True
        self._cancel_deadline()
        if not body.is_eof():
            self._set_deadline(self._guard.body_timeout, lambda: self._body_deadline(body))

    def end(self) -> None:
        self.busy = False
        self._cancel_deadline()

    # -- deadlines --------------------------------------------------------------------------

    def _expect_head(self) -> None:
        self._set_deadline(self._guard.header_timeout, self._head_deadline)

    def _set_deadline(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_deadline()
        self._deadline = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_deadline(self) -> None:
        self._deadline = None
        if not self.busy:
            log.debug("dropped a connection whose request head was too slow")
            self._abort()

    def _body_deadline(self, body: StreamReader) -> None:
        self._deadline = None
        if self.busy and not body.is_eof():
            log.debug("dropped a request whose body was too slow")
            self.body_expired = True
            self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ConnectionGuard:
    """The edge's open connections (one slot each, ``max_connections`` in all) and their deadlines."""

    def __init__(
        self, max_connections: int, *, header_timeout: float, body_timeout: float, sockets: Collection[object]
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self._connections: dict[asyncio.BaseTransport, GuardedConnection] = {}
        # HTTP connections holding a slot: open and admitted.
        self._holding: set[GuardedConnection] = set()
        # The open WebSockets (``ws_edge.sockets.OpenSockets``): a socket's connection is no longer
        # aiohttp's (nor this guard's) once handed over, but it still holds a slot.
        self._sockets = sockets

    @property
    def open(self) -> int:
        """Connections holding a slot (those refused beyond the limit are not counted)."""
        return len(self._holding) + len(self._sockets)

    def wrap(self, factory: ProtocolFactory) -> ProtocolFactory:
        """``factory`` (aiohttp's ``web.Server``) with each protocol it makes guarded."""
        return lambda: GuardedConnection(self, factory())

    def opened(self, connection: GuardedConnection) -> None:
        assert connection.transport is not None
        self._connections[connection.transport] = connection
        if self.open < self.max_connections:
            connection.admitted = True
            self._holding.add(connection)

    def closed(self, connection: GuardedConnection) -> None:
        self._holding.discard(connection)
        if connection.transport is not None:
            self._connections.pop(connection.transport, None)

    def connection(self, request: web.BaseRequest) -> GuardedConnection | None:
        """The request's connection; None once it is gone."""
        transport = request.transport
        return None if transport is None else self._connections.get(transport)


GUARD: Final = web.AppKey("guard", ConnectionGuard)


@web.middleware
async def guard_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    connection = request.app[GUARD].connection(request)
    if connection is None:
        return await handler(request)
    if not connection.admitted:
        if wants_websocket(request):
            request.app[METRICS].rejected.labels(ErrorCode.UNAVAILABLE.value).inc()
        refused = error_response(503, ErrorCode.UNAVAILABLE, AT_CAPACITY)
        # Beyond the limit a connection gets one answer, not a place to send more requests.
        refused.force_close()
        return refused
    connection.begin(request.content)
    try:
        return await handler(request)
    except ConnectionError:
        if not connection.body_expired:
            raise
        # The guard dropped the connection under the handler's read: nobody will see this answer, but
        # the request metrics do, and aiohttp does not log a dropped slow client as a server error.
        return error_response(408, ErrorCode.INVALID_REQUEST, BODY_TOO_SLOW)
    finally:
        connection.end()
