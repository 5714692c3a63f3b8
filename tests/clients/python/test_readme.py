"""The README's Python snippet runs as written: a fresh interpreter executes it against the real functions and
NATS, with the real OpenAI and Anthropic SDKs talking to a local stand-in of their APIs (their base URLs and
keys from the environment, as a developer sets them)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
from ctxmeter_client import CtxMeter

from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from tests.clients.python.standin import ProviderStandIn, anthropic_message, chat_completion

README: Final = Path(__file__).resolve().parents[3] / "README.md"
SNIPPET_TIMEOUT_S: Final = 60.0


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


@pytest.fixture
async def standin() -> AsyncIterator[ProviderStandIn]:
    server = await ProviderStandIn().start()
    yield server
    await server.stop()


async def test_the_readme_python_snippet_runs_as_written(
    meter: CtxMeter, functions: FunctionsRuntime, settings: Settings, standin: ProviderStandIn
) -> None:
    (snippet,) = python_snippets()
    standin.queue(
        "/chat/completions", chat_completion("gpt-4o-2024-08-06", {"prompt_tokens": 9, "completion_tokens": 3})
    )
    standin.queue(
        "/messages",
        anthropic_message(
            "claude-sonnet-4-5-20250929", {"input_tokens": 9, "cache_read_input_tokens": 0, "output_tokens": 4}
        ),
    )
    env = {
        **os.environ,
        "CTXMETER_NATS_URL": settings.nats_url,
        "OPENAI_BASE_URL": f"{standin.url}/v1",
        "OPENAI_API_KEY": "stand-in",
        "ANTHROPIC_BASE_URL": standin.url,
        "ANTHROPIC_API_KEY": "stand-in",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", snippet, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), SNIPPET_TIMEOUT_S)
    assert process.returncode == 0, err.decode()
    assert [path for path, _ in standin.requests] == ["/chat/completions", "/messages"]
    usage = await meter.get("demo")
    assert (usage.used, usage.model, usage.total) == (13, "claude-sonnet-4-5-20250929", 200_000)
    history = await meter.history("demo")
    assert [point.used for point in history.points] == [12, 13]
