"""The HTTP API (the seed's paths), health, metrics and the demo page; the route table."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Final

import nats.errors
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ctxmeter.limits import READY_TIMEOUT_S
from schemas import subjects
from schemas.excerpt import excerpt
from schemas.models import ErrorCode
from schemas.subjects import ContextOp
from ws_edge import sockets
from ws_edge.keys import FUNCTIONS, METRICS, NC, SETTINGS
from ws_edge.params import SESSION_PARAM, query_int, session_param
from ws_edge.responses import error_response, json_response
from ws_edge.security import authorize

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
INDEX_HTML: Final = STATIC_DIR / "index.html"

# `{sid:.*}` takes the rest of the path, so an id with a slash (or an empty one) is reported as an
# invalid session id (400) rather than as an unknown route.
SID: Final = f"{{{SESSION_PARAM}:.*}}"
WS_PATH: Final = f"/api/ws/counters/{SID}"
COUNTERS_PREFIX: Final = "/api/counters"


# -- counters ---------------------------------------------------------------------------------


async def context_get(request: web.Request) -> web.Response:
    session_id = session_param(request)
    authorize(request, request.app[SETTINGS].jwt_secret, session_id)
    return await request.app[FUNCTIONS].call(subjects.context(ContextOp.GET, session_id), b"{}")


async def context_post(request: web.Request) -> web.Response:
    """JSON body ``{"used", "total"}``; without a body, the same from the query string (the seed's)."""
    session_id = session_param(request)
    authorize(request, request.app[SETTINGS].jwt_secret, session_id)
    body = await request.read()
    if not body.strip():
        fields: dict[str, object] = {}
        for name in ("used", "total"):
            value = query_int(request, name)
            if value is not None:
                fields[name] = value
        if model := request.query.get("model"):
            fields["model"] = model
        body = json.dumps(fields).encode()
    return await request.app[FUNCTIONS].call(subjects.context(ContextOp.SET, session_id), body)


async def tokens_draft(request: web.Request) -> web.Response:
    session_id = session_param(request)
    authorize(request, request.app[SETTINGS].jwt_secret, session_id)
    body = await request.read()
    return await request.app[FUNCTIONS].call(subjects.tokens_draft(session_id), body)


async def tokens_count(request: web.Request) -> web.Response:
    authorize(request, request.app[SETTINGS].jwt_secret, None)
    body = await request.read()
    return await request.app[FUNCTIONS].call(subjects.tokens_count(), body)


# -- operations -------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return json_response(200, b'{"status":"ok"}')


async def readyz(request: web.Request) -> web.Response:
    nc = request.app[NC]
    if not nc.is_connected:
        return error_response(503, ErrorCode.UNAVAILABLE, "not connected to NATS")
    try:
        await nc.request(subjects.service_ping(), b"", timeout=READY_TIMEOUT_S)
    except nats.errors.Error:
        return error_response(503, ErrorCode.UNAVAILABLE, "the ctxmeter functions do not answer")
    return json_response(200, b'{"status":"ready"}')


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- demo page --------------------------------------------------------------------------------


def new_session_id() -> str:
    return f"demo-{uuid.uuid4().hex[:16]}"


async def index(request: web.Request) -> web.StreamResponse:
    """The live demo page for ``?session=<sid>``; without one, a redirect to a fresh session."""
    session_id = request.query.get("session")
    if session_id is None:
        # Keep the other parameters (a browser's ?token=) on the way.
        raise web.HTTPFound(request.rel_url.update_query(session=new_session_id()))
    if not subjects.is_session_id(session_id):
        return error_response(400, ErrorCode.INVALID_SESSION_ID, f"session id {excerpt(session_id)} is invalid")
    if not INDEX_HTML.is_file():
        return error_response(404, ErrorCode.NOT_FOUND, "the demo page is not installed")
    return web.FileResponse(INDEX_HTML, headers={"Cache-Control": "no-cache"})


def setup_routes(app: web.Application) -> None:
    router = app.router
    router.add_get(WS_PATH, sockets.websocket, name="ws")
    router.add_get(f"{COUNTERS_PREFIX}/context/{SID}", context_get, name="context_get")
    router.add_post(f"{COUNTERS_PREFIX}/context/{SID}", context_post, name="context_post")
    router.add_post(f"{COUNTERS_PREFIX}/tokens", tokens_count, name="tokens_count")
    router.add_post(f"{COUNTERS_PREFIX}/tokens/{SID}", tokens_draft, name="tokens_draft")
    router.add_get("/healthz", healthz, name="healthz")
    router.add_get("/readyz", readyz, name="readyz")
    router.add_get("/metrics", metrics, name="metrics")
    router.add_get("/", index, name="index")
    if STATIC_DIR.is_dir():
        router.add_static("/static/", STATIC_DIR, name="static", follow_symlinks=False)
