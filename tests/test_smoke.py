"""End to end through real NATS: a count, an add and its event."""

from __future__ import annotations

import json

from nats.aio.client import Client as NATS

from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextUpdateEvent, ContextUsage, TokenCount
from schemas.subjects import ContextOp


async def test_count_and_add_publish_event(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    reply = await nc.request(subjects.tokens_count(), json.dumps({"text": "hello world", "model": "gpt-4"}).encode())
    assert TokenCount.model_validate_json(reply.data).count == 2

    events = await nc.subscribe(subjects.events(session_id))
    reply = await nc.request(subjects.context(ContextOp.ADD, session_id), b'{"tokens": 1234}')
    usage = ContextUsage.model_validate_json(reply.data)
    assert usage.used == 1234
    event = ContextUpdateEvent.model_validate_json((await events.next_msg(timeout=2)).data)
    assert event.data == usage
