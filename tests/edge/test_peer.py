"""A socket's first frames, over a real aiohttp server and client: its state always comes first."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.edge.helpers import context_event
from ws_edge.metrics import EdgeMetrics
from ws_edge.peer import Peer
from ws_edge.state import CONTEXT_KIND, TOKENS_KIND, Frame

SESSION = "peer-order"

# (what reaches the peer before its first state is out) -> frames the client must see, in order
Scenario = Callable[[Peer], None]


def token_event(revision: int, count: int) -> bytes:
    data = {"session_id": SESSION, "count": count, "revision": revision}
    return json.dumps({"type": TOKENS_KIND, "session_id": SESSION, "data": data, "timestamp": 0.0}).encode()


# Serve one peer: what reaches it before its first state is out, that state -> the frames a client saw.
ServePeer = Callable[[Scenario, list[Frame]], Awaitable[list[dict[str, object]]]]


@pytest.fixture
async def serve_peer() -> AsyncIterator[ServePeer]:
    servers: list[TestServer] = []

    async def run(before_open: Scenario, first: list[Frame]) -> list[dict[str, object]]:
        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            peer = Peer(request, ws, SESSION, EdgeMetrics(), write_timeout_s=5)
            before_open(peer)  # events relayed while the first state was being read
            peer.open_with(first)
            async for _ in ws:
                pass
            await peer.close()
            return ws

        app = web.Application()
        app.router.add_get("/", handler)
        server = TestServer(app)
        servers.append(server)
        await server.start_server()
        async with aiohttp.ClientSession() as client, client.ws_connect(server.make_url("/")) as ws:
            frames = [json.loads((await ws.receive(timeout=5)).data) for _ in range(2)]
        return frames

    yield run
    for server in servers:
        await server.close()


async def test_state_first_even_when_a_newer_draft_raced_ahead(serve_peer: ServePeer) -> None:
    first = [Frame(CONTEXT_KIND, 5, context_event(SESSION, 100, 5)), Frame(TOKENS_KIND, 3, token_event(3, 1))]
    frames = await serve_peer(lambda peer: peer.offer(TOKENS_KIND, 9, token_event(9, 42)), first)
    assert [frame["type"] for frame in frames] == [CONTEXT_KIND, TOKENS_KIND]
    assert frames[1]["data"]["count"] == 42  # type: ignore[index]  # the newer draft, not the state's older one


async def test_a_newer_context_event_replaces_the_state_in_its_place(serve_peer: ServePeer) -> None:
    first = [Frame(CONTEXT_KIND, 5, context_event(SESSION, 100, 5)), Frame(TOKENS_KIND, 3, token_event(3, 1))]
    frames = await serve_peer(lambda peer: peer.offer(CONTEXT_KIND, 8, context_event(SESSION, 777, 8)), first)
    assert [frame["type"] for frame in frames] == [CONTEXT_KIND, TOKENS_KIND]
    assert frames[0]["data"]["used"] == 777  # type: ignore[index]


async def test_an_older_event_never_replaces_the_state(serve_peer: ServePeer) -> None:
    first = [Frame(CONTEXT_KIND, 5, context_event(SESSION, 100, 5)), Frame(TOKENS_KIND, 3, token_event(3, 1))]
    frames = await serve_peer(lambda peer: peer.offer(CONTEXT_KIND, 2, context_event(SESSION, 1, 2)), first)
    assert frames[0]["data"]["used"] == 100  # type: ignore[index]
