"""Every endpoint over real NATS: replies, KV state, and the events published after each change."""

from __future__ import annotations

import json
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from functions.counting import count_text_now
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import (
    ContextLevel,
    ContextUpdateEvent,
    ContextUsage,
    Encoding,
    TokenCount,
    TokenCountEvent,
    TokenUsage,
)
from schemas.subjects import ContextOp
from tests.functions.conftest import WatchEvents
from tests.functions.helpers import call, error, kv_revision, next_event, ok

DEFAULT_WINDOW = 200_000


def _hello(tokens: int) -> str:
    """A text of exactly ``tokens`` o200k tokens."""
    text = "hello" + " hello" * (tokens - 1)
    assert count_text_now(text, Encoding.O200K_BASE) == tokens
    return text


# -- tokens.count ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        ({"text": "hello world"}, (2, None, "o200k_base", True)),
        ({"text": "hello world", "encoding": "cl100k_base"}, (2, None, "cl100k_base", True)),
        ({"text": "hello world", "model": "gpt-4o"}, (2, "gpt-4o", "o200k_base", True)),
        ({"text": "hello world", "model": "gpt-4"}, (2, "gpt-4", "cl100k_base", True)),
        ({"text": "hello world", "model": "claude-sonnet-4"}, (2, "claude-sonnet-4", "cl100k_base", False)),
        ({"text": "hello world", "model": "gpt-4o", "encoding": "cl100k_base"}, (2, "gpt-4o", "cl100k_base", False)),
        ({"text": "hello world", "model": "my-llm", "encoding": "o200k_base"}, (2, "my-llm", "o200k_base", False)),
        ({"text": ""}, (0, None, "o200k_base", True)),
        ({"text": "<|endoftext|>", "encoding": "cl100k_base"}, (7, None, "cl100k_base", True)),
        (
            {"messages": [{"role": "user", "content": "hello world"}], "model": "gpt-4o"},
            (9, "gpt-4o", "o200k_base", True),
        ),
        ({"messages": []}, (3, None, "o200k_base", True)),
    ],
)
async def test_tokens_count(
    nc: NATS, functions: FunctionsRuntime, request_body: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    if "text" in request_body:
        encoding = Encoding(expected[2])
        assert expected[0] == count_text_now(request_body["text"], encoding)
    reply = ok(await call(nc, subjects.tokens_count(), request_body), TokenCount)
    assert (reply.count, reply.model, reply.encoding.value, reply.exact) == expected


async def test_tokens_count_large_text_is_exact(nc: NATS, functions: FunctionsRuntime) -> None:
    text = "The quick brown fox, 123 jumps! 日本語 " * 20_000  # over the inline threshold: runs in the pool
    reply = ok(await call(nc, subjects.tokens_count(), {"text": text, "encoding": "cl100k_base"}), TokenCount)
    assert reply.count == count_text_now(text, Encoding.CL100K_BASE)


# -- tokens.draft ---------------------------------------------------------------------------


async def test_draft_is_stored_and_published(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str, watch_events: WatchEvents
) -> None:
    events = await watch_events(session_id)
    reply = ok(
        await call(nc, subjects.tokens_draft(session_id), {"text": "hello world", "model": "gpt-4o"}), TokenUsage
    )
    assert reply.session_id == session_id
    assert (reply.count, reply.max, reply.model, reply.encoding, reply.exact) == (
        2,
        128_000,
        "gpt-4o",
        Encoding.O200K_BASE,
        True,
    )
    assert reply.percentage == 0.0
    assert (reply.warning, reply.level) == (False, ContextLevel.NORMAL)
    assert reply.revision == await kv_revision(kv, subjects.tokens_key(session_id))
    event = await next_event(events)
    assert isinstance(event, TokenCountEvent)
    assert (event.type, event.session_id, event.data) == ("token_count", session_id, reply)
    assert event.timestamp > 0

    second = ok(await call(nc, subjects.tokens_draft(session_id), {"text": "hello", "model": "gpt-4o"}), TokenUsage)
    assert second.revision > reply.revision
    assert second.count == 1
    event = await next_event(events)
    assert event.data == second


@pytest.mark.parametrize(
    ("request_extra", "expected_max"),
    [
        ({"max": 50}, 50),
        ({"model": "gpt-4"}, 8_192),
        ({"model": "gpt-4", "max": 1_000}, 1_000),
        ({}, 8_000),
    ],
)
async def test_draft_max(
    nc: NATS, functions: FunctionsRuntime, session_id: str, request_extra: dict[str, Any], expected_max: int
) -> None:
    reply = ok(await call(nc, subjects.tokens_draft(session_id), {"text": "hi", **request_extra}), TokenUsage)
    assert reply.max == expected_max


@pytest.mark.parametrize(
    ("count", "limit", "percentage", "warning", "level"),
    [
        (80, 101, 79.21, False, ContextLevel.NORMAL),
        (80, 100, 80.0, True, ContextLevel.WARNING),
        (80, 85, 94.12, True, ContextLevel.WARNING),
        (80, 84, 95.24, True, ContextLevel.CRITICAL),
        (80, 80, 100.0, True, ContextLevel.CRITICAL),
        (80, 10, 100.0, True, ContextLevel.CRITICAL),
    ],
)
async def test_draft_thresholds(
    nc: NATS,
    functions: FunctionsRuntime,
    session_id: str,
    count: int,
    limit: int,
    percentage: float,
    warning: bool,
    level: ContextLevel,
) -> None:
    reply = ok(await call(nc, subjects.tokens_draft(session_id), {"text": _hello(count), "max": limit}), TokenUsage)
    assert (reply.count, reply.max) == (count, limit)
    assert (reply.percentage, reply.warning, reply.level) == (percentage, warning, level)


# -- context --------------------------------------------------------------------------------


async def _context(nc: NATS, op: ContextOp, session_id: str, payload: dict[str, Any] | None = None) -> ContextUsage:
    return ok(await call(nc, subjects.context(op, session_id), payload if payload is not None else {}), ContextUsage)


async def test_get_zero_state(nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str) -> None:
    usage = await _context(nc, ContextOp.GET, session_id)
    assert (usage.session_id, usage.used, usage.total, usage.percentage) == (session_id, 0, DEFAULT_WINDOW, 0.0)
    assert (usage.level, usage.model, usage.revision) == (ContextLevel.NORMAL, None, 0)
    # An empty body works too, and reading stores nothing.
    assert ok(await call(nc, subjects.context(ContextOp.GET, session_id)), ContextUsage).used == 0
    assert await kv_revision(kv, subjects.context_key(session_id)) is None


async def test_context_lifecycle_publishes_each_change(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str, watch_events: WatchEvents
) -> None:
    events = await watch_events(session_id)
    steps: list[tuple[ContextOp, dict[str, Any], tuple[int, int, str | None]]] = [
        (ContextOp.ADD, {"tokens": 1_000}, (1_000, DEFAULT_WINDOW, None)),
        (ContextOp.ADD, {"tokens": 500}, (1_500, DEFAULT_WINDOW, None)),
        (ContextOp.SET, {"used": 4_000, "total": 10_000}, (4_000, 10_000, None)),
        (ContextOp.SET, {"used": 5_000, "model": "gpt-4o"}, (5_000, 128_000, "gpt-4o")),
        (ContextOp.FREE, {"tokens": 1_200}, (3_800, 128_000, "gpt-4o")),
        (ContextOp.FREE, {"tokens": 10_000}, (0, 128_000, "gpt-4o")),
        # A report naming no model: gpt-4o's window would be a stale one, so the default (a stated guess) stands.
        (ContextOp.USAGE, {"usage": {"prompt_tokens": 900, "completion_tokens": 100}}, (1_000, DEFAULT_WINDOW, None)),
        (
            ContextOp.USAGE,
            {
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 20,
                    "cache_creation_input_tokens": 300,
                    "cache_read_input_tokens": 4_000,
                },
                "model": "claude-sonnet-4-5",
            },
            (4_330, 200_000, "claude-sonnet-4-5"),
        ),
        (ContextOp.SET, {"used": 7, "total": 64, "model": "my-own-model"}, (7, 64, "my-own-model")),
        (ContextOp.RESET, {}, (0, 64, "my-own-model")),
    ]
    last_revision = 0
    for op, payload, (used, total, model) in steps:
        usage = await _context(nc, op, session_id, payload)
        assert (usage.used, usage.total, usage.model) == (used, total, model), (op, payload)
        assert usage.revision > last_revision
        assert usage.revision == await kv_revision(kv, subjects.context_key(session_id))
        event = await next_event(events)
        assert isinstance(event, ContextUpdateEvent)
        assert (event.type, event.session_id, event.data) == ("context_update", session_id, usage)
        last_revision = usage.revision
        got = await _context(nc, ContextOp.GET, session_id)
        assert got == usage
    # Reads publish nothing: the next event is the next change's.
    await _context(nc, ContextOp.GET, session_id)
    added = await _context(nc, ContextOp.ADD, session_id, {"tokens": 1})
    assert (await next_event(events)).data == added


