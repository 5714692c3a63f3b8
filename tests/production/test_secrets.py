"""Passwords and tokens never appear in logs (at DEBUG, through a server restart), errors or /metrics:
in this process (caplog), and in the output of real ``ctxmeter functions`` and ``ctxmeter edge`` processes."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Final

import aiohttp
import pytest

from ctxmeter.connection import NatsConnectError, NatsConnection
from ctxmeter.settings import Settings
from functions.counting import TokenCounter
from tests.edge.helpers import eventually_async
from tests.natsproc import NatsProcess
from tests.production.cli import EDGE_URL, Cli, clean_env
from tests.production.conftest import part_settings, round_trip, running
from tests.production.servers import start_server

SECRET: Final = "Zq8-very-secret-credential"
WRONG: Final = "Zq8-wrong-credential-value"


def password_server(directory: Path) -> NatsProcess:
    return start_server(directory, f'authorization {{ user: ctxmeter, password: "{SECRET}" }}\n')


def token_server(directory: Path) -> NatsProcess:
    return start_server(directory, f'authorization {{ token: "{SECRET}" }}\n')


def secret_settings(kind: str, server: NatsProcess, secret: str = SECRET) -> Settings:
    if kind == "password":
        return part_settings(f"nats://ctxmeter:{secret}@127.0.0.1:{server.port}")
    if kind == "token in the URL":
        return part_settings(f"nats://{secret}@127.0.0.1:{server.port}")
    return part_settings(server.url, nats_token=secret)


async def connected(edge_url: str) -> bool:
    async with aiohttp.ClientSession() as http, http.get(f"{edge_url}/readyz") as ready:
        return ready.status == 200


@pytest.mark.parametrize("kind", ["password", "token", "token in the URL"])
async def test_no_secret_in_logs_errors_or_metrics(
    tmp_path: Path, counter: TokenCounter, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    server = password_server(tmp_path) if kind == "password" else token_server(tmp_path)
    try:
        settings = secret_settings(kind, server)
        with caplog.at_level(logging.DEBUG):
            async with running(settings, settings, counter) as (functions, edge):
                await round_trip(edge, f"s-{uuid.uuid4().hex}", 3)
                # An outage: disconnected, reconnecting, reconnected are all logged with the URL.
                server.restart()
                await eventually_async(lambda: connected(edge.url))
                await round_trip(edge, f"s-{uuid.uuid4().hex}", 4)
                async with aiohttp.ClientSession() as http, http.get(f"{edge.url}/metrics") as page:
                    metrics = await page.text()
                metrics += functions.metrics.render().decode()
                assert "ctxmeter_edge_nats_reconnects_total 1.0" in metrics
            with pytest.raises(NatsConnectError) as refused:
                await NatsConnection(secret_settings(kind, server, WRONG), "ctxmeter-test").open()
        assert "authorization violation" in str(refused.value)
        assert "reconnected to NATS" in caplog.text
        for secret in (SECRET, WRONG):
            assert secret not in caplog.text
            assert secret not in metrics
            assert secret not in str(refused.value)
    finally:
        server.stop()


async def run_both_parts(kind: str, server: NatsProcess) -> list[str]:
    """``ctxmeter functions`` and ``ctxmeter edge`` at DEBUG with ``kind`` credentials, one part given
    them in the environment and one in flags, through a change, a NATS restart and /metrics; every line
    they wrote, and the metrics page."""
    debug = ("--log-level", "DEBUG")
    if kind == "password":
        url = f"nats://ctxmeter:{SECRET}@127.0.0.1:{server.port}"
        functions = Cli(*debug, "functions", env=clean_env(CTXMETER_NATS_URL=url))
        edge = Cli(*debug, "edge", "--nats-url", url, "--port", "0", env=clean_env())
    else:
        functions = Cli(*debug, "functions", env=clean_env(CTXMETER_NATS_URL=server.url, CTXMETER_NATS_TOKEN=SECRET))
        edge = Cli(*debug, "edge", "--nats-url", server.url, "--nats-token", SECRET, "--port", "0", env=clean_env())
    await functions.start()
    await edge.start()
    try:
        await functions.wait_for("functions serving")
        edge_url = (await edge.wait_for(EDGE_URL)).group(1)
        await eventually_async(lambda: connected(edge_url))
        async with aiohttp.ClientSession() as http:
            address = f"{edge_url}/api/counters/context/s-{uuid.uuid4().hex}"
            async with http.post(address, json={"used": 9}) as reply:
                assert reply.status == 200, await reply.text()
            server.restart()
            await eventually_async(lambda: connected(edge_url))
            async with http.get(f"{edge_url}/metrics") as page:
                metrics = await page.text()
    finally:
        assert await edge.stop() == 0
        assert await functions.stop() == 0
    assert "reconnected to NATS" in functions.output and "reconnected to NATS" in edge.output
    return [functions.output, edge.output, metrics]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["password", "token"])
async def test_no_secret_in_the_output_of_ctxmeter_processes(tmp_path: Path, kind: str) -> None:
    server = password_server(tmp_path) if kind == "password" else token_server(tmp_path)
    try:
        for output in await run_both_parts(kind, server):
            assert SECRET not in output
    finally:
        server.stop()
