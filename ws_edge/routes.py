"""The HTTP API (the paths existing front ends use, and a route per change), health, metrics and the demo
page; the route table."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Final

import nats.errors
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST

from ctxmeter.limits import READY_TIMEOUT_S
from schemas import subjects
from schemas.excerpt import excerpt
from schemas.idempotency import HTTP_KEY_HEADER, KEY_HEADER, is_valid_key
from schemas.limits import KEY_MAX_CHARS
from schemas.models import ErrorCode
from schemas.subjects import ContextOp
from ws_edge import sockets
from ws_edge.keys import FUNCTIONS, METRICS, MORE_METRICS, NC, SETTINGS
from ws_edge.middleware import expect_continue
from ws_edge.params import SESSION_PARAM, check_query, query_int, session_param
from ws_edge.responses import error_response, json_response
from ws_edge.security import Refused, authorize

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
INDEX_HTML: Final = STATIC_DIR / "index.html"

# `{sid:(?s:.*)}` takes the rest of the path, so an id with a slash, a line break (`%0a`; a bare `.`
# stops there) or nothing is reported as an invalid session id (400) rather than as an unknown route.
SID: Final = f"{{{SESSION_PARAM}:(?s:.*)}}"
WS_PATH: Final = f"/api/ws/counters/{SID}"
# A session id that is one path segment, for routes with more path after it.
SID_SEGMENT: Final = f"{{{SESSION_PARAM}:[^/]+}}"
# Every state-changing context operation has its own route (``set`` also has the plain POST).
CHANGES_OVER_HTTP: Final = tuple(op for op in ContextOp if subjects.changes_state(op))
COUNTERS_PREFIX: Final = "/api/counters"


# -- counters ---------------------------------------------------------------------------------

# POST /api/counters/context/<sid> with no body takes its fields from the query string (front ends do).
SEED_QUERY_FIELDS: Final = ("used", "total")
SEED_QUERY_TEXT: Final = ("model",)
# The body a request with no body stands for.
EMPTY_BODY: Final = b"{}"


def _idempotency(request: web.Request) -> dict[str, str] | None:
    """The ``Idempotency-Key`` header, passed on to the functions as ``Nats-Msg-Id``."""
    key = request.headers.get(HTTP_KEY_HEADER)
    if key is None:
        return None
    if not is_valid_key(key):
        raise Refused(
            400,
            ErrorCode.INVALID_REQUEST,
            f"{HTTP_KEY_HEADER} {excerpt(key)} is invalid: use 1-{KEY_MAX_CHARS} printable ASCII characters",
        )
    return {KEY_HEADER: key}


def _session(request: web.Request) -> str:
    session_id = session_param(request)
    authorize(request, request.app[SETTINGS].jwt_secret, session_id)
    return session_id


async def context_get(request: web.Request) -> web.Response:
    check_query(request)
    session_id = _session(request)
    return await request.app[FUNCTIONS].call(subjects.context(ContextOp.GET, session_id), EMPTY_BODY)


async def context_post(request: web.Request) -> web.Response:
    """JSON body ``{"used", "total", ...}`` (``set``); without a body, ``used``, ``total`` and ``model``
    from the query string."""
    session_id = _session(request)
    headers = _idempotency(request)
    body = await request.read()
    if body.strip():
        check_query(request)
    else:
        check_query(request, *SEED_QUERY_FIELDS, *SEED_QUERY_TEXT)
        fields: dict[str, object] = {}
        for name in SEED_QUERY_FIELDS:
            value = query_int(request, name)
            if value is not None:
                fields[name] = value
        if model := request.query.get("model"):
            fields["model"] = model
        body = json.dumps(fields).encode()
    return await request.app[FUNCTIONS].call(subjects.context(ContextOp.SET, session_id), body, headers)


def context_change(op: ContextOp) -> Handler:
    """``POST /api/counters/context/<sid>/<op>``: the NATS request body of ``op``, for runtimes with no
    NATS client; an empty body stands for ``{}``."""

    async def handler(request: web.Request) -> web.Response:
        check_query(request)
        session_id = _session(request)
        headers = _idempotency(request)
        body = await request.read()
        return await request.app[FUNCTIONS].call(subjects.context(op, session_id), body.strip() or EMPTY_BODY, headers)

    return handler


async def context_history(request: web.Request) -> web.Response:
    check_query(request, "limit")
    session_id = _session(request)
    limit = query_int(request, "limit")
    body = json.dumps({} if limit is None else {"limit": limit}).encode()
    return await request.app[FUNCTIONS].call(subjects.context(ContextOp.HISTORY, session_id), body)


async def tokens_draft(request: web.Request) -> web.Response:
    check_query(request)
    session_id = _session(request)
    body = await request.read()
    return await request.app[FUNCTIONS].call(subjects.tokens_draft(session_id), body, _idempotency(request))


async def tokens_count(request: web.Request) -> web.Response:
    check_query(request)
    authorize(request, request.app[SETTINGS].jwt_secret, None)
    body = await request.read()
    return await request.app[FUNCTIONS].call(subjects.tokens_count(), body)


async def models(request: web.Request) -> web.Response:
    check_query(request)
    authorize(request, request.app[SETTINGS].jwt_secret, None)
    return await request.app[FUNCTIONS].call(subjects.models(), EMPTY_BODY)


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
    body = b"".join([request.app[METRICS].render(), *(render() for render in request.app[MORE_METRICS])])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


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
    return web.FileResponse(INDEX_HTML, headers={"Cache-Control": "no-cache"})


def setup_routes(app: web.Application) -> None:
    router = app.router

    def add_post(path: str, handler: Handler, name: str) -> None:
        # Every route that takes a body answers Expect: 100-continue itself (a body too large is 413 at once).
        router.add_post(path, handler, name=name, expect_handler=expect_continue)

    router.add_get(WS_PATH, sockets.websocket, name="ws")
    # The per-operation routes first: the catch-all session id of the plain routes would take them.
    for op in CHANGES_OVER_HTTP:
        add_post(f"{COUNTERS_PREFIX}/context/{SID_SEGMENT}/{op}", context_change(op), name=f"context_{op}")
    router.add_get(f"{COUNTERS_PREFIX}/context/{SID_SEGMENT}/{ContextOp.HISTORY}", context_history, name="history")
    router.add_get(f"{COUNTERS_PREFIX}/models", models, name="models")
    router.add_get(f"{COUNTERS_PREFIX}/context/{SID}", context_get, name="context_get")
    add_post(f"{COUNTERS_PREFIX}/context/{SID}", context_post, name="context_post")
    add_post(f"{COUNTERS_PREFIX}/tokens", tokens_count, name="tokens_count")
    add_post(f"{COUNTERS_PREFIX}/tokens/{SID}", tokens_draft, name="tokens_draft")
    router.add_get("/healthz", healthz, name="healthz")
    router.add_get("/readyz", readyz, name="readyz")
    router.add_get("/metrics", metrics, name="metrics")
    router.add_get("/", index, name="index")
    router.add_static("/static/", STATIC_DIR, name="static", follow_symlinks=False)
