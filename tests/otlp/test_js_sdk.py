"""The OpenTelemetry JS SDK's OTLP/HTTP exporters (JSON, their default) reporting to a real edge."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Final

import aiohttp

from tests.otlp.test_sdk import context_used
from tests.tools import require
from ws_edge.app import EdgeServer

JS_DIR: Final = Path(__file__).resolve().parent / "js"
SEND: Final = JS_DIR / "send.mjs"
NODE_TIMEOUT_S: Final = 60.0


async def test_the_js_sdks_json_exporters_move_the_meters(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    node = shutil.which("node")
    require(
        [] if node else ["node is not installed"],
        "the JS SDK's exporters must be tested",
    )
    require(
        [] if (JS_DIR / "node_modules" / "@opentelemetry").is_dir() else ["npm ci --prefix tests/otlp/js"],
        "the JS SDK's exporters must be tested",
    )
    assert node is not None
    process = await asyncio.create_subprocess_exec(
        node, str(SEND), edge.url, session_id, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(NODE_TIMEOUT_S):
        out, err = await process.communicate()
    assert process.returncode == 0, (out, err)
    # The last inference span, not the agent span's aggregate that ended after it.
    assert await context_used(http, edge, f"{session_id}-spans") == 1_525
    assert await context_used(http, edge, f"{session_id}-logs") == 5 + 60 + 7_000 + 100
