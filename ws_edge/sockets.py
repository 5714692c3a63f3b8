"""``GET /api/ws/counters/<sid>``: admission, aiohttp's opening handshake, then the socket is a ``Peer``.

Every limit is checked before upgrading, so a refused client costs one HTTP response. Once aiohttp has
answered 101, the connection is handed over (``hand_over``): its transport gets the ``Peer`` as its
protocol (``transport.set_protocol``: plain TCP and TLS alike), aiohttp's handler for the connection lets
go of it without closing it, and aiohttp's request ends as soon as the socket has its first state. An
open socket so holds no request, no handler coroutine and no middleware frames: a transport and a ``Peer``.

aiohttp reads nothing after the upgrade request (reading is paused before the 101 goes out), so every
byte the client sends after the handshake reaches the peer. (A client must wait for the 101 before it
sends a frame, RFC 6455 4.1; bytes it sent with the request itself are not read.)

``OpenSockets`` is the one place that knows which sockets are open: the connection cap, the
``_connections`` gauge and the hub's membership follow from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from websockets.frames import CloseCode

from ctxmeter.limits import SHUTDOWN_CLOSE_S
from ctxmeter.settings import Settings
from schemas.models import ErrorCode
from ws_edge.keys import GATE, HUB, METRICS, NC, SETTINGS
from ws_edge.metrics import EdgeMetrics
from ws_edge.params import session_param
from ws_edge.peer import Peer, PeerRules
from ws_edge.proxies import client_of
from ws_edge.security import Grant, Refused, authorize, check_origin
from ws_edge.state import StateUnavailable

log = logging.getLogger(__name__)

SHUTTING_DOWN: Final = "server shutting down"


class _Handshake(web.WebSocketResponse):
    """aiohttp's opening handshake (its checks and the 101), and nothing after it.

    aiohttp ends a response with ``write_eof``, which for a WebSocket sends a close frame. By then the
    connection is the peer's: aiohttp must send nothing more."""

    async def write_eof(self) -> None:  # type: ignore[override]
        return


