"""``POST /v1/traces``, ``/v1/logs``, ``/v1/metrics``: OTLP/HTTP exports, answered with the signal's
``Export*ServiceResponse`` in the request's encoding (``partial_success`` naming what was rejected).

Refusals of a whole export are the contract's JSON errors: 400 (not an export), 401/403 (auth, Origin), 413
(too large, decompressed or in records), 415 (content type or encoding), 503 (the functions cannot take the
changes now: exporters retry, and the idempotency keys make the retry safe)."""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from ctxmeter.limits import OTLP_INLINE_BYTES
from schemas.models import ErrorCode
from ws_edge.keys import METRICS, NC, OTLP_WANTED, SETTINGS
from ws_edge.otlp.decode import BodyEncoding, Decoded, Signal, body_encoding, check_content_encoding, gunzip, parse
from ws_edge.otlp.decode import records as decode_records
from ws_edge.otlp.decode import response as encode_response
from ws_edge.otlp.ingest import Ingest, Tally, newest_per_session
from ws_edge.otlp.mapping import CLAUDE_UNREAD, map_record
from ws_edge.security import TOKEN_PARAM, Refused, authorize

PATHS: Final = {signal: f"/v1/{signal}" for signal in Signal}


def _decode(signal: Signal, encoding: BodyEncoding, data: bytes, gzipped: bool, wanted: frozenset[str]) -> Decoded:
    if gzipped:
        data = gunzip(data)
    return decode_records(signal, parse(signal, encoding, data), wanted, CLAUDE_UNREAD)


def exporter(signal: Signal) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        app = request.app
        settings = app[SETTINGS]
        for name in request.query:
            if name != TOKEN_PARAM:
                raise Refused(400, ErrorCode.INVALID_REQUEST, "OTLP/HTTP takes no query parameters")
        grant = authorize(request, settings.jwt_secret, None)
        encoding = body_encoding(request.headers.get("Content-Type", ""))
        gzipped = check_content_encoding(request.headers.get("Content-Encoding"))
        data = await request.read()
        if gzipped or len(data) > OTLP_INLINE_BYTES:
            decoded = await asyncio.to_thread(_decode, signal, encoding, data, gzipped, app[OTLP_WANTED])
        else:
            decoded = _decode(signal, encoding, data, gzipped, app[OTLP_WANTED])
        tally = Tally()
        if signal is Signal.METRICS:
            # Cumulative totals, not the context's size: counted, and they move no meter.
            tally.accept("metric", decoded.items)
        else:
            session_attributes = settings.otlp_session_attributes
            results = (map_record(record, session_attributes) for record in decoded.records)
            changes = newest_per_session(results, grant, tally)
            await Ingest(app[NC], app[METRICS], settings.request_timeout).apply(changes, tally)
        tally.record(app[METRICS], signal)
        if tally.unavailable is not None:
            raise Refused(503, ErrorCode.UNAVAILABLE, tally.unavailable)
        body = encode_response(signal, encoding, tally.rejected, tally.message())
        return web.Response(body=body, content_type=encoding.value)

    return handler


def setup_otlp_routes(app: web.Application) -> None:
    for signal, path in PATHS.items():
        app.router.add_post(path, exporter(signal), name=f"otlp_{signal}")