@pytest.mark.parametrize(
    ("usage", "used"),
    [
        ({"prompt_tokens": 1_234}, 1_234),
        ({"prompt_tokens": 1_000, "completion_tokens": 234, "total_tokens": 1_234}, 1_234),
        (
            {
                "prompt_tokens": 50,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 40},
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
            # OpenAI discards reasoning tokens from the next turn's context.
            53,
        ),
        ({"input_tokens": 100, "output_tokens": 50}, 150),
        (
            {
                "input_tokens": 100,
                "output_tokens": 50,
                "cache_creation_input_tokens": None,
                "cache_read_input_tokens": None,
            },
            150,
        ),
        (
            {
                "input_tokens": 3,
                "cache_creation_input_tokens": 2_000,
                "cache_read_input_tokens": 30_000,
                "output_tokens": 400,
                "server_tool_use": {"web_search_requests": 1},
                "service_tier": "standard",
            },
            32_403,
        ),
    ],
)
async def test_usage_objects(
    nc: NATS, functions: FunctionsRuntime, session_id: str, usage: dict[str, Any], used: int
) -> None:
    reply = await _context(nc, ContextOp.USAGE, session_id, {"usage": usage})
    assert reply.used == used


async def test_set_keeps_stored_total_and_model_when_omitted(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    await _context(nc, ContextOp.SET, session_id, {"used": 10, "total": 1_000, "model": "gpt-4"})
    usage = await _context(nc, ContextOp.SET, session_id, {"used": 20})
    assert (usage.used, usage.total, usage.model) == (20, 1_000, "gpt-4")
    # A window the caller stated stands for a report that names no model; the model is no longer known.
    usage = await _context(nc, ContextOp.USAGE, session_id, {"usage": {"prompt_tokens": 30}})
    assert (usage.used, usage.total, usage.model, usage.window_source) == (30, 1_000, None, "reported")


async def test_free_and_reset_on_a_new_session(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    freed = await _context(nc, ContextOp.FREE, session_id, {"tokens": 5})
    assert (freed.used, freed.total, freed.revision) == (0, DEFAULT_WINDOW, 1)
    other = session_id + "-2"
    reset = await _context(nc, ContextOp.RESET, other)
    assert (reset.used, reset.total, reset.model) == (0, DEFAULT_WINDOW, None)
    assert reset.revision >= 1


@pytest.mark.parametrize(
    ("used", "total", "percentage", "level"),
    [
        (0, 1_000, 0.0, ContextLevel.NORMAL),
        (799, 1_000, 79.9, ContextLevel.NORMAL),
        (7_999, 10_000, 79.99, ContextLevel.NORMAL),
        (800, 1_000, 80.0, ContextLevel.WARNING),
        (899, 1_000, 89.9, ContextLevel.WARNING),
        (8_999, 10_000, 89.99, ContextLevel.WARNING),
        (900, 1_000, 90.0, ContextLevel.CRITICAL),
        (1_000, 1_000, 100.0, ContextLevel.CRITICAL),
        (5_000, 1_000, 100.0, ContextLevel.CRITICAL),
        (1, 3, 33.33, ContextLevel.NORMAL),
        (2, 3, 66.67, ContextLevel.NORMAL),
        (1, 7, 14.29, ContextLevel.NORMAL),
        (1, 200_000, 0.0, ContextLevel.NORMAL),
        (5, 1, 100.0, ContextLevel.CRITICAL),
    ],
)
async def test_levels_and_percentage_rounding(
    nc: NATS,
    functions: FunctionsRuntime,
    session_id: str,
    used: int,
    total: int,
    percentage: float,
    level: ContextLevel,
) -> None:
    usage = await _context(nc, ContextOp.SET, session_id, {"used": used, "total": total})
    assert (usage.used, usage.total, usage.percentage, usage.level) == (used, total, percentage, level)


async def test_stored_value_is_what_the_reply_says(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str
) -> None:
    usage = await _context(nc, ContextOp.SET, session_id, {"used": 123, "total": 456, "model": "o3"})
    stored = json.loads((await kv.get(subjects.context_key(session_id))).value or b"")
    assert (stored["used"], stored["total"], stored["model"], stored["updated_at"]) == (
        123,
        456,
        "o3",
        usage.updated_at,
    )


async def test_unknown_model_on_set_needs_a_total(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    error(await call(nc, subjects.context(ContextOp.SET, session_id), {"used": 1, "model": "nope-1"}), "unknown_model")
    usage = await _context(nc, ContextOp.SET, session_id, {"used": 1, "total": 10, "model": "nope-1"})
    assert (usage.used, usage.total, usage.model) == (1, 10, "nope-1")
    # A usage report is the provider's truth even for a model the registry does not know yet.
    reported = await _context(nc, ContextOp.USAGE, session_id, {"usage": {"prompt_tokens": 3}, "model": "nope-2"})
    assert (reported.used, reported.total, reported.model) == (3, 10, "nope-2")
