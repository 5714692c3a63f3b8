"""A local stand-in for the providers' HTTP APIs: the real SDKs and frameworks talk to it over a real socket
(``base_url``), and it answers each request with the next body its test queued, as the provider would."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from aiohttp import web


class ProviderStandIn:
    """``/v1/chat/completions``, ``/v1/responses`` (OpenAI) and ``/v1/messages`` (Anthropic), each answering
    from its own queue; every request body is kept."""

    def __init__(self) -> None:
        self.replies: dict[str, deque[dict[str, Any]]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    def queue(self, path: str, *bodies: dict[str, Any]) -> None:
        self.replies.setdefault(path, deque()).extend(bodies)

    async def _answer(self, request: web.Request) -> web.Response:
        path = request.path.removeprefix("/v1")
        self.requests.append((path, json.loads(await request.read() or b"{}")))
        pending = self.replies.get(path)
        if not pending:
            return web.json_response({"error": {"message": f"nothing queued for {path}"}}, status=500)
        return web.json_response(pending.popleft())

    async def start(self) -> ProviderStandIn:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def chat_completion(model: str, usage: dict[str, Any], message: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls" if message and message.get("tool_calls") else "stop",
                "message": message or {"role": "assistant", "content": "Done."},
            }
        ],
        "usage": usage,
    }


def responses_response(model: str, output: list[dict[str, Any]], usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"resp_{len(output)}_{usage['input_tokens']}",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": "completed",
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


def anthropic_message(model: str, usage: dict[str, Any], content: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": "msg_standin",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content or [{"type": "text", "text": "Done."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