def hand_over(request: web.Request, peer: Peer) -> None:
    """Make ``peer`` the protocol of the request's connection, after the 101 went out.

    The one place that reaches into aiohttp (its version range is pinned in pyproject, and
    test_the_hand_over_still_fits_aiohttp fails when this stops working): aiohttp's handler of the
    connection (``request.protocol``) closes the transport it holds when its request ends, so it is made
    to hold none, then told the connection is gone for it, which ends its bookkeeping (and the connection
    guard's) without touching the transport."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the client left during the handshake")
    aiohttp_side = transport.get_protocol()
    transport.set_protocol(peer)
    request.protocol.transport = None
    aiohttp_side.connection_lost(None)
    peer.connection_made(transport)
    transport.resume_reading()


class OpenSockets:
    """Every socket of the edge from its hand-over to its end: counted, and closed on shutdown."""

    def __init__(self, app: web.Application, settings: Settings, metrics: EdgeMetrics) -> None:
        self._app = app
        self.peers: set[Peer] = set()
        metrics.connections.set_function(lambda: len(self.peers))
        # Called with every socket that ends, after the hub's bookkeeping (the sessions overview's).
        self.on_leave: list[Callable[[Peer], None]] = []
        # Set once the edge is shutting down: a socket adopted after that is closed at once.
        self.closing = False
        self.rules = PeerRules(
            metrics,
            write_timeout_s=settings.slow_socket_timeout,
            heartbeat_s=settings.ws_heartbeat,
            on_closed=self._closed,
        )

    def adopt(self, request: web.Request, peer: Peer) -> None:
        hand_over(request, peer)
        self.peers.add(peer)
        if self.closing:
            peer.close(CloseCode.GOING_AWAY, SHUTTING_DOWN)

    def _closed(self, peer: Peer) -> None:
        self.peers.discard(peer)
        if HUB in self._app:
            self._app[HUB].leave(peer)
        for leave in self.on_leave:
            leave(peer)

    async def close_all(self) -> None:
        """Every socket gets 1001 (going away), so clients know to reconnect elsewhere; one that cannot
        take its close frame within ``SHUTDOWN_CLOSE_S`` is dropped."""
        self.closing = True
        peers = list(self.peers)
        for peer in peers:
            peer.close(CloseCode.GOING_AWAY, SHUTTING_DOWN)
        try:
            async with asyncio.timeout(SHUTDOWN_CLOSE_S):
                await asyncio.gather(*(peer.wait_gone() for peer in peers))
        except TimeoutError:
            for peer in peers:
                peer.abort()


SOCKETS: Final = web.AppKey("sockets", OpenSockets)

# The status the request metrics show for an upgrade whose client left before its 101 (nginx's number).
CLIENT_CLOSED_REQUEST: Final = 499


def client_left() -> web.Response:
    """The answer to a client that left during its handshake: never sent (aiohttp finds the connection
    gone and drops the request quietly, where an exception would be logged as an error with its
    traceback), only counted by the request metrics."""
    return web.Response(status=CLIENT_CLOSED_REQUEST, reason="Client Closed Request")


async def websocket(request: web.Request) -> web.StreamResponse:
    """``GET /api/ws/counters/<sid>``."""

    def admit() -> tuple[str, Grant | None]:
        session_id = session_param(request)
        settings = request.app[SETTINGS]
        check_origin(request, settings.allowed_origins, settings.host)
        return session_id, authorize(request, settings.jwt_secret, session_id)

    return await serve(request, admit, _open)


# Checks a request before its upgrade (raising ``Refused``): the name of the socket's ``Peer`` and the
# caller's grant.
Admit = Callable[[], tuple[str, Grant | None]]
# Sends an adopted socket its first frames.
Opened = Callable[[web.Application, Peer, Grant | None], Awaitable[None]]


async def serve(request: web.Request, admit: Admit, opened: Opened) -> web.StreamResponse:
    """Admit, upgrade and adopt a socket, then ``opened`` starts it (the session sockets and the
    sessions overview share everything up to their first frames)."""
    app = request.app
    metrics, gate = app[METRICS], app[GATE]
    try:
        gate.admit_rate(client_of(request).address)
        name, grant = admit()
        # (The connection cap was checked before this handler: ``ws_edge.guard``.)
        if not app[NC].is_connected:
            raise Refused(503, ErrorCode.UNAVAILABLE, "not connected to NATS; retry shortly")
        # No extension: frames are a few hundred bytes, and each is framed once for all its session's
        # sockets; the peer refuses compressed frames.
        handshake = _Handshake(compress=False)
        if not handshake.can_prepare(request).ok:
            raise Refused(400, ErrorCode.INVALID_REQUEST, "this path takes a WebSocket upgrade")
    except Refused as refused:
        metrics.rejected.labels(refused.code.value).inc()
        raise
    peer = Peer(name, app[SOCKETS].rules)
    try:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the client left before the handshake")
        transport.pause_reading()
        await handshake.prepare(request)
        app[SOCKETS].adopt(request, peer)
    except ConnectionError:
        # The client reset the connection during its handshake: its own doing, not the edge's error.
        return client_left()
    try:
        await opened(app, peer, grant)
    except Exception:
        # A bug, not the client's doing: the client still gets a close frame, not a dropped connection.
        log.exception("a socket could not be opened", extra={"session_id": name, "peer": client_of(request).address})
        peer.close(CloseCode.INTERNAL_ERROR, "internal error")
    except BaseException:
        peer.abort()  # the edge is stopping
        raise
    return handshake


async def _open(app: web.Application, peer: Peer, grant: Grant | None) -> None:
    """Join the session's events, then send the socket its first state."""
    hub = app[HUB]
    try:
        await hub.join(peer)
    except Exception:
        log.exception("could not subscribe to the session", extra={"session_id": peer.session_id})
        peer.close(CloseCode.TRY_AGAIN_LATER, "events unavailable; retry")
        return
    if peer.gone:
        hub.leave(peer)  # it left while joining; its bookkeeping has run
        return
    # Joined (subscribed) before reading, so no change falls between the state and the events.
    try:
        await hub.open(peer)
    except StateUnavailable as unavailable:
        log.warning("no state for a new socket: %s", unavailable, extra={"session_id": peer.session_id})
        peer.close(CloseCode.TRY_AGAIN_LATER, "state unavailable; retry")
        return
    if grant is not None:
        peer.close_at(grant.expires_at, CloseCode.POLICY_VIOLATION, "token expired")


async def close_all(app: web.Application) -> None:
    """``on_shutdown``: close every socket with 1001."""
    await app[SOCKETS].close_all()
