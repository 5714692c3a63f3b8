"""The usage rule, one for every provider: ``used`` is what the next request carries of the response reported
(input and output, less the reasoning the model drops), the reasoning is shown beside it, run totals are
refused, Anthropic's streamed pair is read as one response, and the window says where it comes from."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextUsage
from schemas.subjects import ContextOp
from tests.functions.helpers import call, error, kv_value, ok

DEFAULT_WINDOW = 200_000


async def _op(nc: NATS, op: ContextOp, sid: str, payload: dict[str, Any] | None = None) -> ContextUsage:
    return ok(await call(nc, subjects.context(op, sid), payload or {}), ContextUsage)


async def _usage(nc: NATS, sid: str, usage: dict[str, Any], **fields: Any) -> ContextUsage:
    return await _op(nc, ContextOp.USAGE, sid, {"usage": usage, **fields})


# (usage, model, used, reasoning): each provider's documented rule on what stays in context.
RULES: dict[str, tuple[dict[str, Any], str | None, int, int | None]] = {
    # OpenAI: "the model ... discards the reasoning tokens from its context" (reasoning guide).
    "openai chat, reasoning dropped": (
        {"prompt_tokens": 30_000, "completion_tokens": 4_000, "completion_tokens_details": {"reasoning_tokens": 3_000}},
        "o3",
        31_000,
        3_000,
    ),
    "openai responses, reasoning dropped": (
        {
            "input_tokens": 30_000,
            "input_tokens_details": {"cached_tokens": 20_000},
            "output_tokens": 4_000,
            "output_tokens_details": {"reasoning_tokens": 3_000},
        },
        "gpt-5",
        31_000,
        3_000,
    ),
    # Gemini: thoughts are counted beside the candidates and are not the next turn's input.
    "gemini, thoughts beside": (
        {"prompt_token_count": 30_000, "candidates_token_count": 1_000, "thoughts_token_count": 3_000},
        "gemini-2.5-pro",
        31_000,
        3_000,
    ),
    # Anthropic: earlier thinking is stripped from the context (Sonnet 4.5) ...
    "anthropic sonnet 4.5, thinking stripped": (
        {
            "input_tokens": 10_000,
            "cache_read_input_tokens": 20_000,
            "output_tokens": 4_000,
            "output_tokens_details": {"thinking_tokens": 3_000},
        },
        "claude-sonnet-4-5",
        31_000,
        3_000,
    ),
    # ... but kept by Opus 4.5 and later.
    "anthropic opus 4.5, thinking kept": (
        {"input_tokens": 30_000, "output_tokens": 4_000, "output_tokens_details": {"thinking_tokens": 3_000}},
        "claude-opus-4-5-20251101",
        34_000,
        3_000,
    ),
    # Anthropic without a thinking count: nothing to take away (null reasoning, not 0).
    "anthropic, no thinking count": (
        {"input_tokens": 30_000, "output_tokens": 1_000},
        "claude-sonnet-4-5",
        31_000,
        None,
    ),
    # LiteLLM's usage for Claude: prompt_tokens already holds the cache counts it repeats beside it.
    "litellm anthropic route": (
        {
            "prompt_tokens": 30_000,
            "completion_tokens": 1_000,
            "cache_read_input_tokens": 20_000,
            "cache_creation_input_tokens": 5_000,
            "prompt_tokens_details": {"cached_tokens": 20_000, "cache_creation_tokens": 5_000},
        },
        "claude-sonnet-4-5",
        31_000,
        None,
    ),
    # LangChain usage_metadata: cache inside input_tokens, reasoning inside output_tokens.
    "langchain usage_metadata": (
        {
            "input_tokens": 30_000,
            "output_tokens": 4_000,
            "total_tokens": 34_000,
            "input_token_details": {"cache_read": 20_000},
            "output_token_details": {"reasoning": 3_000},
        },
        "o3",
        31_000,
        3_000,
    ),
    # pydantic-ai RequestUsage: cache inside input_tokens, output_reasoning_tokens inside output_tokens.
    "pydantic-ai RequestUsage": (
        {
            "input_tokens": 30_000,
            "cache_read_tokens": 20_000,
            "cache_write_tokens": 0,
            "output_tokens": 4_000,
            "output_reasoning_tokens": 3_000,
            "details": {"reasoning_tokens": 3_000},
        },
        "o3",
        31_000,
        3_000,
    ),
    # Vercel AI SDK 6: totals with details; AI SDK 5: reasoningTokens; AI SDK 4: prompt/completion.
    "vercel 6": (
        {
            "inputTokens": 30_000,
            "inputTokenDetails": {"noCacheTokens": 10_000, "cacheReadTokens": 20_000},
            "outputTokens": 4_000,
            "outputTokenDetails": {"textTokens": 1_000, "reasoningTokens": 3_000},
            "totalTokens": 34_000,
        },
        "o3",
        31_000,
        3_000,
    ),
    "vercel 5": (
        {"inputTokens": 30_000, "outputTokens": 4_000, "reasoningTokens": 3_000, "cachedInputTokens": 20_000},
        "o3",
        31_000,
        3_000,
    ),
    "vercel 4": ({"promptTokens": 30_000, "completionTokens": 1_000, "totalTokens": 31_000}, "gpt-4o", 31_000, None),
    # The OpenAI Agents SDK's usage of one response (requests=1, no per-request entries).
    "agents sdk response usage": (
        {
            "requests": 1,
            "input_tokens": 30_000,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 4_000,
            "output_tokens_details": {"reasoning_tokens": 3_000},
            "total_tokens": 34_000,
            "request_usage_entries": [],
        },
        "gpt-5",
        31_000,
        3_000,
    ),
}


@pytest.mark.parametrize("case", sorted(RULES))
async def test_each_provider_counts_what_stays_in_context(
    nc: NATS, functions: FunctionsRuntime, session_id: str, case: str
) -> None:
    usage, model, used, reasoning = RULES[case]
    reply = await _usage(nc, session_id, usage, **({"model": model} if model else {}))
    assert (reply.used, reply.reasoning, reply.estimated) == (used, reasoning, False)
    assert (await _op(nc, ContextOp.GET, session_id)).reasoning == reasoning


async def test_reasoning_is_cleared_by_the_changes_that_are_no_report(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    await _usage(nc, session_id, RULES["openai chat, reasoning dropped"][0])
    assert (await _op(nc, ContextOp.ADD, session_id, {"tokens": 5})).reasoning == 3_000
    assert (await _op(nc, ContextOp.COMPACT, session_id, {"used": 5})).reasoning is None


RUN_TOTALS: dict[str, dict[str, Any]] = {
    "agents sdk context_wrapper.usage": {
        "requests": 3,
        "input_tokens": 61_000,
        "output_tokens": 900,
        "request_usage_entries": [{"input_tokens": 20_000, "output_tokens": 300}] * 3,
    },
    "agents sdk, one request run": {
        "requests": 1,
        "input_tokens": 500,
        "output_tokens": 9,
        "request_usage_entries": [{"input_tokens": 500, "output_tokens": 9}],
    },
    "pydantic-ai RunUsage": {"requests": 1, "tool_calls": 0, "input_tokens": 1_507, "output_tokens": 10},
    "any usage with a request count": {"requests": 2, "prompt_tokens": 5, "completion_tokens": 1},
}


@pytest.mark.parametrize("case", sorted(RUN_TOTALS))
async def test_a_runs_total_is_refused_with_what_to_report_instead(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str, case: str
) -> None:
    reply = error(
        await call(nc, subjects.context(ContextOp.USAGE, session_id), {"usage": RUN_TOTALS[case]}), "invalid_request"
    )
    assert "not the context's size" in reply.error.message
    assert "result.raw_responses[-1].usage" in reply.error.message
    assert "result.response" in reply.error.message
    assert await kv_value(kv, subjects.context_key(session_id)) is None


async def test_anthropics_streamed_pair_reads_as_one_response(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    # message_start: the input counts, and output_tokens of the first token.
    start = await _usage(
        nc,
        session_id,
        {
            "input_tokens": 10,
            "cache_creation_input_tokens": 2_000,
            "cache_read_input_tokens": 30_000,
            "output_tokens": 1,
        },
        model="claude-sonnet-4-5-20250929",
    )
    assert (start.used, start.model, start.total) == (32_011, "claude-sonnet-4-5-20250929", 200_000)
    # message_delta (older API versions): the output alone; the model and window stand.
    delta = await _usage(nc, session_id, {"output_tokens": 500}, continues=True)
    assert (delta.used, delta.model, delta.total, delta.window_source) == (
        32_510,
        "claude-sonnet-4-5-20250929",
        200_000,
        "model",
    )
    # message_delta (current API): cumulative input counts too, and the thinking among the output.
    current = await _usage(
        nc,
        session_id,
        {
            "input_tokens": 10,
            "cache_read_input_tokens": 32_000,
            "output_tokens": 700,
            "output_tokens_details": {"thinking_tokens": 600},
        },
        continues=True,
    )
    assert (current.used, current.reasoning, current.model) == (32_110, 600, "claude-sonnet-4-5-20250929")


async def test_a_delta_with_nothing_to_continue_is_refused(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str
) -> None:
    msg = await call(nc, subjects.context(ContextOp.USAGE, session_id), {"usage": {"output_tokens": 5}})
    assert "message_start" in error(msg, "invalid_request").error.message
    assert await kv_value(kv, subjects.context_key(session_id)) is None


async def test_a_stated_estimate_is_shown_as_one(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    reply = await _usage(nc, session_id, {"input_tokens": 100, "output_tokens": 50}, estimated=True)
    assert (reply.used, reply.estimated) == (150, True)


# -- where the window comes from --------------------------------------------------------------


async def test_window_source(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    fresh = await _op(nc, ContextOp.GET, session_id)
    assert (fresh.total, fresh.window_source) == (DEFAULT_WINDOW, "default")
    # An unknown model on a new session: the default, and it says so.
    guessed = await _usage(nc, session_id, {"prompt_tokens": 5}, model="brand-new-model-9")
    assert (guessed.total, guessed.window_source, guessed.model) == (DEFAULT_WINDOW, "default", "brand-new-model-9")
    known = await _usage(nc, session_id, {"prompt_tokens": 5}, model="gpt-4o")
    assert (known.total, known.window_source) == (128_000, "model")
    # A report naming no model, or an unknown one, does not keep gpt-4o's window.
    unnamed = await _usage(nc, session_id, {"prompt_tokens": 6})
    assert (unnamed.total, unnamed.window_source, unnamed.model) == (DEFAULT_WINDOW, "default", None)
    await _usage(nc, session_id, {"prompt_tokens": 5}, model="gpt-4o")
    other = await _usage(nc, session_id, {"prompt_tokens": 7}, model="brand-new-model-9")
    assert (other.total, other.window_source) == (DEFAULT_WINDOW, "default")
    # A window the caller states stands for any model the registry does not know.
    stated = await _op(nc, ContextOp.SET, session_id, {"used": 1, "total": 300_000})
    assert (stated.total, stated.window_source) == (300_000, "reported")
    kept = await _usage(nc, session_id, {"prompt_tokens": 8}, model="brand-new-model-9")
    assert (kept.total, kept.window_source) == (300_000, "reported")
    modelled = await _op(nc, ContextOp.SET, session_id, {"used": 1, "model": "o3"})
    assert (modelled.total, modelled.window_source) == (200_000, "model")


# -- error messages -----------------------------------------------------------------------------


async def test_a_shape_error_is_whole_and_names_what_it_got_and_the_nearest_shape(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    usage = {"inputTokenCount": 5, "outputTokens2": 1, "cache_read_input_tokens": 3, "x" * 5_000: 1}
    message = error(await call(nc, subjects.context(ContextOp.USAGE, session_id), {"usage": usage}), "invalid_request")
    text = message.error.message
    assert "received the fields inputTokenCount, outputTokens2, cache_read_input_tokens, xxx" in text
    assert "The nearest is Anthropic" in text
    # Every accepted shape is named, the last one too: ctxmeter's own words are never cut.
    assert text.endswith("Vercel AI SDK 4 (promptTokens, completionTokens)")
    # What it quotes of the input is an excerpt.
    assert "x" * 100 not in text
    assert len(text) < 1_000


@pytest.mark.parametrize("usage", [[1, 2], "usage", 3])
async def test_a_usage_that_is_no_object_says_what_it_is(
    nc: NATS, functions: FunctionsRuntime, session_id: str, usage: object
) -> None:
    msg = await call(nc, subjects.context(ContextOp.USAGE, session_id), {"usage": usage})
    text = error(msg, "invalid_request").error.message
    assert "must be one provider's usage object, not a" in text
    assert text.endswith("Vercel AI SDK 4 (promptTokens, completionTokens)")
