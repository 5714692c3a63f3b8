"""A plain publish (no reply subject) to a state-changing subject: applied, or counted and logged."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextUpdateEvent, ContextUsage, TokenCountEvent
from schemas.subjects import ContextOp
from tests.functions.conftest import WatchEvents
from tests.functions.helpers import body, call, kv_revision, kv_value, next_event, ok, wait_until


def _errors_without_reply(functions: FunctionsRuntime) -> int:
    """Rejected plain publishes, as ``ctxmeter_functions_errors_total{reply="none"}`` counts them."""
    registry = functions.metrics.registry
    return int(
        sum(
            sample.value
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name == "ctxmeter_functions_errors_total" and sample.labels.get("reply") == "none"
        )
    )


@pytest.mark.parametrize(
    ("op", "payload", "used"),
    [
        (ContextOp.SET, {"used": 700, "total": 1_000}, 700),
        (ContextOp.ADD, {"tokens": 50}, 150),
        (ContextOp.FREE, {"tokens": 30}, 70),
        (ContextOp.USAGE, {"usage": {"input_tokens": 10, "output_tokens": 5}}, 15),
        (ContextOp.RESET, {}, 0),
    ],
)
async def test_plain_publish_is_applied(
    nc: NATS,
    kv: KeyValue,
    functions: FunctionsRuntime,
    session_id: str,
    op: ContextOp,
    payload: dict[str, Any],
    used: int,
    watch_events: WatchEvents,
) -> None:
    if op != ContextOp.SET:
        ok(await call(nc, subjects.context(ContextOp.SET, session_id), {"used": 100, "total": 1_000}), ContextUsage)
    events = await watch_events(session_id)
    await nc.publish(subjects.context(op, session_id), body(payload))
    event = await next_event(events)
    assert isinstance(event, ContextUpdateEvent)
    assert event.data.used == used
    assert event.data.revision == await kv_revision(kv, subjects.context_key(session_id))
    assert ok(await call(nc, subjects.context(ContextOp.GET, session_id), {}), ContextUsage) == event.data
    assert _errors_without_reply(functions) == 0


async def test_plain_publish_of_a_draft_is_stored_and_published(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str, watch_events: WatchEvents
) -> None:
    events = await watch_events(session_id)
    await nc.publish(subjects.tokens_draft(session_id), body({"text": "hello world", "max": 10}))
    event = await next_event(events)
    assert isinstance(event, TokenCountEvent)
    assert (event.data.count, event.data.max, event.data.percentage) == (2, 10, 20.0)
    assert event.data.revision == await kv_revision(kv, subjects.tokens_key(session_id))


@pytest.mark.parametrize(
    ("subject_of", "payload", "code"),
    [
        (lambda sid: subjects.context(ContextOp.ADD, sid), b'{"tokens": "5"}', "invalid_request"),
        (lambda sid: subjects.context(ContextOp.SET, sid), b"{broken", "invalid_json"),
        (lambda sid: subjects.context(ContextOp.FREE, sid), b'{"tokens": -1}', "invalid_request"),
        (
            lambda sid: subjects.context(ContextOp.SET, sid),
            b'{"used": 1, "model": "x"}',
            "unknown_model",
        ),
        (
            lambda sid: subjects.context(ContextOp.USAGE, sid),
            b'{"usage": {"prompt_tokens": 1, "input_tokens": 1}}',
            "invalid_request",
        ),
        (lambda sid: subjects.tokens_draft(sid), b'{"text": 1}', "invalid_request"),
        (lambda sid: "ctxmeter.context.add." + "x" * 129, b'{"tokens": 5}', "invalid_session_id"),
    ],
)
async def test_bad_plain_publish_is_counted_logged_and_changes_nothing(
    nc: NATS,
    kv: KeyValue,
    functions: FunctionsRuntime,
    session_id: str,
    caplog: pytest.LogCaptureFixture,
    subject_of: Any,
    payload: bytes,
    code: str,
    watch_events: WatchEvents,
) -> None:
    ok(await call(nc, subjects.context(ContextOp.SET, session_id), {"used": 100, "total": 1_000}), ContextUsage)
    keys = [subjects.context_key(session_id), subjects.tokens_key(session_id)]
    before = {key: await kv_value(kv, key) for key in keys}
    events = await watch_events(session_id)
    caplog.set_level(logging.WARNING, logger="functions.service")
    subject: str = subject_of(session_id)

    await nc.publish(subject, payload)

    async def counted() -> bool:
        return _errors_without_reply(functions) == 1

    await wait_until(counted, "the rejected publish to be counted")
    rejected = [record for record in caplog.records if record.getMessage().startswith("published request rejected")]
    assert len(rejected) == 1
    assert getattr(rejected[0], "subject", None) == subject
    assert getattr(rejected[0], "code", None) == code
    assert rejected[0].levelno == logging.WARNING
    for key, value in before.items():
        assert await kv_value(kv, key) == value
    # No event was published for it: the next one is the next good change's.
    added = ok(await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": 1}), ContextUsage)
    assert (await next_event(events)).data == added
    assert added.used == 101
    # The handler kept serving, and requests with a reply are not counted as reply-less errors.
    await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": "bad"})
    assert _errors_without_reply(functions) == 1
