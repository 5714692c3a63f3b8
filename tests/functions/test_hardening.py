"""One request must never take the functions down: bounded replies, bounded requests, counting off the
event loop, and a process that starts over when NATS closes its connection."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from ctxmeter.settings import Settings
from ctxmeter.supervise import supervise
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.limits import MAX_CHAT_MESSAGES
from schemas.models import ContextUsage, TokenCount
from schemas.subjects import ContextOp
from tests.functions.helpers import REQUEST_TIMEOUT_S, call, error, ok, wait_until


async def test_an_error_never_echoes_a_huge_field_name(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str
) -> None:
    huge = json.dumps({"k" * 4_500_000: 1}).encode()
    reply = error(await call(nc, subjects.context(ContextOp.SET, session_id), huge), "invalid_request")
    # The reply (body and header) stays small whatever the request held.
    assert len(reply.error.message) < 300
    assert len((await call(nc, subjects.context(ContextOp.SET, session_id), huge)).data) < 500
    # The functions are still connected and serving.
    assert ok(await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": 3}), ContextUsage).used == 3


@pytest.mark.parametrize(
    "payload",
    [
        {"k" * 100_000: 1},
        {"used": "x" * 1_000_000},
        {"used": 1, "model": "m" * 1_000_000},
        {"usage": {"prompt_tokens": "p" * 1_000_000}},
    ],
)
async def test_errors_quote_only_an_excerpt(
    nc: NATS, functions: FunctionsRuntime, session_id: str, payload: dict[str, object]
) -> None:
    msg = await call(nc, subjects.context(ContextOp.SET, session_id), payload)
    assert len(msg.data) < 2_000
    assert sum(len(key) + len(value) for key, value in (msg.headers or {}).items()) < 2_000


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ({"messages": [{"role": "r" * (7 * 1024 * 1024), "content": "hi"}]}, "role"),
        ({"messages": [{"role": "user", "name": "n" * 1_000, "content": "hi"}]}, "name"),
        ({"messages": [{"role": "user"}] * (MAX_CHAT_MESSAGES + 1)}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": ""}] * 1_001}]}, "content"),
    ],
)
async def test_every_part_of_a_chat_request_is_bounded(
    nc: NATS, functions: FunctionsRuntime, payload: dict[str, object], complaint: str
) -> None:
    reply = error(await call(nc, subjects.tokens_count(), payload), "invalid_request")
    assert complaint in reply.error.message


async def test_all_strings_of_the_messages_count_against_the_text_limit(
    nc: NATS, kv: KeyValue, settings: Settings
) -> None:
    runtime = FunctionsRuntime(settings.model_copy(update={"max_text_bytes": 1_000}))
    await runtime.start()
    try:
        # 20 messages whose content is empty but whose roles and names add up past the limit.
        messages = [{"role": "r" * 40, "name": "n" * 40, "content": ""} for _ in range(20)]
        error(await call(nc, subjects.tokens_count(), {"messages": messages}), "payload_too_large")
        assert ok(await call(nc, subjects.tokens_count(), {"messages": messages[:5]}), TokenCount).count > 0
    finally:
        await runtime.stop()


async def test_large_counts_of_any_shape_leave_the_event_loop_free(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    """Four counts of 10,000 small messages each, and a state read sent after them: were the counts made
    on the event loop, the read would be answered after them; it is answered first."""
    messages = [{"role": "user", "content": "the quick brown fox jumps over the lazy dog " * 8}] * MAX_CHAT_MESSAGES
    payload = json.dumps({"messages": messages, "model": "gpt-4o"}).encode()
    finished: list[str] = []

    async def count(index: int) -> None:
        await nc.request(subjects.tokens_count(), payload, timeout=60)
        finished.append(f"count-{index}")

    async def read() -> None:
        await asyncio.sleep(0.05)  # sent once the counts are under way
        await nc.request(subjects.context(ContextOp.GET, session_id), b"{}", timeout=60)
        finished.append("read")

    await asyncio.gather(*(count(index) for index in range(4)), read())
    assert finished.index("read") < 4, finished


async def test_a_connection_closed_by_nats_is_replaced(
    nc: NATS, kv: KeyValue, settings: Settings, session_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """nats-server closes a connection that publishes over max_payload; the functions then start over on
    a new connection instead of staying up and deaf."""
    caplog.set_level(logging.INFO)
    started: list[FunctionsRuntime] = []
    stop = asyncio.Event()
    running = asyncio.create_task(supervise(lambda: FunctionsRuntime(settings), stop, "functions", started.append))
    try:
        await wait_until(lambda: _true(bool(started)), "the functions to start")
        first = started[0]
        doomed = first.connection.nc
        # What one oversized reply used to do: the server answers -ERR and closes the connection.
        await doomed.publish("ctxmeter.test.oversized", b"", headers={"X-Pad": "p" * (doomed.max_payload + 10)})
        await wait_until(lambda: _true(doomed.is_closed), "the server to close the connection")
        await wait_until(lambda: _true(len(started) == 2), "the functions to start over", within=30)
        used = ok(await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": 4}), ContextUsage).used
        assert used == 4
    finally:
        stop.set()
        await asyncio.wait_for(running, REQUEST_TIMEOUT_S)
    assert any("lost NATS" in record.getMessage() for record in caplog.records)
    # Stopping after the loss is quiet: no traceback.
    assert not [record for record in caplog.records if record.exc_info]


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("field", ["text", "messages"])
async def test_a_text_tiktoken_cannot_split_is_a_clear_error(nc: NATS, functions: FunctionsRuntime, field: str) -> None:
    """A million spaces exhaust tiktoken's regex (its own ``encode_ordinary`` panics): invalid_request,
    not an internal error, and the service counts on."""
    text = " " * 1_000_001 + "x"
    payload = {"text": text} if field == "text" else {"messages": [{"role": "user", "content": text}]}
    reply = error(await call(nc, subjects.tokens_count(), payload), "invalid_request")
    assert "smaller parts" in reply.error.message
    assert ok(await call(nc, subjects.tokens_count(), {"text": "still counting"}), TokenCount).count == 2
