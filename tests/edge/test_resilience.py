"""NATS restarts, several edges on one NATS, graceful shutdown, and the ``edge`` and ``up`` commands."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ctxmeter.natsserver import free_port
from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from tests.edge.conftest import EdgeFactory, edge_settings
from tests.edge.helpers import WAIT_S, close_code, frames_until, metric, next_frame, running_up, used_is, ws_url
from tests.natsproc import NatsProcess
from ws_edge.app import EdgeServer


async def wait_status(http: aiohttp.ClientSession, url: str, status: int) -> None:
    async with asyncio.timeout(WAIT_S * 2):
        while True:
            try:
                async with http.get(url) as r:
                    if r.status == status:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


async def post_used(http: aiohttp.ClientSession, base: str, session_id: str, used: int) -> None:
    async with http.post(f"{base}/api/counters/context/{session_id}", json={"used": used}) as r:
        assert r.status == 200, await r.text()


@pytest.mark.slow
async def test_nats_restart_mid_session(
    own_nats: NatsProcess, settings: Settings, http: aiohttp.ClientSession, session_id: str
) -> None:
    own = edge_settings(settings, nats_url=own_nats.url)
    functions = FunctionsRuntime(own)
    await functions.start()
    try:
        async with EdgeServer(own) as edge, http.ws_connect(ws_url(edge.url, session_id)) as ws:
            await next_frame(ws)
            await post_used(http, edge.url, session_id, 42)
            before = await frames_until(ws, used_is(42))

            assert metric(edge, "nats_connected") == 1
            await asyncio.to_thread(own_nats.stop)
            await wait_status(http, f"{edge.url}/readyz", 503)
            assert metric(edge, "nats_connected") == 0
            async with http.post(f"{edge.url}/api/counters/context/{session_id}", json={"used": 1}) as r:
                assert r.status == 503
            await asyncio.to_thread(own_nats.start)

            # The socket stayed open and gets the current state again, as it was before the restart.
            again = await next_frame(ws)
            assert again == {**before[-1], "timestamp": again["timestamp"]}
            await wait_status(http, f"{edge.url}/readyz", 200)
            # Events may have been lost while NATS was away: a new socket reads the bucket, whatever the
            # session held (and however recently it read) before the reconnect.
            async with http.ws_connect(ws_url(edge.url, session_id)) as late:
                assert (await next_frame(late))["data"]["used"] == 42
            assert metric(edge, "states_reused_total") == 0
            await post_used(http, edge.url, session_id, 43)
            await frames_until(ws, used_is(43))
            assert metric(edge, "nats_reconnects_total") >= 1
            assert metric(edge, "nats_connected") == 1
    finally:
        await functions.stop()


@pytest.fixture
async def edge_process(functions: FunctionsRuntime, settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """``ctxmeter edge`` in a process of its own, on the test's NATS and bucket."""
    port = free_port()
    stderr = tmp_path / "edge.stderr"
    env = {**os.environ, "CTXMETER_KV_BUCKET": settings.kv_bucket, "CTXMETER_THROTTLE_MS": "0"}
    with stderr.open("wb") as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ctxmeter_cli", "edge", "--nats-url", settings.nats_url, "--port", str(port),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=errors,
        )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(WAIT_S):
            line = (await process.stdout.readline()).decode()
        assert f"http://127.0.0.1:{port}/" in line, line
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT_S):
            rest = (await process.stdout.read()).decode()
            # Its own exit code and stderr, not a ProcessLookupError, when it ended on its own.
            assert await process.wait() == 0, stderr.read_text(errors="replace")[-3000:]
        assert "stopped" in rest


async def test_two_edges_both_deliver_every_event(
    edge_process: str, make_edge: EdgeFactory, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with (
        make_edge(throttle_ms=0) as local,
        http.ws_connect(ws_url(local.url, session_id)) as here,
        http.ws_connect(ws_url(edge_process, session_id)) as there,
    ):
        await next_frame(here)
        await next_frame(there)
        values = [10, 20, 30, 40, 50]
        for n, used in enumerate(values):
            # Alternate the edge that takes the change: each delivers the other's too.
            await post_used(http, (local.url, edge_process)[n % 2], session_id, used)
            assert (await next_frame(here))["data"]["used"] == used
            assert (await next_frame(there))["data"]["used"] == used


async def test_graceful_shutdown_closes_sockets_with_1001(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with make_edge() as edge:
        sockets = [await http.ws_connect(ws_url(edge.url, f"{session_id}-{n % 2}")) for n in range(3)]
        for ws in sockets:
            await next_frame(ws)
        stopping = asyncio.create_task(edge.stop())
        codes = await asyncio.gather(*(close_code(ws) for ws in sockets))
        await stopping
    assert codes == [1001, 1001, 1001]
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"{edge.url}/healthz"):
            pass


@pytest.mark.slow
async def test_up_serves_the_edge(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_up(tmp_path) as up:
        base = f"http://127.0.0.1:{up.port}"
        assert re.search(rf"demo {re.escape(base)}/\n", up.printed), up.printed
        assert f"{base}/api/counters/context/" in up.printed
        session_id = f"up-{uuid.uuid4().hex[:8]}"
        async with http.ws_connect(ws_url(base, session_id)) as ws:
            await next_frame(ws)
            await post_used(http, base, session_id, 5)
            assert (await next_frame(ws))["data"]["used"] == 5
            # One process, one /metrics: the edge's and the functions'.
            async with http.get(f"{base}/metrics") as r:
                exposition = await r.text()
            assert "ctxmeter_edge_connections 1.0" in exposition
            assert 'ctxmeter_functions_request_duration_seconds_count{endpoint="set",outcome="ok"} 1.0' in exposition
            up.process.send_signal(signal.SIGINT)
            # The edge stops first: the socket is told the server is going away.
            assert await close_code(ws) == 1001
    assert "ctxmeter up: stopped" in up.printed


def _server_pids(store: Path) -> set[int]:
    """Pids of the nats-servers ``ctxmeter up`` started on this store (each writes its ports file)."""
    return {int(path.stem.rsplit("_", 1)[1]) for path in (store / "ports").glob("nats-server_*.ports")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
async def test_up_starts_its_nats_server_again_when_it_dies(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    store = tmp_path / "store"
    session_id = f"up-{uuid.uuid4().hex[:8]}"
    async with running_up(tmp_path) as up:
        base = f"http://127.0.0.1:{up.port}"
        async with http.ws_connect(ws_url(base, session_id)) as ws:
            await next_frame(ws)
            await post_used(http, base, session_id, 7)
            await frames_until(ws, used_is(7))
            (first,) = _server_pids(store)
            os.kill(first, signal.SIGKILL)
            await wait_status(http, f"{base}/readyz", 503)
            # Started again on the same port and store: the state is there, the socket still serves.
            await wait_status(http, f"{base}/readyz", 200)
            live = {pid for pid in _server_pids(store) if _alive(pid)}
            assert len(live) == 1 and first not in live
            async with http.get(f"{base}/api/counters/context/{session_id}") as r:
                assert (await r.json())["used"] == 7
            await post_used(http, base, session_id, 8)
            await frames_until(ws, used_is(8))
    assert "nats-server exited" in up.errors()
