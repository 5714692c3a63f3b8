"""Cross-cutting HTTP concerns: request metrics, CORS for the API, errors in the JSON shape, bodies
refused before they are read (compressed, or announced over the limit), and the Origin check on
requests that change state (CSRF)."""

from __future__ import annotations

import logging
import time
from typing import Final

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.typedefs import Handler

from ctxmeter.limits import CORS_MAX_AGE_S
from schemas.excerpt import excerpt
from schemas.models import ErrorCode
from ws_edge.keys import METRICS, SETTINGS, WRITES
from ws_edge.params import wants_websocket
from ws_edge.proxies import client_of
from ws_edge.responses import error_response
from ws_edge.security import SAFE_METHODS, Refused, admit_write, check_origin, origin_allowed

log = logging.getLogger(__name__)

# Paths whose errors are always JSON (the API, the WebSocket upgrade, OTLP's exports), and those that take
# CORS (a page's OpenTelemetry exporter sends JSON, which needs a preflight).
JSON_ERRORS_PREFIX: Final = ("/api/", "/v1/")
CORS_PREFIX: Final = ("/api/counters", "/v1/")
# The browser client and the meters' elements, for an allowed origin's pages: a module script from
# another origin loads only with CORS.
STATIC_PREFIX: Final = "/static/"
CORS_METHODS: Final = "GET, POST, OPTIONS"
CORS_HEADERS: Final = "Authorization, Content-Type, Content-Encoding, Idempotency-Key"

# aiohttp's own HTTP errors on API paths, in the contract's codes.
_STATUS_CODES: Final = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_ENCODING,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.UNAVAILABLE,
}


def _route_label(request: web.Request) -> str:
    # The route's template, never the raw path: session ids would make one time series per session.
    info = request.match_info
    if info.http_exception is not None:
        return "unmatched"
    resource = info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as http_error:
        status = http_error.status
        raise
    finally:
        # A WebSocket's request is its handshake, up to its first state sent (the socket lives on after).
        request.app[METRICS].http_latency.labels(_route_label(request), request.method, str(status)).observe(
            time.perf_counter() - started
        )


def _cors_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    if origin is None or not request.path.startswith((*CORS_PREFIX, STATIC_PREFIX)):
        return None
    settings = request.app[SETTINGS]
    if not origin_allowed(origin, settings.allowed_origins, settings.host, secure=client_of(request).secure):
        return None
    return origin


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    origin = _cors_origin(request)
    if request.method == "OPTIONS" and request.path.startswith(CORS_PREFIX):
        # A preflight for a refused origin gets no CORS headers: the browser then blocks the request.
        preflight = web.Response(status=204)
        if origin is not None:
            preflight.headers.update(
                {
                    "Access-Control-Allow-Methods": CORS_METHODS,
                    "Access-Control-Allow-Headers": CORS_HEADERS,
                    "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
                }
            )
            _allow(preflight, origin)
        return preflight
    try:
        response = await handler(request)
    except web.HTTPException as http_error:
        if origin is not None:
            _allow(http_error, origin)
        raise
    if origin is not None:
        _allow(response, origin)
    return response


def _allow(response: web.StreamResponse, origin: str) -> None:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Vary"] = "Origin"


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals anywhere, and aiohttp's own errors on API paths, as ``{"error": {"code", "message"}}``."""
    try:
        return await handler(request)
    except Refused as refused:
        return error_response(refused.status, refused.code, refused.message)
    except web.HTTPException as http_error:
        if not request.path.startswith(JSON_ERRORS_PREFIX) or http_error.status < 400:
            raise
        code = _STATUS_CODES.get(http_error.status, ErrorCode.INVALID_REQUEST)
        response = error_response(http_error.status, code, http_error.reason)
        if "Allow" in http_error.headers:  # a 405 says which methods the path takes
            response.headers["Allow"] = http_error.headers["Allow"]
        return response
    except ConnectionError:
        raise  # the client left; aiohttp drops the request quietly
    except Exception:
        # A bug, never the client's fault: logged, and answered in the contract's shape rather than as
        # aiohttp's plain-text 500. Not for an upgrade, whose socket may already be open.
        if not request.path.startswith(JSON_ERRORS_PREFIX) or wants_websocket(request):
            raise
        log.exception(
            "a request failed",
            extra={
                "route": _route_label(request),
                "method": excerpt(request.method),
                "peer": client_of(request).address,
            },
        )
        return error_response(500, ErrorCode.INTERNAL, "internal error")


# -- bodies -------------------------------------------------------------------------------------

# Paths whose routes take a compressed body (``Content-Encoding: gzip``...) and inflate it themselves,
# streaming, capped and off the event loop: the one place a route opts in. aiohttp inflates nothing (the
# runner turns its ``auto_decompress`` off: it would inflate on the event loop before any size check),
# so every other body must come as it is.
# OTLP/HTTP exports (``ws_edge.otlp``) come gzip-compressed from most exporters.
COMPRESSED_BODY_PREFIXES: Final = ("/v1/",)
IDENTITY: Final = "identity"


def body_refusal(request: web.Request) -> Refused | None:
    """Why the request's body is refused before a byte of it is read, if it is: announced larger than
    the edge takes (413), or compressed where no route inflates it (415)."""
    length = request.content_length
    if length is not None and length > request.client_max_size:
        return Refused(
            413,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the body ({length} bytes) is larger than the {request.client_max_size} bytes taken",
        )
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "")
    codings = [coding.strip().lower() for coding in encoding.split(",") if coding.strip()]
    if (
        request.body_exists
        and any(coding != IDENTITY for coding in codings)
        and not request.path.startswith(COMPRESSED_BODY_PREFIXES)
    ):
        return Refused(
            415,
            ErrorCode.UNSUPPORTED_ENCODING,
            f"Content-Encoding {excerpt(encoding)} is not taken here: send the body uncompressed",
        )
    return None


@web.middleware
async def plain_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (refusal := body_refusal(request)) is not None:
        raise refusal
    return await handler(request)


CONTINUE: Final = "100-continue"


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """Every body-taking route's answer to ``Expect:`` (aiohttp calls it before any middleware): a body
    the edge would refuse is refused at once, rather than told ``100 Continue`` and sent in full first.
    Otherwise as aiohttp's own: ``100 Continue`` to HTTP/1.1, 417 for any other expectation."""
    if (refusal := body_refusal(request)) is not None:
        return error_response(refusal.status, refusal.code, refusal.message)
    if request.version != HttpVersion11:
        return None
    expect = request.headers.get(hdrs.EXPECT, "")
    if expect.lower() != CONTINUE:
        return error_response(417, ErrorCode.INVALID_REQUEST, f"unknown expectation {excerpt(expect)}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    # What follows is the response itself: its size is counted from here (as aiohttp's own handler does).
    request.writer.output_size = 0
    return None


@web.middleware
async def write_rate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests that change state, per client IP (``CTXMETER_IP_WRITE_RATE``): one HTTP client must not
    create sessions by the hundred thousand, filling the bucket for everyone."""
    if request.method not in SAFE_METHODS:
        admit_write(request.app[WRITES], client_of(request).address)
    return await handler(request)


@web.middleware
async def same_origin_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request that changes state, sent by a page on an origin not allowed, is refused (403) as a socket
    from it is: a browser sends a "simple" cross-site POST (``text/plain``) with no preflight, so CORS
    alone would let it through. A request with no ``Origin`` is not a browser's and passes."""
    if request.method not in SAFE_METHODS:
        settings = request.app[SETTINGS]
        check_origin(request, settings.allowed_origins, settings.host)
    return await handler(request)
