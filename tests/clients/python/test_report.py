"""``report`` with the providers' real SDK types (built locally, no network) and with plain dicts, against
the real functions: the context used is each provider's own count."""

from __future__ import annotations

import json
from typing import Any

import anthropic.types
import pytest
from ctxmeter_client import CtxMeter, CtxMeterError, usage_body
from google.genai import types as genai
from openai.types.chat import ChatCompletion
from openai.types.completion_usage import CompletionUsage
from openai.types.responses import Response, ResponseUsage

from functions.runner import FunctionsRuntime

# Context windows of the registry's models the responses below name (their dated names resolve to them).
GPT_4O_WINDOW = 128_000
GPT_41_WINDOW = 1_047_576
CLAUDE_WINDOW = 200_000
GEMINI_WINDOW = 1_048_576


def chat_completion(model: str = "gpt-4o-2024-08-06", usage: dict[str, Any] | None = None) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}}],
            "usage": usage,
        }
    )


CHAT_USAGE = {
    "prompt_tokens": 1_200,
    "completion_tokens": 300,
    "total_tokens": 1_500,
    "prompt_tokens_details": {"cached_tokens": 1_000, "audio_tokens": None},
    "completion_tokens_details": {"reasoning_tokens": 0},
}

RESPONSES_USAGE = {
    "input_tokens": 1_000,
    # Cached tokens are inside input_tokens: not added again.
    "input_tokens_details": {"cached_tokens": 400, "cache_write_tokens": 0},
    "output_tokens": 200,
    "output_tokens_details": {"reasoning_tokens": 50},
    "total_tokens": 1_200,
}


def responses_response() -> Response:
    return Response.model_validate(
        {
            "id": "resp_1",
            "created_at": 1_700_000_000.0,
            "model": "gpt-4.1-2025-04-14",
            "object": "response",
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": RESPONSES_USAGE,
        }
    )


def anthropic_message() -> anthropic.types.Message:
    return anthropic.types.Message(
        id="msg_1",
        type="message",
        role="assistant",
        model="claude-sonnet-4-5-20250929",
        content=[anthropic.types.TextBlock(type="text", text="Hi", citations=None)],
        stop_reason="end_turn",
        stop_sequence=None,
        usage=anthropic.types.Usage(
            input_tokens=50, output_tokens=300, cache_creation_input_tokens=1_000, cache_read_input_tokens=2_000
        ),
    )


def gemini_usage() -> genai.GenerateContentResponseUsageMetadata:
    return genai.GenerateContentResponseUsageMetadata(
        prompt_token_count=900,
        candidates_token_count=100,
        tool_use_prompt_token_count=50,
        # Thinking tokens are not part of the context the next turn sees; cached ones are inside the prompt.
        thoughts_token_count=20,
        cached_content_token_count=300,
        total_token_count=1_070,
        prompt_tokens_details=[genai.ModalityTokenCount(modality=genai.MediaModality.TEXT, token_count=900)],
    )


def gemini_response() -> genai.GenerateContentResponse:
    return genai.GenerateContentResponse(model_version="gemini-2.5-flash", usage_metadata=gemini_usage())


