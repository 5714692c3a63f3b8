"""End to end with the real CLIs, offline: Claude Code and Codex talk to a local stand-in for their provider's
API (streaming scripted usage) and export their OTLP to a real edge; the meter shows the turn. They are large
npm packages that CI need not install: these run only where they are (PATH, or CTXMETER_TEST_CLAUDE /
CTXMETER_TEST_CODEX), and the mapping tests run on their captured exports everywhere."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.edge.helpers import WAIT_S
from tests.otlp.real_clis import (
    CLAUDE_USAGE,
    CLAUDE_VARIABLE,
    CODEX_SESSION_LINE,
    CODEX_USAGE,
    CODEX_VARIABLE,
    claude_env,
    cli,
    codex_home,
    run,
    serve,
)
from tests.otlp.standin import Script, StandIn
from ws_edge.app import EdgeServer

pytestmark = pytest.mark.slow


async def used_becomes(http: aiohttp.ClientSession, edge: EdgeServer, session_id: str, wanted: set[int]) -> int:
    """The session's used once it is one of ``wanted`` (the CLI's last exports leave as it exits)."""
    used = -1
    async with asyncio.timeout(WAIT_S):
        while used not in wanted:
            async with http.get(f"{edge.url}/api/counters/context/{session_id}") as response:
                used = (await response.json())["used"]
            await asyncio.sleep(0.1)
    return used


async def test_claude_code_reports_its_turn(edge: EdgeServer, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    claude = cli(CLAUDE_VARIABLE, "claude")
    if claude is None:
        pytest.skip("Claude Code is not installed (npm i @anthropic-ai/claude-code; or set CTXMETER_TEST_CLAUDE)")
    runner, provider = await serve(StandIn(Script(anthropic=[CLAUDE_USAGE])).app)
    session_id = str(uuid.uuid4())
    try:
        env = claude_env(tmp_path, provider, edge.url)
        ran = await run([claude, "-p", "say hi", "--session-id", session_id], env, tmp_path)
        assert ran.returncode == 0, ran.err[-2000:]
        assert await used_becomes(http, edge, session_id, {12 + 3_000 + 40}) == 3_052
    finally:
        await runner.cleanup()


async def test_codex_reports_its_turn(edge: EdgeServer, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    codex = cli(CODEX_VARIABLE, "codex")
    if codex is None:
        pytest.skip("Codex is not installed (npm i @openai/codex; or set CTXMETER_TEST_CODEX)")
    runner, provider = await serve(StandIn(Script(openai=[CODEX_USAGE])).app)
    try:
        env = codex_home(tmp_path, provider, f"{edge.url}/v1/logs")
        ran = await run([codex, "exec", "--skip-git-repo-check", "say hi"], env, tmp_path)
        assert ran.returncode == 0, ran.err[-2000:]
        found = CODEX_SESSION_LINE.search(ran.out + ran.err)
        assert found, ran.err[-2000:]
        # 1,500 + 120 - 64: the reasoning tokens OpenAI drops from the next turn are not context.
        assert await used_becomes(http, edge, found.group(1), {1_556}) == 1_556
    finally:
        await runner.cleanup()
