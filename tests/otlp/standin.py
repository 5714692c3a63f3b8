"""Stand-ins for the providers' APIs that agent CLIs call (Anthropic Messages, OpenAI Responses), streaming
scripted usage, and an OTLP/HTTP sink that keeps what the CLIs export. Used to capture Claude Code's and
Codex's real telemetry (``python -m tests.otlp.standin``) and by the end-to-end test with the real CLIs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Script:
    """The usage each successive model call reports (the last one repeats)."""

    anthropic: list[dict[str, int]] = field(default_factory=list)
    openai: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def next_anthropic(self) -> dict[str, int]:
        index = sum(1 for path, _ in self.calls if path == "anthropic")
        return self.anthropic[min(index - 1, len(self.anthropic) - 1)]

    def next_openai(self) -> dict[str, Any]:
        index = sum(1 for path, _ in self.calls if path == "openai")
        return self.openai[min(index - 1, len(self.openai) - 1)]


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def anthropic_stream(model: str, usage: dict[str, int], text: str) -> Iterator[bytes]:
    message_id = f"msg_{uuid.uuid4().hex}"
    start_usage = {key: value for key, value in usage.items() if key != "output_tokens"} | {"output_tokens": 1}
    yield _sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
    )
    yield _sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    yield _sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    )
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


def openai_stream(model: str, usage: dict[str, Any], text: str) -> Iterator[bytes]:
    response_id = f"resp_{uuid.uuid4().hex}"
    item_id = f"msg_{uuid.uuid4().hex}"
    base = {"id": response_id, "object": "response", "created_at": 1_700_000_000, "model": model, "output": []}
    yield _sse(
        "response.created",
        {"type": "response.created", "sequence_number": 0, "response": base | {"status": "in_progress"}},
    )
    item = {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    yield _sse(
        "response.output_item.added",
        {
            "type": "response.output_item.added",
            "sequence_number": 1,
            "output_index": 0,
            "item": item | {"status": "in_progress", "content": []},
        },
    )
    yield _sse(
        "response.output_text.delta",
        {
            "type": "response.output_text.delta",
            "sequence_number": 2,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": text,
        },
    )
    yield _sse(
        "response.output_item.done",
        {"type": "response.output_item.done", "sequence_number": 3, "output_index": 0, "item": item},
    )
    yield _sse(
        "response.completed",
        {
            "type": "response.completed",
            "sequence_number": 4,
            "response": base | {"status": "completed", "output": [item], "usage": usage},
        },
    )


# What the stand-in model answers: a compaction summary in the shape both CLIs ask for.
SUMMARY_REPLY = "<analysis>ok</analysis>\n<summary>The user greeted the assistant several times.</summary>"


async def _event_stream(request: web.Request, chunks: Iterator[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


class StandIn:
    """One aiohttp app: ``/v1/messages`` (Anthropic), ``/v1/responses`` (OpenAI), ``/v1/{logs,traces,metrics}``
    (an OTLP sink keeping each body with its content type)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.exports: list[tuple[str, str, bytes]] = []
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post("/v1/messages", self._messages)
        self.app.router.add_post("/v1/responses", self._responses)
        self.app.router.add_route("*", "/v1/{signal:(logs|traces|metrics)}", self._otlp)
        self.app.router.add_route("*", "/{tail:.*}", self._other)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.script.calls.append(("anthropic", body))
        usage = self.script.next_anthropic()
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "msg_x",
                    "type": "message",
                    "role": "assistant",
                    "model": body.get("model"),
                    "content": [{"type": "text", "text": "ok"}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
        return await _event_stream(request, anthropic_stream(body.get("model", "claude"), usage, SUMMARY_REPLY))

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.script.calls.append(("openai", body))
        usage = self.script.next_openai()
        return await _event_stream(request, openai_stream(body.get("model", "gpt-5"), usage, SUMMARY_REPLY))

    async def _otlp(self, request: web.Request) -> web.Response:
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        self.exports.append((request.match_info["signal"], content_type, body))
        if "json" in content_type:
            return web.json_response({})
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def _other(self, request: web.Request) -> web.Response:
        self.script.calls.append(("other", {"method": request.method, "path": request.path}))
        return web.json_response({"error": {"type": "not_found", "message": "stand-in"}}, status=404)
