"""The thin adapter: wires every operation to NATS as one micro service and maps errors to replies."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

from nats.aio.client import Client as NATS
from nats.micro.request import Handler as MicroHandler
from nats.micro.request import Request as MicroRequest
from nats.micro.service import Service, ServiceConfig
from prometheus_client import Histogram
from pydantic import ValidationError

import ctxmeter
from ctxmeter.limits import LOG_EXCERPT_CHARS, MAX_IN_FLIGHT, REFUSED_SUBJECT_CHARS, SHUTDOWN_GRACE_S
from ctxmeter.logs import Occasional
from functions import catalog, context, tokens
from functions.errors import CtxmeterError, Internal, InvalidSessionId, from_validation_error
from functions.idempotency import validate_key, validate_observed
from functions.metrics import FunctionsMetrics
from functions.microstats import EndpointStats, GuardedService, expects_reply, reply_subject
from functions.operation import Answer, Call, Deps, Operation
from schemas import subjects
from schemas.excerpt import excerpt, shorten
from schemas.idempotency import DUPLICATE_HEADER, KEY_HEADER, OBSERVED_HEADER, STALE_HEADER

log = logging.getLogger(__name__)

OPERATIONS: Final[tuple[Operation[Any], ...]] = (*tokens.OPERATIONS, *context.OPERATIONS, *catalog.OPERATIONS)


async def flush_subscriptions(nc: NATS) -> None:
    """Return once the server has every subscription made so far, so a caller told "serving" gets answers.

    nats-py's ``flush()`` writes its PING straight to the socket, ahead of SUBs still queued for its
    flusher task, so one PONG does not prove those SUBs arrived. The first flush hands them to the
    socket; the second PING follows them, and its PONG comes after the server has processed them.
    """
    await nc.flush()
    await nc.flush()


def _header_bytes(headers: dict[str, str]) -> int:
    # NATS/1.0 status line, "Key: Value\r\n" per header, and the blank line that ends them.
    return len("NATS/1.0\r\n\r\n") + sum(len(key) + len(value) + 4 for key, value in headers.items())


@dataclass
class FunctionsService:
    nc: NATS
    deps: Deps
    metrics: FunctionsMetrics
    # Replies go only to subjects under ``<inbox_prefix>.``.
    inbox_prefix: str = "_INBOX"
    service: Service | None = None
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_IN_FLIGHT))
    _latencies: dict[tuple[subjects.Operation, str], Histogram] = field(default_factory=dict)
    _refusals: Occasional = field(default_factory=lambda: Occasional(log, logging.WARNING))

    async def start(self) -> None:
        config = ServiceConfig(
            name=subjects.SERVICE_NAME,
            version=ctxmeter.__version__,
            description="Token counting and per-session context usage for AI agent sessions.",
            metadata={"encodings": "o200k_base,cl100k_base"},
            queue_group=subjects.QUEUE_GROUP,
        )
        self.service = GuardedService(self.nc, config, self.may_reply)
        await self.service.start()
        groups = {
            name: self.service.add_group(name=name, queue_group=subjects.QUEUE_GROUP)
            for name in {op.group for op in OPERATIONS}
        }
        for op in OPERATIONS:
            stats: list[EndpointStats] = []
            await groups[op.group].add_endpoint(
                name=op.op.value,
                subject=subjects.endpoint_subject(op.op),
                handler=self._dispatcher(op, stats),
                metadata={"description": op.description, "accepts_publish": str(op.changes_state).lower()},
            )
            stats.append(EndpointStats.of_last_endpoint(self.service))
        await flush_subscriptions(self.nc)

    def _dispatcher(self, op: Operation[Any], stats: list[EndpointStats]) -> MicroHandler:
        async def dispatch(request: MicroRequest) -> None:
            reply = reply_subject(request)
            if reply and not self.may_reply(reply, op.op.value):
                # Before any work: not parsed, not applied, not answered.
                stats[0].record(time.perf_counter_ns(), "refused: the reply subject is not an inbox")
                return
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(op, stats[0], request))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

        return dispatch

    def may_reply(self, reply: str, endpoint: str) -> bool:
        """Whether a request's answer may go to ``reply``: only an inbox. Anything else (a KV key, a
        history or event subject, the JetStream API...) is refused, counted, and logged now and then."""
        if subjects.is_inbox(reply, self.inbox_prefix):
            return True
        self.metrics.replies_refused.labels(endpoint).inc()
        self._refusals.happened(
            "refused requests whose reply subject is not under %s., latest to %s: %s",
            self.inbox_prefix,
            endpoint,
            excerpt(reply, REFUSED_SUBJECT_CHARS),
        )
        return False

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()

    async def _handle(self, op: Operation[Any], stats: EndpointStats, request: MicroRequest) -> None:
        started = time.perf_counter_ns()
        session_id: str | None = None
        error: CtxmeterError | None = None
        try:
            if op.per_session:
                try:
                    session_id = subjects.session_from_subject(request.subject)
                except subjects.InvalidSessionId as bad:
                    raise InvalidSessionId(str(bad)) from None
            headers = request.headers or {}
            key = validate_key(headers.get(KEY_HEADER)) if op.changes_state else None
            observed = validate_observed(headers.get(OBSERVED_HEADER)) if op.changes_state else None
            try:
                body = op.request_model.model_validate_json(request.data or b"{}")
            except ValidationError as invalid:
                raise from_validation_error(invalid) from None
            answer = await op.handler(Call(body=body, session=session_id, key=key, observed=observed), self.deps)
            await self._respond(request, answer if isinstance(answer, Answer) else Answer(answer))
        except CtxmeterError as known:
            error = known
        except Exception as unexpected:
            log.exception("handler failed", extra={"subject": request.subject, "session_id": session_id})
            error = Internal(f"internal error: {type(unexpected).__name__}")
        finally:
            stats.record(started, None if error is None else f"{error.code}: {error.message}")
            outcome = "ok" if error is None else error.code.value
            self._latency(op, outcome).observe((time.perf_counter_ns() - started) / 1e9)
        if error is not None:
            await self._reject(request, error, session_id)

    def _latency(self, op: Operation[Any], outcome: str) -> Histogram:
        """The latency histogram of (endpoint, outcome), looked up once (``labels`` takes a lock and
        checks its arguments on every call)."""
        child = self._latencies.get((op.op, outcome))
        if child is None:
            child = self._latencies[(op.op, outcome)] = self.metrics.latency.labels(op.op.value, outcome)
        return child

    async def _respond(self, request: MicroRequest, answer: Answer) -> None:
        if not expects_reply(request):
            return  # a plain publish: nobody to answer, nothing to serialize
        data = answer.reply if isinstance(answer.reply, bytes) else answer.reply.model_dump_json().encode()
        headers = {DUPLICATE_HEADER: "true"} if answer.duplicate else {STALE_HEADER: "true"} if answer.stale else None
        if len(data) + _header_bytes(headers or {}) > self.nc.max_payload:
            # Publishing it would make nats-server close this connection.
            raise Internal(f"the reply ({len(data)} bytes) is larger than NATS accepts")
        await request.respond(data, headers=headers)

    async def _reject(self, request: MicroRequest, error: CtxmeterError, session_id: str | None) -> None:
        log_extra = {"subject": request.subject, "session_id": session_id, "code": error.code.value}
        message = shorten(error.message, LOG_EXCERPT_CHARS)
        if not expects_reply(request):
            # A plain publish has nobody to tell: log and count it, never drop it silently.
            self.metrics.errors.labels(error.code.value, "none").inc()
            log.warning("published request rejected: %s", message, extra=log_extra)
            return
        headers = error.headers()
        data = error.reply_bytes()
        if len(data) + _header_bytes(headers) > self.nc.max_payload:
            # Cannot happen with bounded messages; were it to, a generic error still gets through.
            error = Internal("internal error: the error reply was too large")
            headers, data = error.headers(), error.reply_bytes()
        try:
            await request.respond(data, headers=headers)
        except Exception:
            log.exception("could not send an error reply", extra=log_extra)
            return
        self.metrics.errors.labels(error.code.value, "sent").inc()
        log.info("request rejected: %s", message, extra=log_extra)

    async def stop(self) -> None:
        """Stop taking requests, then let the ones in flight finish (bounded)."""
        # A connection NATS already closed has no subscriptions left to remove.
        if self.service is not None and not self.nc.is_closed:
            await self.service.stop()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=SHUTDOWN_GRACE_S)
