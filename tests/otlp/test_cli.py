"""``ctxmeter up --otlp-port``: an agent's exporter pointed at the printed endpoint moves the meter."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from ctxmeter.natsserver import free_port
from tests.functions.test_cli import START_TIMEOUT_S, running_up
from tests.otlp.helpers import span, traces


@pytest.mark.slow
async def test_up_serves_otlp_on_its_own_port_and_says_where(tmp_path: Path, session_id: str) -> None:
    otlp_port = free_port()
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.conversation.id": session_id,
        "gen_ai.usage.input_tokens": 640,
        "gen_ai.usage.output_tokens": 2,
    }
    export = traces(span(attrs)).SerializeToString()
    async with running_up(tmp_path / "store", "--otlp-port", str(otlp_port)) as up, aiohttp.ClientSession() as http:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert up.process.returncode is None, up.output
            try:
                async with http.post(
                    f"http://127.0.0.1:{otlp_port}/v1/traces",
                    data=export,
                    headers={"Content-Type": "application/x-protobuf"},
                ) as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass
            assert time.monotonic() < deadline, up.output
            await asyncio.sleep(0.1)
        assert f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{otlp_port}" in up.output
        async with http.get(f"http://127.0.0.1:{otlp_port}/api/counters/context/{session_id}") as response:
            assert (await response.json())["used"] == 642
        assert await up.stop() == 0
