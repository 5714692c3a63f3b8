"""A batch of records into meter changes: at most one per session (its newest record), each sent to the
functions as the operation's request with an idempotency key made from the record and its observed time.

So a replayed export applies nothing twice (the same record makes the same key), an export older than what a
session already shows changes nothing (its observed time is stale: the rule lives in the session's stored
state, so it holds across edges and retries), and browsers see the change as they see any other."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import nats.errors
from nats.aio.client import Client as NATS
from nats.micro.request import ERROR_CODE_HEADER

from ctxmeter.limits import OTLP_CONCURRENCY, OTLP_KEY_DIGEST_BYTES, OTLP_MESSAGE_CHARS
from schemas import subjects
from schemas.excerpt import shorten
from schemas.idempotency import DUPLICATE_HEADER, KEY_HEADER, OBSERVED_HEADER, STALE_HEADER
from schemas.models import ErrorReply
from ws_edge.metrics import EdgeMetrics
from ws_edge.otlp.decode import Record
from ws_edge.otlp.mapping import Ignored, MeterChange, Rejected, Result
from ws_edge.security import Grant

# Keys are ``otlp-`` and a digest of the record's bytes: the same record always makes the same key, and two
# records differ in their keys (16 bytes of BLAKE2b, as hex).
KEY_PREFIX: Final = "otlp-"
# Error codes of the functions that mean "not now" (retry the export), rather than "not this record".
RETRYABLE_STATUSES: Final = frozenset({"409", "500", "503"})

ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"


@dataclass
class Tally:
    """What a batch came to: records per (outcome, reason), the first rejections' messages, and whether the
    functions could not take some change now (the export is then answered 503, to be retried whole)."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    unavailable: str | None = None

    def accept(self, reason: str, n: int = 1) -> None:
        self.counts[(ACCEPTED, reason)] += n

    def reject(self, reason: str, message: str) -> None:
        self.counts[(REJECTED, reason)] += 1
        if sum(len(text) for text in self.messages) < OTLP_MESSAGE_CHARS:
            self.messages.append(message)

    @property
    def rejected(self) -> int:
        return sum(n for (outcome, _), n in self.counts.items() if outcome == REJECTED)

    def message(self) -> str:
        return shorten("; ".join(self.messages), OTLP_MESSAGE_CHARS)

    def record(self, metrics: EdgeMetrics, signal: str) -> None:
        for (outcome, reason), n in self.counts.items():
            metrics.otlp_records.labels(signal, outcome, reason).inc(n)


def record_key(record: Record) -> str:
    """The idempotency key of a record: a digest of its encoded bytes (protobuf or JSON alike decode to the
    same message), so every retry of an export makes the same keys."""
    data = record.source.SerializeToString(deterministic=True) if record.source is not None else repr(record).encode()
    return KEY_PREFIX + hashlib.blake2b(data, digest_size=OTLP_KEY_DIGEST_BYTES).hexdigest()


def newest_per_session(results: Iterable[Result], grant: Grant | None, tally: Tally) -> list[MeterChange]:
    """The change of each session's newest record (by time, then by position); the rest tallied."""
    newest: dict[str, MeterChange] = {}
    for result in results:
        if isinstance(result, Ignored):
            tally.accept(result.reason)
        elif isinstance(result, Rejected):
            tally.reject(result.reason, result.message)
        elif grant is not None and not grant.allows(result.session_id):
            tally.reject("forbidden", f"the token does not grant session '{result.session_id}'")
        else:
            held = newest.get(result.session_id)
            if held is not None:
                tally.accept("superseded")
                # Equal times: the later record in the export is the newer (exporters keep order).
                if result.record.time_ns < held.record.time_ns:
                    continue
            newest[result.session_id] = result
    return list(newest.values())


class Ingest:
    """Sends changes to the functions over NATS, as any client's requests."""

    def __init__(self, nc: NATS, metrics: EdgeMetrics, timeout_s: float) -> None:
        self._nc = nc
        self._metrics = metrics
        self._timeout = timeout_s

    async def apply(self, changes: list[MeterChange], tally: Tally) -> None:
        slots = asyncio.Semaphore(OTLP_CONCURRENCY)

        async def one(change: MeterChange) -> None:
            async with slots:
                await self._send(change, tally)

        await asyncio.gather(*(one(change) for change in changes))

    async def _send(self, change: MeterChange, tally: Tally) -> None:
        headers = {KEY_HEADER: record_key(change.record)}
        if change.record.time_ns:
            headers[OBSERVED_HEADER] = str(change.record.time_ns)
        subject = subjects.context(change.op, change.session_id)
        started = time.perf_counter()
        operation = subjects.operation_label(subject)
        try:
            reply = await self._nc.request(
                subject, json.dumps(change.body).encode(), timeout=self._timeout, headers=headers
            )
        except nats.errors.Error as error:
            outcome = type(error).__name__
            self._metrics.nats_latency.labels(operation, "nats_error").observe(time.perf_counter() - started)
            tally.unavailable = f"the functions could not be reached ({outcome}); retry"
            return
        reply_headers = reply.headers or {}
        code = reply_headers.get(ERROR_CODE_HEADER)
        self._metrics.nats_latency.labels(operation, "ok" if code is None else "error_reply").observe(
            time.perf_counter() - started
        )
        if code is None:
            if reply_headers.get(DUPLICATE_HEADER):
                tally.accept("duplicate")
            elif reply_headers.get(STALE_HEADER):
                tally.accept("stale")
            else:
                tally.accept("applied")
            return
        if code in RETRYABLE_STATUSES:
            tally.unavailable = "the functions could not apply a change now; retry"
            return
        try:
            detail = ErrorReply.model_validate_json(reply.data).error
            reason, message = detail.code.value, detail.message
        except ValueError:
            reason, message = "refused", "the functions refused the change"
        tally.reject(reason, f"session '{change.session_id}': {message}")
