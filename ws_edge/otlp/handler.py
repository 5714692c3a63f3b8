"""``POST /v1/traces``, ``/v1/logs``, ``/v1/metrics``: OTLP/HTTP exports, answered with the signal's
``Export*ServiceResponse`` in the request's encoding (``partial_success`` naming what was rejected).

Refusals of a whole export are the contract's JSON errors: 400 (not an export), 401/403 (auth, Origin), 413
(too large, decompressed or in records), 415 (content type or encoding), 503 (the functions cannot take the
changes now: exporters retry, and the idempotency keys make the retry safe)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from ctxmeter.limits import OTLP_INLINE_BYTES
from schemas.models import ErrorCode
from ws_edge.keys import METRICS, NC, OTLP_WANTED, SETTINGS
from ws_edge.middleware import expect_continue
from ws_edge.otlp.decode import BodyEncoding, Signal, body_encoding, check_content_encoding, gunzip, parse
from ws_edge.otlp.decode import records as decode_records
from ws_edge.otlp.decode import response as encode_response
from ws_edge.otlp.ingest import Ingest, Tally, newest_per_session
from ws_edge.otlp.mapping import CLAUDE_UNREAD, MeterChange, map_record
from ws_edge.security import TOKEN_PARAM, Grant, Refused, authorize

PATHS: Final = {signal: f"/v1/{signal}" for signal in Signal}


@dataclass(frozen=True, slots=True)
class Export:
    """An export's body as received, and what reading it needs."""

    signal: Signal
    encoding: BodyEncoding
    data: bytes
    gzipped: bool
    wanted: frozenset[str]
    session_attributes: Sequence[str]
    grant: Grant | None


def _prepare(export: Export) -> tuple[list[MeterChange], Tally]:
    """The export's changes (one per session) and what its other records came to: all the CPU work of an
    export, run on a worker thread when the export is large."""
    data = gunzip(export.data) if export.gzipped else export.data
    decoded = decode_records(export.signal, parse(export.signal, export.encoding, data), export.wanted, CLAUDE_UNREAD)
    tally = Tally()
    if export.signal is Signal.METRICS:
        # Cumulative totals, not the context's size: counted, and they move no meter.
        tally.accept("metric", decoded.items)
        return [], tally
    results = (map_record(record, export.session_attributes) for record in decoded.records)
    return newest_per_session(results, export.grant, tally), tally


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
        if not app[NC].is_connected:
            # Changes now would only wait in the reconnect buffer until they time out: the exporter retries.
            raise Refused(503, ErrorCode.UNAVAILABLE, "not connected to NATS; retry shortly")
        data = await request.read()
        export = Export(signal, encoding, data, gzipped, app[OTLP_WANTED], settings.otlp_session_attributes, grant)
        if gzipped or len(data) > OTLP_INLINE_BYTES:
            changes, tally = await asyncio.to_thread(_prepare, export)
        else:
            changes, tally = _prepare(export)
        await Ingest(app[NC], app[METRICS], settings.request_timeout).apply(changes, tally)
        tally.record(app[METRICS], signal)
        if tally.unavailable is not None:
            raise Refused(503, ErrorCode.UNAVAILABLE, tally.unavailable)
        body = encode_response(signal, encoding, tally.rejected, tally.message())
        return web.Response(body=body, content_type=encoding.value)

    return handler


def setup_otlp_routes(app: web.Application) -> None:
    for signal, path in PATHS.items():
        app.router.add_post(path, exporter(signal), name=f"otlp_{signal}", expect_handler=expect_continue)
