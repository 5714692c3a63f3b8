"""Requests to the functions over NATS, answered as HTTP responses.

The edge stays thin: it forwards the body as it came, and the functions validate it. Their error
replies (an ``ErrorReply`` body with the micro ``Nats-Service-Error-Code`` header) keep their body and
take that code as the HTTP status; NATS itself failing (no responder, timeout, disconnected) is 503.
"""

from __future__ import annotations

import time
from typing import Final

import nats.errors
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.micro.request import ERROR_CODE_HEADER

from schemas import subjects
from schemas.idempotency import DUPLICATE_HEADER
from schemas.models import ErrorCode
from ws_edge.metrics import EdgeMetrics
from ws_edge.responses import error_response, json_response

# A micro error code outside the HTTP error range is not something to pass on as a status.
HTTP_ERROR_STATUSES: Final = range(400, 600)


class FunctionsClient:
    def __init__(self, nc: NATS, metrics: EdgeMetrics, timeout_s: float) -> None:
        self._nc = nc
        self._metrics = metrics
        self._timeout = timeout_s

    async def call(self, subject: str, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
        operation = subjects.operation_label(subject)
        if not self._nc.is_connected:
            # A request now would only sit in the reconnect buffer until it times out.
            self._metrics.nats_latency.labels(operation, "disconnected").observe(0)
            return error_response(503, ErrorCode.UNAVAILABLE, "not connected to NATS; retry shortly")
        started = time.perf_counter()
        response, outcome = await self._request(subject, body, headers)
        self._metrics.nats_latency.labels(operation, outcome).observe(time.perf_counter() - started)
        return response

    async def _request(self, subject: str, body: bytes, headers: dict[str, str] | None) -> tuple[web.Response, str]:
        try:
            reply = await self._nc.request(subject, body, timeout=self._timeout, headers=headers)
        except nats.errors.NoRespondersError:
            return error_response(503, ErrorCode.UNAVAILABLE, "no ctxmeter functions are running"), "no_responders"
        except nats.errors.TimeoutError:
            message = f"the functions did not answer in {self._timeout:g} s"
            return error_response(503, ErrorCode.UNAVAILABLE, message), "timeout"
        except nats.errors.MaxPayloadError:
            message = "the request is larger than NATS accepts"
            return error_response(413, ErrorCode.PAYLOAD_TOO_LARGE, message), "too_large"
        except nats.errors.Error as error:
            message = f"NATS request failed: {type(error).__name__}"
            return error_response(503, ErrorCode.UNAVAILABLE, message), "nats_error"
        reply_headers = reply.headers or {}
        code = reply_headers.get(ERROR_CODE_HEADER)
        if code is None:
            response = json_response(200, reply.data)
            if reply_headers.get(DUPLICATE_HEADER):
                response.headers[DUPLICATE_HEADER] = reply_headers[DUPLICATE_HEADER]
            return response, "ok"
        try:
            status = int(code)
        except ValueError:
            status = 500
        return json_response(status if status in HTTP_ERROR_STATUSES else 500, reply.data), "error_reply"
