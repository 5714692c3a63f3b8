"""``GET /api/ws/counters/<sid>``: admission, aiohttp's opening handshake, then the socket is a ``Peer``.

Every limit is checked before upgrading, so a refused client costs one HTTP response. Once aiohttp has
answered 101, the connection is handed over: the ``Peer`` gets a duplicate of the connection's socket
(its own transport; ``Peer`` is its protocol), and aiohttp's request ends as soon as the socket has its
first state. aiohttp's end of the connection then closes its descriptor only, without a close frame
(``_Handshake``), and the TCP connection lives on in the peer's. An open socket so holds no request, no
handler coroutine and no middleware frames: a transport and a ``Peer``.

aiohttp reads nothing after the upgrade request (reading is paused before the 101 goes out), so every
byte the client sends after the handshake reaches the peer. (A client must wait for the 101 before it
sends a frame, RFC 6455 4.1; bytes it sent with the request itself are not read.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from ctxmeter.limits import SHUTDOWN_CLOSE_S
from ctxmeter.settings import Settings
from schemas.models import ErrorCode
from ws_edge.guard import GUARD
from ws_edge.keys import GATE, HUB, METRICS, NC, SETTINGS
from ws_edge.metrics import EdgeMetrics
from ws_edge.params import session_param
from ws_edge.peer import Peer, PeerRules
from ws_edge.security import Grant, Refused, authorize, check_origin
from ws_edge.state import StateUnavailable
from ws_edge.wire import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER

log = logging.getLogger(__name__)

SHUTTING_DOWN: Final = "server shutting down"


class _Handshake(web.WebSocketResponse):
    """aiohttp's opening handshake (its checks and the 101), and nothing after it.

    aiohttp ends a response with ``write_eof``, which for a WebSocket sends a close frame. By then the
    socket is the peer's, on the same TCP connection: aiohttp must send nothing more."""

    async def write_eof(self) -> None:  # type: ignore[override]
        return


class OpenSockets:
    """Every socket of the edge from its handshake to its end: counted, and closed on shutdown."""

    def __init__(self, app: web.Application, settings: Settings, metrics: EdgeMetrics) -> None:
        self._app = app
        self.peers: set[Peer] = set()
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

    async def adopt(self, request: web.Request, peer: Peer) -> None:
        """Serve ``peer`` on a duplicate of the request's connection (after the 101 went out)."""
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the client left during the handshake")
        if transport.get_write_buffer_size():
            # Part of the 101 is still unsent (a client sending ahead and not reading): the peer's frames
            # would overtake it on the other descriptor.
            transport.abort()
            raise ConnectionResetError("the client did not take the handshake")
        duplicate = transport.get_extra_info("socket").dup()
        self.peers.add(peer)
        self._app[GUARD].adopt()
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: peer, sock=duplicate)
        except BaseException:
            duplicate.close()
            self._forget(peer)
            if peer.transport is not None:
                peer.connection_lost(None)  # made, then dropped without a word (uvloop): stop its timers
            raise
        if self.closing:
            peer.close(CLOSE_GOING_AWAY, SHUTTING_DOWN)

    def _closed(self, peer: Peer) -> None:
        if self._forget(peer):
            app = self._app
            app[GATE].open -= 1
            app[METRICS].connections.dec()
            if HUB in app:
                app[HUB].leave(peer)
            for leave in self.on_leave:
                leave(peer)

    def _forget(self, peer: Peer) -> bool:
        if peer not in self.peers:
            return False
        self.peers.discard(peer)
        self._app[GUARD].let_go()
        return True

    async def close_all(self) -> None:
        """Every socket gets 1001 (going away), so clients know to reconnect elsewhere; one that cannot
        take its close frame within ``SHUTDOWN_CLOSE_S`` is dropped."""
        self.closing = True
        peers = list(self.peers)
        for peer in peers:
            peer.close(CLOSE_GOING_AWAY, SHUTTING_DOWN)
        try:
            async with asyncio.timeout(SHUTDOWN_CLOSE_S):
                await asyncio.gather(*(peer.wait_gone() for peer in peers))
        except TimeoutError:
            for peer in peers:
                peer.abort()


SOCKETS: Final = web.AppKey("sockets", OpenSockets)


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
        gate.admit_rate(request.remote or "unknown")
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
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client left before the handshake")
    gate.open += 1
    metrics.connections.inc()
    peer: Peer | None = None
    try:
        transport.pause_reading()
        await handshake.prepare(request)
        # Again: aiohttp resumes reading when it had paused for a full buffer of its own (a client that
        # sent ahead of the 101, whose extra bytes are lost either way).
        transport.pause_reading()
        peer = Peer(name, app[SOCKETS].rules)
        await app[SOCKETS].adopt(request, peer)
    except BaseException:
        gate.open -= 1
        metrics.connections.dec()
        raise
    try:
        await opened(app, peer, grant)
    except Exception:
        # A bug, not the client's doing: the client still gets a close frame, not a dropped connection.
        log.exception("a socket could not be opened", extra={"session_id": name})
        peer.close(CLOSE_INTERNAL_ERROR, "internal error")
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
        peer.close(CLOSE_TRY_AGAIN_LATER, "events unavailable; retry")
        return
    if peer.gone:
        hub.leave(peer)  # it left while joining; its bookkeeping has run
        return
    # Joined (subscribed) before reading, so no change falls between the snapshot and the events;
    # anything older than the snapshot is dropped by the peer's revision check.
    try:
        frames = await hub.snapshot(peer.session_id)
    except StateUnavailable as unavailable:
        log.warning("no state for a new socket: %s", unavailable, extra={"session_id": peer.session_id})
        peer.close(CLOSE_TRY_AGAIN_LATER, "state unavailable; retry")
        return
    peer.open_with(frames)
    if grant is not None:
        peer.close_at(grant.expires_at, CLOSE_POLICY_VIOLATION, "token expired")


async def close_all(app: web.Application) -> None:
    """``on_shutdown``: close every socket with 1001."""
    await app[SOCKETS].close_all()
