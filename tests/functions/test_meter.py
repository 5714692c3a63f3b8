"""The meter agrees with the agent: compaction policy, estimated vs reported, compactions, usage shapes."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextLevel, ContextUsage
from schemas.subjects import ContextOp
from tests.functions.helpers import call, error, kv_value, ok


async def _op(nc: NATS, op: ContextOp, sid: str, payload: dict[str, Any] | None = None) -> ContextUsage:
    return ok(await call(nc, subjects.context(op, sid), payload or {}), ContextUsage)


async def test_without_a_policy_everything_is_as_before(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    usage = await _op(nc, ContextOp.SET, session_id, {"used": 170_000, "total": 200_000})
    assert (usage.reserved, usage.compact_at, usage.left) == (0, 200_000, 30_000)
    assert (usage.percentage, usage.level) == (85.0, ContextLevel.WARNING)
    assert (usage.estimated, usage.compactions, usage.compacted_at) == (False, 0, None)


async def test_policy_moves_the_level_and_the_room_left(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    # Claude Code's habit: a reply reserve, and compaction before the window is full.
    usage = await _op(nc, ContextOp.SET, session_id, {"used": 140_000, "total": 200_000, "reserved": 40_000})
    assert (usage.compact_at, usage.left) == (160_000, 20_000)
    # 140k of 160k is 87.5 % of the way to compaction: a warning, though only 70 % of the window is used.
    assert (usage.percentage, usage.level) == (70.0, ContextLevel.WARNING)
    usage = await _op(nc, ContextOp.SET, session_id, {"used": 150_000, "compact_at": 150_000})
    assert (usage.reserved, usage.compact_at, usage.left, usage.level) == (40_000, 150_000, 0, ContextLevel.CRITICAL)


async def test_policy_survives_every_later_change(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    await _op(
        nc, ContextOp.SET, session_id, {"used": 1_000, "total": 100_000, "reserved": 10_000, "compact_at": 80_000}
    )
    for op, payload in [
        (ContextOp.ADD, {"tokens": 5}),
        (ContextOp.FREE, {"tokens": 2}),
        (ContextOp.USAGE, {"usage": {"prompt_tokens": 50, "completion_tokens": 5}}),
        (ContextOp.COMPACT, {"used": 10}),
        (ContextOp.RESET, {}),
        (ContextOp.SET, {"used": 7}),
    ]:
        usage = await _op(nc, op, session_id, payload)
        assert (usage.total, usage.reserved, usage.compact_at) == (100_000, 10_000, 80_000), op


async def test_a_smaller_window_clamps_compact_at(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    await _op(nc, ContextOp.SET, session_id, {"used": 0, "total": 200_000, "reserved": 20_000, "compact_at": 170_000})
    # gpt-4o's window is 128k: the threshold follows it down to 128k - 20k.
    usage = await _op(nc, ContextOp.USAGE, session_id, {"usage": {"prompt_tokens": 100}, "model": "gpt-4o"})
    assert (usage.total, usage.compact_at, usage.left) == (128_000, 108_000, 107_900)


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        ({"used": 1, "total": 100, "reserved": 100}, "reserved"),
        ({"used": 1, "total": 100, "reserved": 150}, "reserved"),
        ({"used": 1, "total": 100, "compact_at": 101}, "compact_at"),
        ({"used": 1, "total": 100, "reserved": 30, "compact_at": 71}, "compact_at"),
        ({"used": 1, "total": 100, "compact_at": 0}, "compact_at"),
        ({"used": 1, "total": 100, "reserved": -1}, "reserved"),
    ],
)
async def test_invalid_policies_change_nothing(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str, payload: dict[str, Any], what: str
) -> None:
    await _op(nc, ContextOp.SET, session_id, {"used": 5, "total": 1_000})
    before = await kv_value(kv, subjects.context_key(session_id))
    reply = error(await call(nc, subjects.context(ContextOp.SET, session_id), payload), "invalid_request")
    assert what in reply.error.message
    assert await kv_value(kv, subjects.context_key(session_id)) == before


async def test_a_kept_reserve_refuses_a_window_it_does_not_fit(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    await _op(nc, ContextOp.SET, session_id, {"used": 0, "total": 100_000, "reserved": 10_000})
    error(await call(nc, subjects.context(ContextOp.SET, session_id), {"used": 0, "total": 9_000}), "invalid_request")
    assert (await _op(nc, ContextOp.GET, session_id)).total == 100_000


async def test_estimated_until_a_report(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    assert not (await _op(nc, ContextOp.SET, session_id, {"used": 100, "total": 1_000})).estimated
    assert (await _op(nc, ContextOp.ADD, session_id, {"tokens": 10})).estimated
    assert (await _op(nc, ContextOp.FREE, session_id, {"tokens": 5})).estimated
    assert not (await _op(nc, ContextOp.USAGE, session_id, {"usage": {"input_tokens": 300}})).estimated
    assert (await _op(nc, ContextOp.SET, session_id, {"used": 7, "estimated": True})).estimated
    assert not (await _op(nc, ContextOp.RESET, session_id)).estimated


async def test_compactions_are_counted_and_stamped(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    await _op(nc, ContextOp.SET, session_id, {"used": 150_000, "total": 200_000})
    first = await _op(nc, ContextOp.COMPACT, session_id, {"used": 20_000})
    assert (first.used, first.compactions, first.estimated) == (20_000, 1, False)
    assert first.compacted_at is not None
    await _op(nc, ContextOp.ADD, session_id, {"tokens": 100_000})
    second = await _op(nc, ContextOp.COMPACT, session_id, {"used": 15_000})
    assert (second.used, second.compactions) == (15_000, 2)
    assert second.compacted_at is not None and second.compacted_at >= first.compacted_at
    error(await call(nc, subjects.context(ContextOp.COMPACT, session_id), {"used": -1}), "invalid_request")
    error(await call(nc, subjects.context(ContextOp.COMPACT, session_id), {}), "invalid_request")


@pytest.mark.parametrize(
    ("usage", "used"),
    [
        # OpenAI Chat Completions: cached tokens are inside prompt_tokens.
        ({"prompt_tokens": 1000, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 800}}, 1050),
        # OpenAI Responses: the same, as input/output tokens.
        ({"input_tokens": 1000, "output_tokens": 50, "input_tokens_details": {"cached_tokens": 800}}, 1050),
        # Anthropic: cache creation and reads are beside input_tokens.
        (
            {
                "input_tokens": 10,
                "cache_creation_input_tokens": 2000,
                "cache_read_input_tokens": 30000,
                "output_tokens": 500,
            },
            32510,
        ),
        ({"input_tokens": 10, "cache_creation_input_tokens": None, "output_tokens": 5}, 15),
        # Gemini usage_metadata, snake and camel case; cached content is inside the prompt count.
        ({"prompt_token_count": 900, "candidates_token_count": 100, "cached_content_token_count": 600}, 1000),
        ({"promptTokenCount": 900, "candidatesTokenCount": 100, "toolUsePromptTokenCount": 20}, 1020),
        ({"prompt_token_count": 900, "candidates_token_count": None, "thoughts_token_count": 300}, 900),
    ],
)
async def test_usage_shapes(
    nc: NATS, functions: FunctionsRuntime, session_id: str, usage: dict[str, Any], used: int
) -> None:
    assert (await _op(nc, ContextOp.USAGE, session_id, {"usage": usage})).used == used


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 5, "input_tokens": 5},
        {"prompt_tokens": 5, "prompt_token_count": 5},
        {"input_tokens": 5, "candidatesTokenCount": 5},
        {"total_tokens": 5},
        {},
    ],
)
async def test_a_usage_that_mixes_providers_or_is_none_is_refused(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str, usage: dict[str, Any]
) -> None:
    reply = error(await call(nc, subjects.context(ContextOp.USAGE, session_id), {"usage": usage}), "invalid_request")
    assert "one provider's usage object" in reply.error.message
    assert await kv_value(kv, subjects.context_key(session_id)) is None


async def test_a_usage_report_for_an_unknown_model_keeps_the_window(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    await _op(nc, ContextOp.SET, session_id, {"used": 0, "total": 300_000})
    usage = await _op(nc, ContextOp.USAGE, session_id, {"usage": {"input_tokens": 42}, "model": "brand-new-model-9"})
    assert (usage.used, usage.total, usage.model) == (42, 300_000, "brand-new-model-9")
