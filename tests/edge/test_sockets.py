"""The edge's own WebSocket protocol, after aiohttp's handshake: against a real edge, at the frame level."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import socket
import struct
from pathlib import Path
from typing import Final

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from ctxmeter.limits import INBOUND_FRAME_BURST, LISTEN_BACKLOG, SOCKET_SEND_BUFFER_BYTES
from functions.runner import FunctionsRuntime
from tests.edge.conftest import EdgeFactory
from tests.edge.helpers import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WAIT_S,
    FrameReader,
    RawSocket,
    client_frame,
    close_code_of,
    context_event,
    eventually,
    kernel_send_queue,
    metric,
    next_frame,
    publish_events,
    send,
    ws_url,
)
from tests.tools import tool_missing
from ws_edge.app import EdgeServer
from ws_edge.guard import GUARD
from ws_edge.sockets import SOCKETS

# RFC 6455 7.1.7 says "at once"; a second is far more than a loopback needs and far less than the 5 s the
# edge once waited for a close frame.
FAIL_WITHIN_S: Final = 1.0
# How long a client that never reads is watched: the slow-socket timeout (1 s in that test) and the time
# to fill a bounded send buffer fit well within it; an auto-tuned one takes minutes.
NEVER_READS_FOR_S: Final = 6.0


async def opened(edge: EdgeServer, session_id: str) -> tuple[RawSocket, FrameReader]:
    raw = await RawSocket.connect(edge.url, session_id)
    reader = FrameReader(raw)
    first = await reader.next()
    assert first is not None and first[0] == OP_TEXT and b'"context_update"' in first[1]
    return raw, reader


async def server_close(reader: FrameReader, wait_s: float = WAIT_S) -> int | None:
    """The code of the server's close frame (skipping other frames), None if it hung up without one."""
    async with asyncio.timeout(wait_s):
        while (got := await reader.next()) is not None:
            if got[0] == OP_CLOSE:
                return int(struct.unpack("!H", got[1][:2])[0])
    return None


