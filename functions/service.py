"""The thin adapter: wires every operation to NATS as one micro service and maps errors to replies."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request as MicroRequest
from nats.micro.service import Service, ServiceConfig
from pydantic import ValidationError

import ctxmeter
from functions import context, tokens
from functions.errors import CtxmeterError, Internal, InvalidSessionId, from_validation_error
from functions.operation import Deps, Operation
from schemas import subjects

log = logging.getLogger(__name__)

OPERATIONS: Final[tuple[Operation, ...]] = (*tokens.OPERATIONS, *context.OPERATIONS)

# Requests handled at once by one process. Beyond this the subscription stops taking messages, so
# NATS buffers (and eventually reports a slow consumer) instead of this process running out of memory.
MAX_IN_FLIGHT: Final = 1024

# Seconds shutdown waits for requests already being handled.
SHUTDOWN_GRACE_S: Final = 10.0


async def flush_subscriptions(nc: NATS) -> None:
    """Return once the server has every subscription made so far, so a caller told "serving" gets answers.

    nats-py's ``flush()`` writes its PING straight to the socket, ahead of SUBs still queued for its
    flusher task, so one PONG does not prove those SUBs arrived. The first flush hands them to the
    socket; the second PING follows them, and its PONG comes after the server has processed them.
    """
    await nc.flush()
    await nc.flush()


@dataclass
class _EndpointStats:
    """nats.py's micro endpoint counts errors only when its callback raises. Requests run in their own
    task here (so a large count does not hold up small ones), so errors and time are recorded on the
    endpoint from that task instead."""

    endpoint: Any

    def record(self, started_ns: int, error: CtxmeterError | None) -> None:
        ep = self.endpoint
        ep._processing_time += time.perf_counter_ns() - started_ns
        ep._average_processing_time = int(ep._processing_time / max(1, ep._num_requests))
        if error is not None:
            ep._num_errors += 1
            ep._last_error = f"{error.code}: {error.message}"


@dataclass
class FunctionsService:
    nc: NATS
    deps: Deps
    service: Service | None = None
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_IN_FLIGHT))
    errors_without_reply: int = 0

    async def start(self) -> Service:
        self.service = await add_service(
            self.nc,
            ServiceConfig(
                name=subjects.SERVICE_NAME,
                version=ctxmeter.__version__,
                description="Token counting and per-session context usage for AI agent sessions.",
                metadata={"encodings": "o200k_base,cl100k_base"},
                queue_group=subjects.QUEUE_GROUP,
            ),
        )
        groups = {
            name: self.service.add_group(name=name, queue_group=subjects.QUEUE_GROUP)
            for name in {op.group for op in OPERATIONS}
        }
        for op in OPERATIONS:
            stats = _EndpointStats(endpoint=None)
            await groups[op.group].add_endpoint(
                name=op.name,
                subject=subjects.endpoint_subject(op.name, per_session=op.per_session),
                handler=self._dispatcher(op, stats),
                metadata={"description": op.description, "accepts_publish": str(op.changes_state).lower()},
            )
            stats.endpoint = self.service._endpoints[-1]
        await flush_subscriptions(self.nc)
        return self.service

    def _dispatcher(self, op: Operation, stats: _EndpointStats) -> Any:
        async def dispatch(request: MicroRequest) -> None:
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(op, stats, request._msg))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

        return dispatch

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()

    async def _handle(self, op: Operation, stats: _EndpointStats, msg: Msg) -> None:
        started = time.perf_counter_ns()
        session_id: str | None = None
        error: CtxmeterError | None = None
        try:
            if op.per_session:
                try:
                    session_id = subjects.session_from_subject(msg.subject)
                except subjects.InvalidSessionId as bad:
                    raise InvalidSessionId(str(bad)) from None
            try:
                request = op.request_model.model_validate_json(msg.data or b"{}")
            except ValidationError as invalid:
                raise from_validation_error(invalid) from None
            reply = await op.handler(session_id, request, self.deps)
            if msg.reply:
                await self.nc.publish(msg.reply, reply.model_dump_json().encode())
        except CtxmeterError as known:
            error = known
        except Exception as unexpected:
            log.exception("handler failed", extra={"subject": msg.subject, "session_id": session_id})
            error = Internal(f"internal error: {type(unexpected).__name__}")
        finally:
            stats.record(started, error)
        if error is None:
            return
        log_extra = {"subject": msg.subject, "session_id": session_id, "code": error.code.value}
        if msg.reply:
            log.info("request rejected: %s", error.message, extra=log_extra)
            try:
                await self.nc.publish(msg.reply, error.reply_bytes(), headers=error.headers())
            except Exception:
                log.exception("could not send error reply", extra=log_extra)
        else:
            # A plain publish has nobody to tell: log and count it, never drop it silently.
            self.errors_without_reply += 1
            log.warning("published request rejected: %s", error.message, extra=log_extra)

    async def stop(self) -> None:
        """Stop taking requests, then let the ones in flight finish (bounded)."""
        if self.service is not None:
            await self.service.stop()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=SHUTDOWN_GRACE_S)