# (what is reported, the context used it makes, the window of the model it names or None)
CASES: dict[str, tuple[object, int, int | None]] = {
    "openai ChatCompletion": (chat_completion(usage=CHAT_USAGE), 1_500, GPT_4O_WINDOW),
    "openai CompletionUsage": (CompletionUsage.model_validate(CHAT_USAGE), 1_500, None),
    # OpenAI drops reasoning from the next turn: 1,000 in + 200 out - 50 reasoning.
    "openai Responses Response": (responses_response(), 1_150, GPT_41_WINDOW),
    "openai ResponseUsage": (ResponseUsage.model_validate(RESPONSES_USAGE), 1_150, None),
    "anthropic Message": (anthropic_message(), 3_350, CLAUDE_WINDOW),
    "anthropic Usage": (anthropic.types.Usage(input_tokens=10, output_tokens=5), 15, None),
    "gemini GenerateContentResponse": (gemini_response(), 1_050, GEMINI_WINDOW),
    "gemini usage_metadata": (gemini_usage(), 1_050, None),
    "dict openai response": (
        {"model": "gpt-4o", "usage": {"prompt_tokens": 70, "completion_tokens": 30}},
        100,
        128_000,
    ),
    "dict openai usage": ({"prompt_tokens": 70, "completion_tokens": 30, "total_tokens": 100}, 100, None),
    "dict anthropic message": (
        {"model": "claude-sonnet-4", "usage": {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 4}},
        10,
        CLAUDE_WINDOW,
    ),
    "dict gemini snake": (
        {"model_version": "gemini-2.5-pro", "usage_metadata": {"prompt_token_count": 8, "candidates_token_count": 2}},
        10,
        GEMINI_WINDOW,
    ),
    "dict gemini camel": (
        {
            "modelVersion": "gemini-2.5-pro",
            "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 2, "totalTokenCount": 10},
        },
        10,
        GEMINI_WINDOW,
    ),
    "dict gemini camel usage": (
        {"promptTokenCount": 8, "candidatesTokenCount": 3, "toolUsePromptTokenCount": 1},
        12,
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_report(meter: CtxMeter, functions: FunctionsRuntime, session_id: str, case: str) -> None:
    reported, used, window = CASES[case]
    # A window of its own first, so a report that names no model visibly keeps it.
    await meter.set(session_id, 5, total=2_000_000, estimated=True)
    usage = await meter.report(session_id, reported)
    assert usage.used == used
    assert usage.total == (2_000_000 if window is None else window)
    # The provider's count is the truth: no longer an estimate.
    assert usage.estimated is False
    assert (await meter.get(session_id)).used == used


async def test_report_with_an_explicit_model(meter: CtxMeter, functions: FunctionsRuntime, session_id: str) -> None:
    usage = await meter.report(session_id, chat_completion(usage=CHAT_USAGE), model="gpt-4")
    assert (usage.used, usage.total, usage.model) == (1_500, 8_192, "gpt-4")


async def test_a_model_the_server_does_not_know_still_reports(
    meter: CtxMeter, functions: FunctionsRuntime, session_id: str
) -> None:
    await meter.set(session_id, 0, total=300_000)
    usage = await meter.report(session_id, chat_completion(model="gpt-99-preview", usage=CHAT_USAGE))
    # The usage is the truth whatever the model: recorded, with the window kept.
    assert (usage.used, usage.model, usage.total) == (1_500, "gpt-99-preview", 300_000)


async def test_a_response_without_usage_is_refused_before_sending(meter: CtxMeter, session_id: str) -> None:
    for missing in (chat_completion(usage=None), genai.GenerateContentResponse(), {"usage": None}):
        with pytest.raises(CtxMeterError) as raised:
            await meter.report(session_id, missing)
        assert (raised.value.code, raised.value.attempts) == ("invalid_request", 0)
        assert "no usage" in raised.value.message
    unreadables: tuple[object, ...] = (42, "text", {})
    for unreadable in unreadables:
        with pytest.raises(CtxMeterError) as raised:
            await meter.report(session_id, unreadable)
        assert (raised.value.code, raised.value.attempts) == ("invalid_request", 0)


async def test_a_mix_of_usage_shapes_is_rejected_by_the_server(
    meter: CtxMeter, functions: FunctionsRuntime, session_id: str
) -> None:
    with pytest.raises(CtxMeterError) as raised:
        await meter.report(session_id, {"prompt_tokens": 1, "input_tokens": 2})
    assert (raised.value.code, raised.value.attempts) == ("invalid_request", 1)
    assert (await meter.get(session_id)).revision == 0


# -- what is sent (no NATS) ------------------------------------------------------------------


def test_the_body_is_the_usage_without_nulls_and_the_model() -> None:
    assert usage_body(anthropic_message(), None) == {
        "usage": {
            "input_tokens": 50,
            "output_tokens": 300,
            "cache_creation_input_tokens": 1_000,
            "cache_read_input_tokens": 2_000,
        },
        "model": "claude-sonnet-4-5-20250929",
    }
    # Usage alone: no model to send.
    assert usage_body(anthropic.types.Usage(input_tokens=1, output_tokens=2), None) == {
        "usage": {"input_tokens": 1, "output_tokens": 2}
    }
    chat = usage_body(chat_completion(usage=CHAT_USAGE), "gpt-4o")
    assert chat["model"] == "gpt-4o"
    assert chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 1_000}


def test_sdk_objects_become_plain_json() -> None:
    body = usage_body(gemini_response(), None)
    assert body["model"] == "gemini-2.5-flash"
    # The SDK's enum is sent as its value: the body is plain JSON data.
    assert body["usage"]["prompt_tokens_details"] == [{"modality": "TEXT", "token_count": 900}]
    assert type(body["usage"]["prompt_tokens_details"][0]["modality"]) is str
    assert json.loads(json.dumps(body)) == body
    assert body["usage"]["prompt_token_count"] == 900


def test_objects_read_by_their_attributes_and_to_dict() -> None:
    class Usage:
        def __init__(self) -> None:
            self.prompt_tokens = 3
            self.completion_tokens = None
            self._secret = "internal"

    class Reply:
        def __init__(self) -> None:
            self.model = "gpt-4o"
            self.usage = Usage()

    class ToDict:
        def to_dict(self) -> dict[str, Any]:
            return {"input_tokens": 4, "output_tokens": 5}

    assert usage_body(Reply(), None) == {"usage": {"prompt_tokens": 3}, "model": "gpt-4o"}
    assert usage_body(ToDict(), None) == {"usage": {"input_tokens": 4, "output_tokens": 5}}
