"""The OpenTelemetry Python SDK's own OTLP/HTTP exporters (protobuf), and a real agent framework (Pydantic AI,
instrumented, with a function model: no network) reporting to a real edge."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from opentelemetry._logs import LogRecord as ApiLogRecord
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.usage import RequestUsage

from tests.edge.helpers import frames_until, next_frame, used_is, ws_url
from tests.otlp.helpers import claude_api_request
from ws_edge.app import EdgeServer

# Export at once, and never wait long for a batch: the tests flush anyway.
SCHEDULE_MS = 50


@pytest.fixture
def tracer_provider(edge: EdgeServer) -> Iterator[TracerProvider]:
    provider = TracerProvider(resource=Resource.create({"service.name": "ctxmeter-test"}))
    exporter = OTLPSpanExporter(endpoint=f"{edge.url}/v1/traces", compression=Compression.Gzip)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=SCHEDULE_MS))
    yield provider
    provider.shutdown()


async def context_used(http: aiohttp.ClientSession, edge: EdgeServer, session_id: str) -> int:
    async with http.get(f"{edge.url}/api/counters/context/{session_id}") as response:
        used: int = (await response.json())["used"]
        return used


async def test_the_sdks_span_exporter_moves_the_meter(
    edge: EdgeServer, http: aiohttp.ClientSession, tracer_provider: TracerProvider, session_id: str
) -> None:
    tracer = tracer_provider.get_tracer("test")
    for input_tokens in (1_000, 2_000, 3_000):
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.conversation.id": session_id,
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": 7,
        }
        with tracer.start_as_current_span("chat gpt-4o", attributes=attributes):
            pass
    # The SDK's exporter is synchronous (requests), and the edge serves on this test's event loop.
    assert await asyncio.to_thread(tracer_provider.force_flush)
    assert await context_used(http, edge, session_id) == 3_007


async def test_the_sdks_log_exporter_carries_claude_codes_events(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": "claude-code"}))
    provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{edge.url}/v1/logs"), schedule_delay_millis=SCHEDULE_MS)
    )
    try:
        logger = provider.get_logger("com.anthropic.claude_code.events")
        logger.emit(ApiLogRecord(body="claude_code.api_request", attributes=claude_api_request(session_id)))
        compaction = {"session.id": session_id, "event.name": "compaction", "success": "true", "post_tokens": "900"}
        logger.emit(ApiLogRecord(body="claude_code.compaction", attributes=compaction))
        assert await asyncio.to_thread(provider.force_flush)
    finally:
        provider.shutdown()
    async with http.get(f"{edge.url}/api/counters/context/{session_id}") as response:
        usage = await response.json()
    # One batch, one change: its newest record, the compaction.
    assert (usage["used"], usage["compactions"]) == (900, 1)


# -- Pydantic AI ----------------------------------------------------------------------------------


def prompt_of(messages: list[ModelMessage]) -> str:
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    return part.content
    raise AssertionError("no user prompt")


def scripted(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Session k's first call asks for a tool (k * 1,000 input); its second answers (k * 1,000 + 400)."""
    k = int(prompt_of(messages).rsplit(" ", 1)[1])
    if len(messages) == 1:
        return ModelResponse(
            parts=[ToolCallPart("lookup", {"q": f"q{k}"})], usage=RequestUsage(input_tokens=k * 1_000, output_tokens=30)
        )
    usage = RequestUsage(input_tokens=k * 1_000 + 400, output_tokens=50 + k, cache_read_tokens=k * 900)
    return ModelResponse(parts=[TextPart(f"done {k}")], usage=usage)


async def test_pydantic_ai_sessions_each_show_their_last_inference_not_the_runs_aggregate(
    edge: EdgeServer, http: aiohttp.ClientSession, tracer_provider: TracerProvider, session_id: str
) -> None:
    agent = Agent(FunctionModel(scripted, model_name="scripted-model"))
    agent.instrument = InstrumentationSettings(tracer_provider=tracer_provider)

    @agent.tool_plain
    async def lookup(q: str) -> str:
        await asyncio.sleep(0.01)  # the runs interleave here
        return f"result of {q}"

    sessions = {k: f"{session_id}-{k}" for k in (1, 2, 3)}
    expected = {k: k * 1_000 + 400 + 50 + k for k in sessions}
    sockets = {k: await http.ws_connect(ws_url(edge.url, sid)) for k, sid in sessions.items()}
    try:
        for ws in sockets.values():
            assert (await next_frame(ws))["data"]["used"] == 0
        runs = [agent.run(f"session {k}", conversation_id=sid) for k, sid in sessions.items()]
        assert [result.output for result in await asyncio.gather(*runs)] == ["done 1", "done 2", "done 3"]
        assert await asyncio.to_thread(tracer_provider.force_flush)
        for k, ws in sockets.items():
            frames = await frames_until(ws, used_is(expected[k]))
            assert frames[-1]["data"]["model"] == "scripted-model"
    finally:
        for ws in sockets.values():
            await ws.close()
    for k, sid in sessions.items():
        # The run's aggregate (invoke_agent: k * 2,000 + 400 input, 80 + k output) never set the meter.
        assert await context_used(http, edge, sid) == expected[k]