async def test_an_open_socket_holds_no_request(
    edge: EdgeServer, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    """Each handshake's request is over (its latency recorded) while its socket stays open and served."""
    sockets = [await http.ws_connect(ws_url(edge.url, session_id)) for _ in range(3)]
    try:
        for ws in sockets:
            await next_frame(ws)
        assert (
            metric(
                edge, "http_request_duration_seconds_count", route="/api/ws/counters/{sid}", method="GET", status="101"
            )
            == 3
        )
        assert len(edge.app[SOCKETS].peers) == len(edge.app[SOCKETS].peers) == 3
        assert edge.app[GUARD].open == 3  # each still holds a connection slot
        # On a client of its own, whose kept-alive connection is gone when it closes.
        async with (
            aiohttp.ClientSession() as poster,
            poster.post(f"{edge.url}/api/counters/context/{session_id}", json={"used": 7, "total": 100}) as r,
        ):
            assert r.status == 200
        for ws in sockets:
            assert (await next_frame(ws))["data"]["used"] == 7
    finally:
        for ws in sockets:
            await ws.close()
    await eventually(lambda: edge.app[GUARD].open == 0 and not edge.app[SOCKETS].peers)


async def test_a_fragmented_ping_is_answered(edge: EdgeServer, functions: FunctionsRuntime, session_id: str) -> None:
    raw, reader = await opened(edge, session_id)
    try:
        await send(
            raw,
            client_frame(OP_TEXT, b"pi", fin=False)
            + client_frame(OP_PING, b"!")
            + client_frame(OP_CONTINUATION, b"ng"),
        )
        assert await reader.next() == (OP_PONG, b"!")  # the control frame between the fragments
        got = await reader.next()
        assert got == (OP_TEXT, b'{"type":"pong"}')
    finally:
        raw.close()


async def test_the_client_close_is_echoed_and_the_connection_ends(
    edge: EdgeServer, functions: FunctionsRuntime, session_id: str
) -> None:
    raw, reader = await opened(edge, session_id)
    try:
        await send(raw, client_frame(OP_CLOSE, struct.pack("!H", 4000) + b"bye"))
        assert await server_close(reader) == 4000
        assert await reader.next() is None  # then the server hangs up
    finally:
        raw.close()
    await eventually(lambda: len(edge.app[SOCKETS].peers) == 0)


# RFC 6455's rules for a server, each broken by a client: the close code the edge must answer with.
VIOLATIONS: Final = {
    "unmasked": (client_frame(OP_TEXT, b"ping", masked=False), 1002),
    "reserved bits (no extension agreed)": (client_frame(OP_TEXT, b"ping", rsv=0x40), 1002),
    "reserved data opcode": (client_frame(0x3, b"?"), 1002),
    "reserved control opcode": (client_frame(0xB, b"?"), 1002),
    "fragmented control frame": (client_frame(OP_PING, b"x", fin=False), 1002),
    "control frame over 125 bytes": (client_frame(OP_PING, b"x" * 200), 1002),
    # Over the message limit too: the library checks the size before the kind (docs/edge.md).
    "control frame over 4 KiB": (client_frame(OP_PING, b"x" * 5000), 1009),
    "continuation with nothing to continue": (client_frame(OP_CONTINUATION, b"x"), 1002),
    "new message inside a fragmented one": (
        client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"),
        1002,
    ),
    "close frame of 1 byte": (client_frame(OP_CLOSE, b"\x03"), 1002),
    "close code only for reporting": (client_frame(OP_CLOSE, struct.pack("!H", 1005)), 1002),
    "close code out of range": (client_frame(OP_CLOSE, struct.pack("!H", 999)), 1002),
    "close reason not UTF-8": (client_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),
    "text not UTF-8": (client_frame(OP_TEXT, b"\xff\xfeping"), 1007),
    # Refused at its first fragment: the rest of the message never comes.
    "unfinished fragmented text not UTF-8": (client_frame(OP_TEXT, b"pi\xff", fin=False), 1007),
    "message over 4 KiB": (client_frame(OP_BINARY, b"x" * 4097), 1009),
    "fragmented message over 4 KiB": (
        client_frame(OP_TEXT, b"x" * 2049, fin=False) + client_frame(OP_CONTINUATION, b"x" * 2049),
        1009,
    ),
    "64-bit length with its top bit set": (struct.pack("!BBQ", 0x82, 0xFF, 1 << 63) + b"mask", 1009),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
async def test_a_violation_fails_the_connection_at_once(
    edge: EdgeServer, functions: FunctionsRuntime, session_id: str, violation: str
) -> None:
    """RFC 6455 7.1.7: the close frame with the rule's code, then the server closes TCP without waiting for
    the client's close frame, and processes nothing the client sent after the violation."""
    data, code = VIOLATIONS[violation]
    raw, reader = await opened(edge, session_id)
    try:
        # A ping after the violation: never answered. No close frame from the client, ever.
        await send(raw, data + client_frame(OP_PING, b"after") + client_frame(OP_TEXT, b"ping"))
        frames = []
        async with asyncio.timeout(FAIL_WITHIN_S):
            while (frame := await reader.next()) is not None:
                frames.append(frame)
        assert [opcode for opcode, _ in frames] == [OP_CLOSE], frames
        assert close_code_of(frames[0][1]) == code
    finally:
        raw.close()
    await eventually(lambda: not edge.app[SOCKETS].peers)
    reason = "too_big" if code == 1009 else "protocol_error"
    assert metric(edge, "sockets_closed_by_policy_total", reason=reason) == 1


async def test_a_violation_is_failed_even_while_the_client_keeps_the_connection_open(
    edge: EdgeServer, functions: FunctionsRuntime, session_id: str
) -> None:
    """The edge's end of TCP comes at once; what the client sends after it is not processed (no pong for
    thousands of pings), and the connection is gone soon after even though the client never closes it."""
    raw, reader = await opened(edge, session_id)
    try:
        await send(raw, client_frame(OP_TEXT, b"x", masked=False) + client_frame(OP_PING) * 20_000)
        counts, code = await reader.until_close()
        assert (counts, code) == ({}, 1002)
        async with asyncio.timeout(FAIL_WITHIN_S):
            assert await reader.next() is None  # EOF: the edge has closed its side
        with contextlib.suppress(ConnectionError):
            await send(raw, client_frame(OP_PING) * 1000)  # still open on this side, and still talking
        await eventually(lambda: not edge.app[SOCKETS].peers)
    finally:
        raw.close()


async def test_random_bytes_after_the_handshake_never_hurt_the_edge(
    edge: EdgeServer,
    functions: FunctionsRuntime,
    http: aiohttp.ClientSession,
    session_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Garbage, half frames and valid frames in random mixes on 40 sockets: each ends in a close frame
    with a code RFC 6455 allows for what it sent (or stays open), no error is logged, and a well-behaved
    socket of the same session keeps getting its events throughout."""
    rng = random.Random(6455)
    pieces = [
        client_frame(OP_TEXT, b"ping"),
        client_frame(OP_PING, b"p"),
        client_frame(OP_TEXT, b"pi", fin=False),
        client_frame(OP_CONTINUATION, b"ng"),
        client_frame(OP_TEXT, b"\xc3"),
        client_frame(OP_TEXT, b"x", masked=False),
        client_frame(0x3, b"?"),
        client_frame(OP_CLOSE, b"\x03\xe8"),
        client_frame(OP_CLOSE, b"\x00"),
        struct.pack("!BBQ", 0x82, 0xFF, 1 << 40) + b"mask",
    ]
    allowed = {1000, 1002, 1007, 1008, 1009}
    OPEN = -1
    watcher = await http.ws_connect(ws_url(edge.url, session_id))
    try:
        await next_frame(watcher)

        async def hostile(index: int) -> int | None:
            raw, reader = await opened(edge, session_id)
            try:
                data = b"".join(
                    rng.choice(pieces) if rng.random() < 0.7 else os.urandom(rng.randint(1, 40))
                    for _ in range(rng.randint(1, 30))
                )
                with contextlib.suppress(ConnectionError):
                    await send(raw, data)
                    await send(raw, client_frame(OP_CLOSE, struct.pack("!H", 1000)))
                try:
                    return await server_close(reader, wait_s=3)
                except TimeoutError:
                    return OPEN  # the bytes ended inside a frame, which the server still waits for
            finally:
                raw.close()

        with caplog.at_level(logging.WARNING):
            codes = await asyncio.gather(*(hostile(index) for index in range(40)))
            for used in (11, 12):
                async with http.post(
                    f"{edge.url}/api/counters/context/{session_id}", json={"used": used, "total": 100}
                ) as r:
                    assert r.status == 200
                assert (await next_frame(watcher))["data"]["used"] == used
        assert {code for code in codes if code not in (None, OPEN)} <= allowed
        assert sum(code in allowed for code in codes) > 20  # most were closed, each for a reason
        assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    finally:
        await watcher.close()
    await eventually(lambda: len(edge.app[SOCKETS].peers) == 0)


async def test_a_client_that_closes_but_never_reads_is_dropped(
    make_edge: EdgeFactory, functions: FunctionsRuntime, nc: NATS, session_id: str
) -> None:
    """Its close is answered into full buffers: the connection cannot finish closing, so it is dropped."""
    async with make_edge(throttle_ms=0, slow_socket_timeout=30) as edge:
        stuck = await RawSocket.connect(edge.url, session_id, receive_buffer=4096)
        try:
            await eventually(lambda: metric(edge, "frames_sent_total") >= 1)  # its first state: relaying
            padding = "x" * 64 * 1024
            await publish_events(nc, session_id, [context_event(session_id, n, n, model=padding) for n in range(1, 60)])
            # Frames wait (and replace each other) once the socket's buffers are full.
            await eventually(lambda: metric(edge, "frames_coalesced_total") > 0)
            await send(stuck, client_frame(OP_CLOSE, struct.pack("!H", 1000)))
            # Not a byte read: the edge gives up on the close after its close timeout, well before the
            # slow-socket timeout (30 s) would have dropped it.
            await eventually(lambda: len(edge.app[SOCKETS].peers) == 0)
            await stuck.wait_closed_by_server()
        finally:
            stuck.close()


async def test_a_paused_socket_is_dropped_even_with_no_frame_waiting(
    make_edge: EdgeFactory, functions: FunctionsRuntime, nc: NATS, session_id: str
) -> None:
    """One frame larger than the buffers on both sides leaves the socket paused with nothing queued."""
    async with make_edge(throttle_ms=0, slow_socket_timeout=0.5) as edge:
        stuck = await RawSocket.connect(edge.url, session_id, receive_buffer=4096)
        try:
            await eventually(lambda: metric(edge, "frames_sent_total") >= 1)
            (peer,) = edge.app[SOCKETS].peers
            assert peer.transport is not None
            peer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            await publish_events(nc, session_id, [context_event(session_id, 1, 1, model="x" * 256 * 1024)])
            await eventually(lambda: len(edge.app[SOCKETS].peers) == 0)
            assert metric(edge, "slow_sockets_closed_total") == 1
        finally:
            stuck.close()


async def test_a_socket_that_never_reads_fills_a_bounded_send_buffer_and_is_dropped(
    make_edge: EdgeFactory, functions: FunctionsRuntime, nc: NATS, session_id: str
) -> None:
    """A client that never reads while its session changes 100 times a second: left to itself the kernel
    grew the edge's send buffer to megabytes, writes never backed up and the slow-socket rule never
    started. The kernel's own figures (``ss -tm``) show the bound; the documented rule then drops it."""
    ss = shutil.which("ss")
    if ss is None:
        tool_missing("ss (iproute2) is not installed", "a socket's send queue is read from the kernel with ss")
    async with make_edge(throttle_ms=0, slow_socket_timeout=1.0) as edge:
        stuck = await RawSocket.connect(edge.url, session_id, receive_buffer=4096)
        try:
            await eventually(lambda: metric(edge, "frames_sent_total") >= 1)
            edge_port = int(edge.url.rsplit(":", 1)[1])
            client_port = stuck.sock.getsockname()[1]
            loop = asyncio.get_running_loop()
            started = loop.time()
            padding = "x" * 1024
            peak_queue = peak_buffer = revision = 0
            while edge.app[SOCKETS].peers and loop.time() - started < NEVER_READS_FOR_S:
                revision += 1
                await publish_events(nc, session_id, [context_event(session_id, revision, revision, model=padding)])
                if revision % 10 == 0 and (figures := await kernel_send_queue(ss, edge_port, client_port)):
                    peak_queue, peak_buffer = max(peak_queue, figures[0]), max(peak_buffer, figures[1])
                await asyncio.sleep(0.01)
            # Linux doubles a send buffer that is set for its own bookkeeping.
            assert 0 < peak_buffer <= 2 * SOCKET_SEND_BUFFER_BYTES, peak_buffer
            assert peak_queue <= 2 * SOCKET_SEND_BUFFER_BYTES, peak_queue
            assert not edge.app[SOCKETS].peers, "still open: its writes never backed up"
            assert metric(edge, "slow_sockets_closed_total") == 1
        finally:
            stuck.close()


async def test_a_close_frame_is_honoured_over_the_flood_limit(
    edge: EdgeServer, functions: FunctionsRuntime, session_id: str
) -> None:
    raw, reader = await opened(edge, session_id)
    try:
        pings = client_frame(OP_PING) * int(INBOUND_FRAME_BURST)
        await send(raw, pings + client_frame(OP_CLOSE, struct.pack("!H", 1000)))
        assert await server_close(reader) == 1000  # its close, echoed: not 1008 with the close lost
        assert await reader.next() is None
    finally:
        raw.close()


async def test_a_socket_adopted_while_the_edge_closes_gets_1001(
    edge: EdgeServer, functions: FunctionsRuntime, session_id: str
) -> None:
    edge.app[SOCKETS].closing = True  # as ``close_all`` leaves it, for a handshake still under way
    raw = await RawSocket.connect(edge.url, session_id)
    try:
        assert await server_close(FrameReader(raw)) == 1001
    finally:
        raw.close()
    await eventually(lambda: len(edge.app[SOCKETS].peers) == 0)


async def test_the_edge_listens_with_a_backlog_for_thousands_of_connects_at_once(edge: EdgeServer) -> None:
    """asyncio's default backlog (100) overflowed when 18,000 clients connected at once: the kernel dropped
    handshakes and clients were reset. ``ss -lt`` shows a listening socket's backlog as its Send-Q."""
    ss = shutil.which("ss")
    if ss is None:
        tool_missing("ss (iproute2) is not installed", "a listening socket's backlog is read from the kernel with ss")
    port = int(edge.url.rsplit(":", 1)[1])
    process = await asyncio.create_subprocess_exec(ss, "-ltnH", f"( sport = :{port} )", stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    backlogs = {int(line.split()[2]) for line in out.decode().splitlines() if line.strip()}
    cap = int(await asyncio.to_thread(Path("/proc/sys/net/core/somaxconn").read_text))
    assert backlogs == {min(LISTEN_BACKLOG, cap)}
