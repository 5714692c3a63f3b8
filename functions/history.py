"""Each session's history: one point per committed change, kept in a JetStream stream.

Points are published on ``ctxmeter.history.<bucket>.<sid>`` after the change is committed
(``functions/store.py``, beside the change's event), with a plain publish (the stream stores it; the
update path waits for no second acknowledgement). The stream keeps the newest ``history_points`` per
session (a per-subject limit), drops points older than the bucket's TTL (so a session's history lives as
long as its state would without changes), and bounds the whole at ``history_max_bytes``, oldest first.

A history read gathers the session's points (at most ``history_points``) with a short-lived ordered
consumer and ends with the session's current state, so the last point is always the state a ``get``
returns, even if a point was lost on the way (a node failing between the commit and the publish).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, DiscardPolicy, StorageType, StreamConfig

from ctxmeter.bucket import NO_ANSWER, unavailable
from ctxmeter.limits import HISTORY_FETCH_BATCH, HISTORY_READ_TIMEOUT_S
from ctxmeter.settings import Settings
from schemas import subjects
from schemas.models import ContextHistory, HistoryPoint


def stream_name(settings: Settings) -> str:
    return f"{settings.kv_bucket}_HISTORY"


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=stream_name(settings),
        description="ctxmeter: each session's context changes, newest kept per session",
        subjects=[subjects.history_wildcard(settings.kv_bucket)],
        max_msgs_per_subject=settings.history_points,
        max_age=settings.kv_ttl,
        max_bytes=settings.history_max_bytes,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        num_replicas=settings.kv_replicas,
    )


async def open_history(js: JetStreamContext, settings: Settings) -> None:
    """Make sure the history stream exists (created when missing; an operator may provision it)."""
    name = stream_name(settings)
    try:
        await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        pass
    except NO_ANSWER as error:
        raise unavailable(f"the history stream {name}", f"$JS.API.STREAM.INFO.{name}", error) from None
    else:
        return
    try:
        # Several processes may race here; creating an identical stream twice is accepted.
        await js.add_stream(stream_config(settings))
    except NO_ANSWER as error:
        raise unavailable(f"the history stream {name}", f"$JS.API.STREAM.CREATE.{name}", error) from None


class History:
    """Reads of the history stream (its points are published by ``SessionStore._announce``)."""

    def __init__(self, js: JetStreamContext, settings: Settings) -> None:
        self._js = js
        self._settings = settings

    async def read(self, session_id: str, limit: int, current: HistoryPoint | None) -> ContextHistory:
        """The newest ``limit`` points, oldest first, ending with ``current`` (the state now)."""
        if not self._settings.record_history:
            return ContextHistory(session_id=session_id, points=[current] if current is not None else [])
        newest: deque[HistoryPoint] = deque(maxlen=limit)
        subject = subjects.history(self._settings.kv_bucket, session_id)
        subscription = await self._js.pull_subscribe(
            subject,
            stream=stream_name(self._settings),
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=nats.js.api.AckPolicy.NONE,
                inactive_threshold=HISTORY_READ_TIMEOUT_S * 5,
                mem_storage=True,
                num_replicas=1,
            ),
        )
        consumer: str | None = None
        try:
            info = await subscription.consumer_info()
            consumer = info.name
            pending = info.num_pending or 0
            async with asyncio.timeout(HISTORY_READ_TIMEOUT_S):
                while pending > 0:
                    batch = await subscription.fetch(min(HISTORY_FETCH_BATCH, pending), timeout=HISTORY_READ_TIMEOUT_S)
                    pending -= len(batch)
                    for msg in batch:
                        with contextlib.suppress(ValueError):
                            newest.append(HistoryPoint.model_validate_json(msg.data))
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            if consumer is not None:
                # Gone by itself after its inactivity threshold anyway; deleting it now keeps the
                # server's consumer count flat under many history reads.
                with contextlib.suppress(Exception):
                    await self._js.delete_consumer(stream_name(self._settings), consumer)
        points = sorted(newest, key=lambda point: point.revision)
        if current is not None:
            points = (
                [point for point in points if point.revision < current.revision][-(limit - 1) :] if limit > 1 else []
            )
            points.append(current)
        return ContextHistory(session_id=session_id, points=points)
