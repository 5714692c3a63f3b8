"""``report`` with what agent developers hold, made by the real SDKs and frameworks (pydantic-ai with a
``FunctionModel``, the OpenAI Agents SDK and LiteLLM against a local stand-in of the provider's API,
LangChain's ``AIMessage``, the providers' stream events), against the real functions. Each number is the
provider's documented rule: the last response's input and output, less the reasoning the model drops."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anthropic.types
import pytest
from ctxmeter_client import CtxMeter, CtxMeterError
from langchain_core.messages import AIMessage
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseCompletedEvent

from functions.runner import FunctionsRuntime
from tests.clients.python.standin import ProviderStandIn, anthropic_message, responses_response

# LiteLLM would fetch its model price list from the internet at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
async def standin() -> AsyncIterator[ProviderStandIn]:
    server = await ProviderStandIn().start()
    yield server
    await server.stop()


def _message(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _usage(input_tokens: int, output_tokens: int, reasoning: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


# -- OpenAI Agents SDK --------------------------------------------------------------------------


async def test_the_agents_sdk_run_reports_its_last_response(
    meter: CtxMeter, functions: FunctionsRuntime, session_id: str, standin: ProviderStandIn
) -> None:
    from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

    @function_tool
    def lookup(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    standin.queue(
        "/responses",
        responses_response(
            "gpt-5",
            [
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_1",
                    "name": "lookup",
                    "arguments": '{"city": "Paris"}',
                    "status": "completed",
                }
            ],
            _usage(20_000, 500, 300),
        ),
        responses_response("gpt-5", [_message("Sunny.")], _usage(40_000, 1_000, 500)),
    )
    client = AsyncOpenAI(base_url=f"{standin.url}/v1", api_key="stand-in")
    agent = Agent(name="weather", tools=[lookup], model=OpenAIResponsesModel(model="gpt-5", openai_client=client))
    async with client:
        result = await Runner.run(agent, "Weather in Paris?", run_config=RunConfig(tracing_disabled=True))
    assert len(standin.requests) == 2

    # The run's total sums both requests (61,500): refused, with what to report instead.
    with pytest.raises(CtxMeterError) as refused:
        await meter.report(session_id, result.context_wrapper.usage)
    assert refused.value.code == "invalid_request"
    assert "result.raw_responses[-1].usage" in refused.value.message
    assert "(reported object: agents.Usage)" in refused.value.message
    assert (await meter.get(session_id)).revision == 0

    # The result itself, or its last response: 40,000 in + 1,000 out - 500 reasoning OpenAI drops.
    usage = await meter.report(session_id, result)
    assert (usage.used, usage.reasoning, usage.model, usage.total) == (40_500, 500, "gpt-5", 400_000)
    last = await meter.report(session_id, result.raw_responses[-1].usage, model="gpt-5")
    assert (last.used, last.total) == (40_500, 400_000)


# -- pydantic-ai ------------------------------------------------------------------------------


async def test_pydantic_ai_reports_its_last_response(
    meter: CtxMeter, functions: FunctionsRuntime, session_id: str
) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.usage import RequestUsage

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(
                parts=[ToolCallPart("lookup", {"city": "Paris"})],
                usage=RequestUsage(input_tokens=250, output_tokens=2, output_reasoning_tokens=0),
                model_name="gpt-4o-2024-08-06",
            )
        return ModelResponse(
            parts=[TextPart("Sunny.")],
            # cache reads are inside input_tokens; the reasoning inside output_tokens.
            usage=RequestUsage(input_tokens=1_240, cache_read_tokens=1_000, output_tokens=15),
            model_name="gpt-4o-2024-08-06",
        )

    # FunctionModel names each response after itself: here, the model a real provider would name.
    agent = Agent(FunctionModel(model, model_name="gpt-4o-2024-08-06"))

    @agent.tool_plain
    def lookup(city: str) -> str:
        return f"sunny in {city}"

    result = await agent.run("Weather in Paris?")
    # result.usage sums both requests (1,507): refused.
    with pytest.raises(CtxMeterError) as refused:
        await meter.report(session_id, result.usage)
    assert "result.response" in refused.value.message
    assert "pydantic_ai.RunUsage" in refused.value.message

    usage = await meter.report(session_id, result)
    assert (usage.used, usage.model, usage.total) == (1_255, "gpt-4o-2024-08-06", 128_000)
    again = await meter.report(session_id, result.response)
    assert (again.used, again.model) == (1_255, "gpt-4o-2024-08-06")


# -- LiteLLM --------------------------------------------------------------------------------------


async def test_litellm_on_the_anthropic_route(
    meter: CtxMeter, functions: FunctionsRuntime, session_id: str, standin: ProviderStandIn
) -> None:
    import litellm

    standin.queue(
        "/messages",
        anthropic_message(
            "claude-sonnet-4-5-20250929",
            {
                "input_tokens": 10,
                "cache_creation_input_tokens": 2_000,
                "cache_read_input_tokens": 30_000,
                "output_tokens": 500,
            },
        ),
    )
    response = await litellm.acompletion(
        model="anthropic/claude-sonnet-4-5-20250929",
        messages=[{"role": "user", "content": "Hi"}],
        api_base=standin.url,
        api_key="stand-in",
    )
    # LiteLLM's prompt_tokens holds the cache counts it also repeats beside it: counted once.
    assert response.usage.prompt_tokens == 32_010
    usage = await meter.report(session_id, response)
    assert (usage.used, usage.model, usage.total) == (32_510, "claude-sonnet-4-5-20250929", 200_000)


# -- LangChain ----------------------------------------------------------------------------------


async def test_a_langchain_ai_message(meter: CtxMeter, functions: FunctionsRuntime, session_id: str) -> None:
    message = AIMessage(
        content="Sunny.",
        usage_metadata={
            "input_tokens": 30_000,
            "output_tokens": 4_000,
            "total_tokens": 34_000,
            "input_token_details": {"cache_read": 20_000},
            "output_token_details": {"reasoning": 3_000},
        },
        response_metadata={"model_name": "o3-2025-04-16", "finish_reason": "stop"},
    )
    usage = await meter.report(session_id, message)
    assert (usage.used, usage.reasoning, usage.model, usage.total) == (31_000, 3_000, "o3-2025-04-16", 200_000)


# -- stream events --------------------------------------------------------------------------------


async def test_the_responses_apis_completed_event(
    meter: CtxMeter, functions: FunctionsRuntime, session_id: str
) -> None:
    response = Response.model_validate(responses_response("gpt-5", [_message("Hi")], _usage(30_000, 4_000, 3_000)))
    event = ResponseCompletedEvent(type="response.completed", response=response, sequence_number=7)
    usage = await meter.report(session_id, event)
    assert (usage.used, usage.reasoning, usage.model) == (31_000, 3_000, "gpt-5")


async def test_anthropics_raw_stream_events_one_after_the_other(
    meter: CtxMeter, functions: FunctionsRuntime, session_id: str
) -> None:
    start = anthropic.types.RawMessageStartEvent.model_validate(
        {
            "type": "message_start",
            "message": anthropic_message(
                "claude-sonnet-4-5-20250929",
                {"input_tokens": 10, "cache_read_input_tokens": 30_000, "output_tokens": 1},
                content=[],
            ),
        }
    )
    delta = anthropic.types.RawMessageDeltaEvent.model_validate(
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 500}}
    )
    assert (await meter.report(session_id, start)).used == 30_011
    usage = await meter.report(session_id, delta)
    assert (usage.used, usage.model, usage.total) == (30_510, "claude-sonnet-4-5-20250929", 200_000)


async def test_anthropic_thinking_without_a_count_is_an_upper_bound_shown_as_such(
    meter: CtxMeter, functions: FunctionsRuntime, session_id: str
) -> None:
    thought = [
        {"type": "thinking", "thinking": "Let me see.", "signature": "sig"},
        {"type": "text", "text": "Sunny."},
    ]
    message = anthropic.types.Message.model_validate(
        anthropic_message("claude-sonnet-4-5", {"input_tokens": 30_000, "output_tokens": 4_000}, content=thought)
    )
    usage = await meter.report(session_id, message)
    assert (usage.used, usage.estimated, usage.reasoning) == (34_000, True, None)
    counted = anthropic.types.Message.model_validate(
        anthropic_message(
            "claude-sonnet-4-5",
            {"input_tokens": 30_000, "output_tokens": 4_000, "output_tokens_details": {"thinking_tokens": 3_000}},
            content=thought,
        )
    )
    usage = await meter.report(session_id, counted)
    assert (usage.used, usage.estimated, usage.reasoning) == (31_000, False, 3_000)


async def test_a_shape_error_names_the_sdk_type(meter: CtxMeter, functions: FunctionsRuntime, session_id: str) -> None:
    class Usage:
        def __init__(self) -> None:
            self.tokens_in = 5

    with pytest.raises(CtxMeterError) as refused:
        await meter.report(session_id, Usage())
    assert "received the fields tokens_in" in refused.value.message
    named = "(reported object: tests.test_a_shape_error_names_the_sdk_type.<locals>.Usage)"
    assert refused.value.message.endswith(named)
