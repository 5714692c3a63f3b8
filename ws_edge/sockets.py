"""``GET /api/ws/counters/<sid>``: admission before the upgrade, then one socket's life.

On open the socket gets its session's current state, then the session's events (``Hub``). The only
thing a client sends is a ping. Every limit is checked before upgrading, so a refused client costs one
HTTP response, and every socket leaves its session in a ``finally``. Every frame a client sends, of any
kind, counts against the flood limit; nothing it sends can end the socket without a close frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Final

from aiohttp import WebSocketError, WSCloseCode, WSMessage, WSMsgType, web

from ctxmeter.limits import (
    INBOUND_FRAME_BURST,
    INBOUND_FRAMES_PER_S,
    MAX_INBOUND_FRAME_BYTES,
    SHUTDOWN_CLOSE_S,
    WS_CLOSE_TIMEOUT_S,
)
from schemas.models import ErrorCode
from ws_edge.keys import GATE, HUB, METRICS, NC, SETTINGS
from ws_edge.metrics import EdgeMetrics
from ws_edge.params import session_param
from ws_edge.peer import Peer
from ws_edge.security import Grant, Refused, TokenBucket, authorize, check_origin
from ws_edge.state import StateUnavailable

log = logging.getLogger(__name__)

PING_TEXT: Final = "ping"


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


async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings, metrics, gate = app[SETTINGS], app[METRICS], app[GATE]
    try:
        gate.admit_rate(request.remote or "unknown")
        session_id = session_param(request)
        check_origin(request, settings.allowed_origins, settings.host)
        grant = authorize(request, settings.jwt_secret, session_id)
        # (The connection cap was checked before this handler: ``ws_edge.guard``.)
        if not app[NC].is_connected:
            raise Refused(503, ErrorCode.UNAVAILABLE, "not connected to NATS; retry shortly")
        ws = web.WebSocketResponse(
            # Protocol pings; aiohttp closes a peer that sends nothing (no pong) for half the interval after.
            heartbeat=settings.ws_heartbeat,
            # The receive loop answers protocol pings itself: aiohttp's autoping would answer them before
            # the loop sees them, so a ping flood would never meet the flood limit.
            autoping=False,
            # aiohttp refuses a message of exactly max_msg_size bytes; 4 KiB itself is allowed.
            max_msg_size=MAX_INBOUND_FRAME_BYTES + 1,
            timeout=WS_CLOSE_TIMEOUT_S,
            # Frames are a few hundred bytes; compressing them per socket would cost CPU per socket
            # and undo serializing each frame once per session.
            compress=False,
        )
        if not ws.can_prepare(request).ok:
            raise Refused(400, ErrorCode.INVALID_REQUEST, "this path takes a WebSocket upgrade")
    except Refused as refused:
        metrics.rejected.labels(refused.code.value).inc()
        raise
    gate.open += 1
    metrics.connections.inc()
    try:
        await ws.prepare(request)
        peer = Peer(request, ws, session_id, metrics, write_timeout_s=settings.slow_socket_timeout)
        await _serve(request, peer, grant)
    finally:
        gate.open -= 1
        metrics.connections.dec()
    return ws


async def _serve(request: web.Request, peer: Peer, grant: Grant | None) -> None:
    hub, metrics = request.app[HUB], request.app[METRICS]
    ws = peer.ws
    try:
        await hub.join(peer)
    except Exception:
        log.exception("could not subscribe to the session", extra={"session_id": peer.session_id})
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"events unavailable; retry")
        return
    expiry: asyncio.Task[None] | None = None
    try:
        # Joined (subscribed) before reading, so no change falls between the snapshot and the events;
        # anything older than the snapshot is dropped by the peer's revision check.
        try:
            frames = await hub.snapshot(peer.session_id)
        except StateUnavailable as unavailable:
            log.warning("no state for a new socket: %s", unavailable, extra={"session_id": peer.session_id})
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"state unavailable; retry")
            return
        peer.open_with(frames)
        if grant is not None:
            expiry = asyncio.create_task(_close_at_expiry(ws, grant.expires_at))
        try:
            await _receive(peer, metrics)
        except Exception:
            # A bug, not the client's doing: the client still gets a close frame, not a dropped connection.
            log.exception("a socket's receive loop failed", extra={"session_id": peer.session_id})
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
    finally:
        hub.leave(peer)
        await peer.close()
        if expiry is not None:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry


async def _receive(peer: Peer, metrics: EdgeMetrics) -> None:
    ws = peer.ws
    loop = asyncio.get_running_loop()
    flood = TokenBucket(INBOUND_FRAMES_PER_S, INBOUND_FRAME_BURST, loop.time())
    # Every frame counts: text, binary, protocol ping and pong (a close ends the loop).
    async for message in ws:
        if not flood.take(loop.time()):
            metrics.policy_closed.labels("flood").inc()
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many frames")
            return
        if message.type is WSMsgType.TEXT:
            if is_ping(message.data):
                peer.pong()
        elif message.type is WSMsgType.PING:
            try:
                await ws.pong(message.data)
            except ConnectionError:
                return  # the connection is going; the loop's next read ends too
        elif message.type is WSMsgType.ERROR:
            if peer.aborted_slow:
                return  # dropped by its writer, already counted as a slow socket
            metrics.policy_closed.labels(_error_reason(message)).inc()
            return
        # Binary frames and pongs carry nothing this protocol needs; they only count towards the limit.


def _error_reason(message: WSMessage) -> str:
    """Why aiohttp closed the socket (it has, by now): 1009 for a frame over the limit. The error's own
    code, not ``ws.close_code``, which holds whatever the peer answered the close with (1000, often)."""
    error = message.data
    too_big = isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG
    return "too_big" if too_big else "protocol_error"


async def _close_at_expiry(ws: web.WebSocketResponse, expires_at: float) -> None:
    await asyncio.sleep(max(0.0, expires_at - time.time()))
    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"token expired")


async def close_all(app: web.Application) -> None:
    """``on_shutdown``: every socket gets 1001 (going away) so clients know to reconnect elsewhere."""

    async def close_one(peer: Peer) -> None:
        try:
            async with asyncio.timeout(SHUTDOWN_CLOSE_S):
                await peer.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
        except TimeoutError:
            transport = peer.request.transport
            if transport is not None:
                transport.abort()

    if HUB in app:
        await asyncio.gather(*(close_one(peer) for peer in app[HUB].peers()), return_exceptions=True)
