"""A socket's first frames, over a real loopback connection: its state always comes first."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.edge.helpers import WAIT_S, context_event, eventually
from ws_edge.metrics import EdgeMetrics
from ws_edge.peer import Peer, PeerRules
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
    servers: list[asyncio.Server] = []

    async def run(before_open: Scenario, first: list[Frame]) -> list[dict[str, object]]:
        # The peer as the protocol of a real loopback connection (the handshake is the edge's, not its).
        peer = Peer(SESSION, PeerRules(EdgeMetrics(), write_timeout_s=5, heartbeat_s=30, on_closed=lambda _: None))
        server = await asyncio.get_running_loop().create_server(lambda: peer, "127.0.0.1", 0)
        servers.append(server)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        try:
            await eventually(lambda: peer.transport is not None)
            before_open(peer)  # events relayed while the first state was being read
            peer.open_with(first)
            return [json.loads(await read_text_frame(reader)) for _ in range(2)]
        finally:
            writer.close()

    yield run
    for server in servers:
        server.close()
        await server.wait_closed()


async def read_text_frame(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(WAIT_S):
        first, size = await reader.readexactly(2)
        assert first == 0x81, "a final, unmasked text frame"
        if size == 126:
            (size,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(size)


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
