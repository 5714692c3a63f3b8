"""The sessions overview's routes: ``GET /sessions`` (the page), ``GET /api/counters/sessions`` (the list,
nearest to compaction first) and ``WS /api/ws/sessions`` (every session's changes). All of them show
every session, so with auth on they need a token whose ``sessions`` claim is ``["*"]``."""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web
from websockets.frames import CloseCode

from ctxmeter.limits import OVERVIEW_LIMIT_DEFAULT, OVERVIEW_LIMIT_MAX, OVERVIEW_MAX_SOCKETS
from schemas.excerpt import excerpt
from schemas.models import ErrorCode
from ws_edge import sockets
from ws_edge.keys import OVERVIEW, SETTINGS
from ws_edge.params import check_query, query_int
from ws_edge.peer import Peer
from ws_edge.routes import STATIC_DIR
from ws_edge.security import Grant, Refused, authorize_all, check_origin
from ws_edge.state import StateUnavailable

SESSIONS_HTML: Final = STATIC_DIR / "sessions.html"
# How the list can be ordered: by tokens left before compaction, fewest first.
SORT_LEFT: Final = "left"
# The name of an overview socket's ``Peer`` (its logs' session_id); never a session id, so the hub
# never takes it for one.
OVERVIEW_PEER: Final = "(overview)"


async def _ready(app: web.Application) -> None:
    """The index, caught up with the bucket; 503 when it cannot be read within the request timeout."""
    try:
        async with asyncio.timeout(app[SETTINGS].request_timeout):
            await app[OVERVIEW].index.ready()
    except (StateUnavailable, TimeoutError):
        raise Refused(503, ErrorCode.UNAVAILABLE, "the sessions cannot be read right now; retry shortly") from None


async def sessions_list(request: web.Request) -> web.Response:
    """``GET /api/counters/sessions?sort=left&limit=N``: ``{"sessions": [ContextUsage...], "total": n}``."""
    check_query(request, "sort", "limit")
    authorize_all(request, request.app[SETTINGS].jwt_secret)
    sort = request.query.get("sort", SORT_LEFT)
    if sort != SORT_LEFT:
        raise Refused(400, ErrorCode.INVALID_REQUEST, f"sort must be {SORT_LEFT!r}, not {excerpt(sort)}")
    limit = query_int(request, "limit")
    if limit is None:
        limit = OVERVIEW_LIMIT_DEFAULT
    if not 1 <= limit <= OVERVIEW_LIMIT_MAX:
        raise Refused(400, ErrorCode.INVALID_REQUEST, f"limit must be 1-{OVERVIEW_LIMIT_MAX}, not {limit}")
    await _ready(request.app)
    index = request.app[OVERVIEW].index
    body = b'{"sessions":[%s],"total":%d}' % (b",".join(entry.data for entry in index.top(limit)), len(index.entries))
    return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})


async def sessions_socket(request: web.Request) -> web.StreamResponse:
    """``GET /api/ws/sessions``: every session's ``context_update`` (and ``session_removed``), coalesced
    per session. It sends no state of its own on open: a client opens it, then reads the list."""

    def admit() -> tuple[str, Grant | None]:
        app = request.app
        settings = app[SETTINGS]
        check_origin(request, settings.allowed_origins, settings.host)
        grant = authorize_all(request, settings.jwt_secret)
        if len(app[OVERVIEW].feed.peers) >= OVERVIEW_MAX_SOCKETS:
            raise Refused(503, ErrorCode.UNAVAILABLE, "too many overview sockets on this edge; retry later")
        return OVERVIEW_PEER, grant

    return await sockets.serve(request, admit, _open)


async def _open(app: web.Application, peer: Peer, grant: Grant | None) -> None:
    try:
        await _ready(app)
    except Refused:
        peer.close(CloseCode.TRY_AGAIN_LATER, "sessions unavailable; retry")
        return
    if peer.gone:
        return  # it left while the index was read
    app[OVERVIEW].feed.join(peer)
    peer.open_with([])
    if grant is not None:
        peer.close_at(grant.expires_at, CloseCode.POLICY_VIOLATION, "token expired")


async def sessions_page(request: web.Request) -> web.StreamResponse:
    """The overview page (it reads the list and the socket with the page's ``?token=``)."""
    return web.FileResponse(SESSIONS_HTML, headers={"Cache-Control": "no-cache"})


def setup_overview_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/api/ws/sessions", sessions_socket, name="ws_sessions")
    router.add_get("/api/counters/sessions", sessions_list, name="sessions")
    router.add_get("/sessions", sessions_page, name="sessions_page")
