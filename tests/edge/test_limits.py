"""Limits enforced before and after the upgrade: invalid ids, frame size, frame flood, connect rate, cap."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import WSServerHandshakeError

from ctxmeter.limits import INBOUND_FRAME_BURST, MAX_INBOUND_FRAME_BYTES
from functions.runner import FunctionsRuntime
from tests.edge.conftest import EdgeFactory
from tests.edge.helpers import RawSocket, close_code, eventually, metric, next_frame, ws_url
from tests.edge.test_http import INVALID_IDS
from ws_edge.app import EdgeServer
from ws_edge.sockets import SOCKETS


async def handshake_status(http: aiohttp.ClientSession, url: str, **kwargs: object) -> int:
    with pytest.raises(WSServerHandshakeError) as refused:
        async with http.ws_connect(url, **kwargs):  # type: ignore[arg-type]
            pass
    return refused.value.status


@pytest.mark.parametrize("bad", INVALID_IDS)
async def test_invalid_session_id_rejects_the_upgrade(edge: EdgeServer, http: aiohttp.ClientSession, bad: str) -> None:
    assert await handshake_status(http, ws_url(edge.url, bad)) == 400
    assert len(edge.app[SOCKETS].peers) == 0


async def test_frame_at_the_limit_is_fine_and_over_it_closes_1009(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        await ws.send_str(" " * (MAX_INBOUND_FRAME_BYTES - len("ping")) + "ping")
        assert await next_frame(ws) == {"type": "pong"}
        await ws.send_str("x" * (MAX_INBOUND_FRAME_BYTES + 1))
        assert await close_code(ws) == 1009


async def test_binary_frame_over_the_limit_closes_1009(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        await ws.send_bytes(b"\0" * (MAX_INBOUND_FRAME_BYTES * 4))
        assert await close_code(ws) == 1009


async def test_flood_closes_1008(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        for _ in range(int(INBOUND_FRAME_BURST) * 5):
            await ws.send_str("ping")
        assert await close_code(ws) == 1008
    assert metric(edge, "sockets_closed_by_policy_total", reason="flood") == 1


async def test_connect_rate_per_ip_is_429(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    # A refill so slow that only the burst counts, whatever the machine's speed.
    async with make_edge(ip_connect_rate=0.001, ip_connect_burst=2) as edge:
        for _ in range(2):
            async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
                await next_frame(ws)
        assert await handshake_status(http, ws_url(edge.url, session_id)) == 429
        # Refused before anything else: an invalid id is not even looked at.
        assert await handshake_status(http, ws_url(edge.url, "a.b")) == 429
        async with http.get(f"{edge.url}/api/ws/counters/{session_id}") as r:
            assert r.status == 429
            assert (await r.json())["error"]["code"] == "rate_limited"
        # The HTTP API is not a connection: it is not limited.
        async with http.get(f"{edge.url}/api/counters/context/{session_id}") as r:
            assert r.status == 200


async def test_connection_cap_is_503_and_a_slot_frees_on_close(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with make_edge(max_connections=2) as edge:
        async with http.ws_connect(ws_url(edge.url, session_id)) as first:
            await next_frame(first)
            async with http.ws_connect(ws_url(edge.url, "other")) as second:
                await next_frame(second)
                assert await handshake_status(http, ws_url(edge.url, session_id)) == 503
            await eventually(lambda: len(edge.app[SOCKETS].peers) == 1)
            async with http.ws_connect(ws_url(edge.url, session_id)) as third:
                assert (await next_frame(third))["type"] == "context_update"
        assert metric(edge, "upgrades_rejected_total", reason="unavailable") == 1


async def test_peer_that_stops_answering_pings_is_closed(
    make_edge: EdgeFactory, functions: FunctionsRuntime, session_id: str
) -> None:
    async with make_edge(ws_heartbeat=0.2) as edge:
        # Handshakes, then never reads, so it never answers a protocol ping either.
        silent = await RawSocket.connect(edge.url, session_id)
        try:
            await eventually(lambda: len(edge.app[SOCKETS].peers) == 0)
            await silent.wait_closed_by_server()
        finally:
            silent.close()


async def test_socket_is_closed_1013_while_the_state_cannot_be_read(
    make_edge: EdgeFactory, http: aiohttp.ClientSession, session_id: str
) -> None:
    # No functions have run for this test's bucket, so it does not exist yet: nothing to read.
    async with make_edge() as edge, http.ws_connect(ws_url(edge.url, session_id)) as ws:
        assert await close_code(ws) == 1013
