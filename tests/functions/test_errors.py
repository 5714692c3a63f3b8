"""Every error code over NATS: JSON body, micro headers, and bad input changing no state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ctxmeter.bucket import open_bucket
from ctxmeter.settings import Settings
from functions.errors import (
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    Conflict,
    CtxmeterError,
    Internal,
    InvalidJson,
    InvalidRequest,
    InvalidSessionId,
    PayloadTooLarge,
    UnknownModel,
)
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextUsage, ErrorReply, TokenCount, TokenUsage
from schemas.subjects import ContextOp
from tests.functions.conftest import WatchEvents
from tests.functions.helpers import (
    STATUS_OF_CODE,
    body,
    call,
    error,
    kv_revision,
    kv_value,
    next_event,
    ok,
)

SMALL_TEXT_LIMIT = 64

INVALID_JSON: list[bytes] = [
    b"{",
    b"not json",
    b"\xff\xfe\x00",
    b'{"tokens": 1,}',
    b"{'tokens': 1}",
    b'{"text": "\\ud800"}',
]

# (op, body) pairs that must be invalid_request.
INVALID_CONTEXT_REQUESTS: list[tuple[ContextOp, Any]] = [
    (ContextOp.ADD, {"tokens": "5"}),
    (ContextOp.ADD, {"tokens": 5.0}),
    (ContextOp.ADD, {"tokens": 5.5}),
    (ContextOp.ADD, {"tokens": 1e3}),
    (ContextOp.ADD, {"tokens": True}),
    (ContextOp.ADD, {"tokens": None}),
    (ContextOp.ADD, {"tokens": -1}),
    (ContextOp.ADD, {"tokens": 2**53}),
    (ContextOp.ADD, {"tokens": 10**400}),
    (ContextOp.ADD, {"tokens": 1, "extra": 1}),
    (ContextOp.ADD, {}),
    (ContextOp.ADD, []),
    (ContextOp.ADD, None),
    (ContextOp.ADD, "5"),
    (ContextOp.ADD, 5),
    (ContextOp.FREE, {"tokens": -5}),
    (ContextOp.FREE, {"token": 5}),
    (ContextOp.SET, {"used": "1"}),
    (ContextOp.SET, {"used": 1.0}),
    (ContextOp.SET, {"used": -1}),
    (ContextOp.SET, {"used": 1, "total": 0}),
    (ContextOp.SET, {"used": 1, "total": -10}),
    (ContextOp.SET, {"used": 1, "totl": 10}),
    (ContextOp.SET, {"used": 1, "model": ""}),
    (ContextOp.SET, {"used": 1, "model": 5}),
    (ContextOp.SET, {"total": 10}),
    (ContextOp.USAGE, {"usage": {}}),
    (ContextOp.USAGE, {"usage": {"prompt_tokens": -1}}),
    (ContextOp.USAGE, {"usage": {"prompt_tokens": "10"}}),
    (ContextOp.USAGE, {"usage": {"input_tokens": 1.5}}),
    (ContextOp.USAGE, {"usage": {"total_tokens": 10}}),
    (ContextOp.USAGE, {"usage": 10}),
    (ContextOp.USAGE, {}),
    (ContextOp.GET, {"anything": 1}),
    (ContextOp.RESET, {"used": 0}),
    (ContextOp.RESET, []),
]

INVALID_TOKEN_REQUESTS: list[Any] = [
    {},
    {"text": "a", "messages": []},
    {"text": 5},
    {"text": None},
    {"text": "a", "encoding": "p50k_base"},
    {"text": "a", "model": ""},
    {"text": "a", "extra": True},
    {"messages": [{"content": "no role"}]},
    {"messages": [{"role": "", "content": "x"}]},
    {"messages": [{"role": "user", "content": 5}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
    {"messages": "hello"},
    [],
    '"text"',
]

INVALID_DRAFTS: list[Any] = [
    {},
    {"text": 1},
    {"text": "a", "max": 0},
    {"text": "a", "max": -1},
    {"text": "a", "max": 10.0},
    {"text": "a", "max": "10"},
    {"text": "a", "encoding": "cl100k_base"},
    {"text": "a", "extra": 1},
    {"messages": []},
]

BAD_SESSION_TOKENS = ["x" * 129, "é", "a\u00a0b", "*", ">", "a#b", "日本"]


@pytest.fixture
async def seeded(nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str) -> int:
    """A session with stored context and draft state; returns the context revision."""
    usage = ok(await call(nc, subjects.context(ContextOp.SET, session_id), {"used": 100, "total": 1_000}), ContextUsage)
    ok(await call(nc, subjects.tokens_draft(session_id), {"text": "draft"}), TokenUsage)
    return usage.revision


async def _assert_unchanged_then_next_event_is_ours(
    nc: NATS, kv: KeyValue, session_id: str, before: dict[str, bytes | None], sub_events: Any
) -> None:
    """KV holds exactly what it held, and the first event since is the one a good request makes now."""
    for key, value in before.items():
        assert await kv_value(kv, key) == value, key
    usage = ok(await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": 1}), ContextUsage)
    assert (await next_event(sub_events)).data == usage


async def _snapshot(kv: KeyValue, session_id: str) -> dict[str, bytes | None]:
    keys = [subjects.context_key(session_id), subjects.tokens_key(session_id)]
    return {key: await kv_value(kv, key) for key in keys}


@pytest.mark.parametrize("payload", INVALID_JSON)
@pytest.mark.parametrize("op", [ContextOp.ADD, ContextOp.SET, ContextOp.GET, "draft", "count"])
async def test_invalid_json(
    nc: NATS, kv: KeyValue, seeded: int, session_id: str, op: ContextOp | str, payload: bytes, watch_events: WatchEvents
) -> None:
    events = await watch_events(session_id)
    before = await _snapshot(kv, session_id)
    if op == "draft":
        subject = subjects.tokens_draft(session_id)
    elif op == "count":
        subject = subjects.tokens_count()
    else:
        assert isinstance(op, ContextOp)
        subject = subjects.context(op, session_id)
    error(await call(nc, subject, payload), "invalid_json")
    await _assert_unchanged_then_next_event_is_ours(nc, kv, session_id, before, events)


async def test_invalid_context_requests_change_nothing(
    nc: NATS, kv: KeyValue, seeded: int, session_id: str, watch_events: WatchEvents
) -> None:
    events = await watch_events(session_id)
    before = await _snapshot(kv, session_id)
    for op, payload in INVALID_CONTEXT_REQUESTS:
        reply = error(await call(nc, subjects.context(op, session_id), body(payload)), "invalid_request")
        assert reply.error.message, (op, payload)
    assert await kv_revision(kv, subjects.context_key(session_id)) == seeded
    await _assert_unchanged_then_next_event_is_ours(nc, kv, session_id, before, events)


async def test_invalid_token_requests(
    nc: NATS, kv: KeyValue, seeded: int, session_id: str, watch_events: WatchEvents
) -> None:
    events = await watch_events(session_id)
    before = await _snapshot(kv, session_id)
    for payload in INVALID_TOKEN_REQUESTS:
        error(await call(nc, subjects.tokens_count(), body(payload)), "invalid_request")
    for payload in INVALID_DRAFTS:
        error(await call(nc, subjects.tokens_draft(session_id), body(payload)), "invalid_request")
    await _assert_unchanged_then_next_event_is_ours(nc, kv, session_id, before, events)


async def test_error_message_names_the_field(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    reply = error(await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": "5"}), "invalid_request")
    assert "tokens" in reply.error.message
    reply = error(
        await call(nc, subjects.context(ContextOp.SET, session_id), {"used": 1, "totl": 2}), "invalid_request"
    )
    assert "totl" in reply.error.message


@pytest.mark.parametrize("token", BAD_SESSION_TOKENS)
@pytest.mark.parametrize("family", ["get", "set", "add", "free", "usage", "reset", "draft"])
async def test_invalid_session_id_over_nats(nc: NATS, functions: FunctionsRuntime, family: str, token: str) -> None:
    group = "tokens" if family == "draft" else "context"
    subject = f"ctxmeter.{group}.{family}.{token}"
    # A body that would be valid, so the session id is the only thing wrong.
    valid_bodies: dict[str, dict[str, Any]] = {
        "draft": {"text": "x"},
        "set": {"used": 1},
        "add": {"tokens": 1},
        "free": {"tokens": 1},
        "usage": {"usage": {"prompt_tokens": 1}},
    }
    payload = valid_bodies.get(family, {})
    reply = error(await call(nc, subject, payload), "invalid_session_id")
    assert "session id" in reply.error.message


async def test_invalid_session_id_is_checked_before_the_body(nc: NATS, functions: FunctionsRuntime) -> None:
    error(await call(nc, "ctxmeter.context.add.é", b"{not json"), "invalid_session_id")


async def test_unknown_model_changes_nothing(
    nc: NATS, kv: KeyValue, seeded: int, session_id: str, watch_events: WatchEvents
) -> None:
    events = await watch_events(session_id)
    before = await _snapshot(kv, session_id)
    unknown_model_requests: list[tuple[str, dict[str, Any]]] = [
        (subjects.tokens_count(), {"text": "hi", "model": "no-such-model"}),
        (subjects.tokens_count(), {"messages": [], "model": "gpt-9"}),
        (subjects.tokens_draft(session_id), {"text": "hi", "model": "no-such-model"}),
        (subjects.context(ContextOp.SET, session_id), {"used": 5, "model": "no-such-model"}),
    ]
    for subject, payload in unknown_model_requests:
        reply = error(await call(nc, subject, payload), "unknown_model")
        assert "no-such-model" in reply.error.message or "gpt-9" in reply.error.message
    await _assert_unchanged_then_next_event_is_ours(nc, kv, session_id, before, events)


@pytest.fixture
async def small_functions(settings: Settings, kv: KeyValue) -> AsyncIterator[FunctionsRuntime]:
    """The functions with a tiny text limit."""
    runtime = FunctionsRuntime(settings.model_copy(update={"max_text_bytes": SMALL_TEXT_LIMIT}))
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def test_payload_too_large(
    nc: NATS, kv: KeyValue, small_functions: FunctionsRuntime, session_id: str, watch_events: WatchEvents
) -> None:
    ok(await call(nc, subjects.tokens_draft(session_id), {"text": "x" * SMALL_TEXT_LIMIT}), TokenUsage)
    events = await watch_events(session_id)
    before = await _snapshot(kv, session_id)
    too_long = "x" * (SMALL_TEXT_LIMIT + 1)
    multibyte = "é" * (SMALL_TEXT_LIMIT // 2 + 1)  # fewer characters than the limit, more bytes
    too_large_requests: list[tuple[str, dict[str, Any]]] = [
        (subjects.tokens_count(), {"text": too_long}),
        (subjects.tokens_count(), {"text": multibyte}),
        (subjects.tokens_count(), {"messages": [{"role": "user", "content": too_long}]}),
        (
            subjects.tokens_count(),
            {"messages": [{"role": "user", "content": "x" * 40}, {"role": "user", "content": "y" * 40}]},
        ),
        (subjects.tokens_draft(session_id), {"text": too_long}),
        (subjects.tokens_draft(session_id), {"text": multibyte, "model": "gpt-4o"}),
    ]
    for subject, payload in too_large_requests:
        reply = error(await call(nc, subject, payload), "payload_too_large")
        assert str(SMALL_TEXT_LIMIT) in reply.error.message
    # At the limit is fine.
    ok(await call(nc, subjects.tokens_count(), {"text": "é" * (SMALL_TEXT_LIMIT // 2)}), TokenCount)
    await _assert_unchanged_then_next_event_is_ours(nc, kv, session_id, before, events)


async def test_internal_error_when_the_bucket_is_gone(
    nc: NATS, js: JetStreamContext, kv: KeyValue, settings: Settings, functions: FunctionsRuntime, session_id: str
) -> None:
    """A real fault (the bucket deleted under the functions) is a 500 with both headers, not a crash."""
    await js.delete_key_value(settings.kv_bucket)
    try:
        reply = error(await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": 1}), "internal")
        assert "JetStream" in reply.error.message
    finally:
        await open_bucket(js, settings)  # for the kv fixture to delete
    # The handler survived: counting still answers.
    assert (await call(nc, subjects.tokens_count(), {"text": "still here"})).data


@pytest.mark.parametrize(
    ("error_class", "code", "status"),
    [
        (InvalidJson, "invalid_json", 400),
        (InvalidRequest, "invalid_request", 400),
        (InvalidSessionId, "invalid_session_id", 400),
        (UnknownModel, "unknown_model", 404),
        (PayloadTooLarge, "payload_too_large", 413),
        (Conflict, "conflict", 409),
        (Internal, "internal", 500),
    ],
)
def test_error_classes_map_to_codes_and_headers(error_class: type[CtxmeterError], code: str, status: int) -> None:
    raised = error_class("what went wrong")
    assert raised.headers() == {ERROR_HEADER: "what went wrong", ERROR_CODE_HEADER: str(status)}
    assert STATUS_OF_CODE[code] == str(status)
    parsed = ErrorReply.model_validate_json(raised.reply_bytes())
    assert (parsed.error.code.value, parsed.error.message) == (code, "what went wrong")


async def test_client_text_cannot_inject_headers(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    """A field name quoted in the message is escaped: CR/LF never reach the Nats-Service-Error header."""
    payload = {"used": 1, "x\r\nInjected: yes": 1, "\n": 2}
    reply = error(await call(nc, subjects.context(ContextOp.SET, session_id), payload), "invalid_request")
    assert "x\\r\\nInjected: yes" in reply.error.message
    assert "\r" not in reply.error.message
    assert "\n" not in reply.error.message
    headers = (await call(nc, subjects.context(ContextOp.SET, session_id), payload)).headers or {}
    assert set(headers) == {ERROR_HEADER, ERROR_CODE_HEADER}
    error(await call(nc, subjects.tokens_count(), {"text": "x", "model": "evil\r\nInjected: yes"}), "unknown_model")
