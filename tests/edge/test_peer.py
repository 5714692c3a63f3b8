"""A socket's first frames: its state always comes first, and nothing older ever follows it (the session's
revisions decide, in one place), over a real loopback connection for the peer's part."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator

import pytest

from tests.edge.helpers import WAIT_S, context_event, eventually
from ws_edge.metrics import EdgeMetrics
from ws_edge.peer import Peer, PeerRules, text_frame
from ws_edge.state import CONTEXT_KIND, TOKENS_KIND, Frame
from ws_edge.throttle import SessionThrottle

SESSION = "peer-order"


def token_event(revision: int, count: int) -> bytes:
    data = {"session_id": SESSION, "count": count, "revision": revision}
    return json.dumps({"type": TOKENS_KIND, "session_id": SESSION, "data": data, "timestamp": 0.0}).encode()


STATE = [Frame(CONTEXT_KIND, 5, context_event(SESSION, 100, 5)), Frame(TOKENS_KIND, 3, token_event(3, 1))]


def throttle(interval_s: float = 0.0) -> tuple[SessionThrottle, list[bytes]]:
    sent: list[bytes] = []
    return SessionThrottle(interval_s, lambda kind, frame: sent.append(frame)), sent


async def test_state_first_even_when_a_newer_draft_raced_ahead() -> None:
    session, _ = throttle()
    session.offer(TOKENS_KIND, 9, token_event(9, 42))  # relayed while the state was being read
    first = [json.loads(frame) for frame in session.first_state(STATE)]
    assert [frame["type"] for frame in first] == [CONTEXT_KIND, TOKENS_KIND]
    assert first[1]["data"]["count"] == 42  # the newer draft, not the state's older one


async def test_a_newer_context_event_replaces_the_state_in_its_place() -> None:
    session, _ = throttle()
    session.offer(CONTEXT_KIND, 8, context_event(SESSION, 777, 8))
    first = [json.loads(frame) for frame in session.first_state(STATE)]
    assert [frame["type"] for frame in first] == [CONTEXT_KIND, TOKENS_KIND]
    assert first[0]["data"]["used"] == 777


async def test_nothing_older_than_a_first_state_follows_it() -> None:
    session, sent = throttle()
    session.offer(CONTEXT_KIND, 2, context_event(SESSION, 1, 2))
    assert json.loads(session.first_state(STATE)[0])["data"]["used"] == 100
    assert not session.offer(CONTEXT_KIND, 4, context_event(SESSION, 4, 4))  # older than the state shown
    assert session.offer(CONTEXT_KIND, 5, context_event(SESSION, 5, 5))  # the same revision passes
    assert [json.loads(frame)["data"]["used"] for frame in sent] == [1, 5]


async def test_a_first_state_newer_than_a_waiting_frame_takes_its_place() -> None:
    session, sent = throttle(interval_s=0.05)
    session.offer(CONTEXT_KIND, 1, context_event(SESSION, 1, 1))  # sent at once
    session.offer(CONTEXT_KIND, 2, context_event(SESSION, 2, 2))  # waits for the interval
    session.first_state(STATE)  # revision 5, read for a new socket
    await asyncio.sleep(0.15)
    assert [json.loads(frame)["data"]["used"] for frame in sent] == [1, 100]
    session.close()


@pytest.fixture
async def served_peer() -> AsyncIterator[tuple[Peer, asyncio.StreamReader]]:
    # The peer as the protocol of a real loopback connection (the handshake is the edge's, not its).
    peer = Peer(SESSION, PeerRules(EdgeMetrics(), write_timeout_s=5, heartbeat_s=30, on_closed=lambda _: None))
    server = await asyncio.get_running_loop().create_server(lambda: peer, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    try:
        await eventually(lambda: peer.transport is not None)
        yield peer, reader
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def read_text_frame(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(WAIT_S):
        first, size = await reader.readexactly(2)
        assert first == 0x81, "a final, unmasked text frame"
        if size == 126:
            (size,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(size)


async def test_a_peer_sends_nothing_before_its_first_state(served_peer: tuple[Peer, asyncio.StreamReader]) -> None:
    peer, reader = served_peer
    assert not peer.offer(CONTEXT_KIND, text_frame(context_event(SESSION, 1, 1)))  # its state will be newer
    peer.pong([])  # a ping answered before the state is out: held, then sent after it
    peer.open_with([text_frame(frame.data) for frame in STATE])
    frames = [json.loads(await read_text_frame(reader)) for _ in range(3)]
    assert [frame["type"] for frame in frames] == [CONTEXT_KIND, TOKENS_KIND, "pong"]
    assert frames[0]["data"]["used"] == 100
