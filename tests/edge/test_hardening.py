"""Attacks on the edge that once held connections forever, escaped a limit, crossed sites or crashed a
handler, each reproduced against a real edge on real NATS: one request must never take ctxmeter down."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
import jwt
import pytest
from yarl import URL

from ctxmeter.limits import INBOUND_FRAME_BURST, MAX_INBOUND_FRAME_BYTES
from functions.runner import FunctionsRuntime
from tests.edge.conftest import EdgeFactory
from tests.edge.helpers import (
    OP_BINARY,
    OP_PING,
    OP_PONG,
    WAIT_S,
    FrameReader,
    RawSocket,
    client_frame,
    close_code,
    eventually,
    metric,
    next_frame,
    send,
    ws_url,
)
from tests.edge.test_http import expect_error
from tests.edge.test_limits import handshake_status
from ws_edge.app import EdgeServer
from ws_edge.guard import GUARD
from ws_edge.sockets import SOCKETS

# Request timeouts short enough that a test waits them out in well under a second.
SHORT_S: Final = 0.3
# How often a slow client sends one more byte or header line: well inside SHORT_S, so each step alone
# would keep a per-read idle timeout from ever firing.
DRIP_S: Final = 0.1
SECRET: Final = "test-secret-with-enough-length-for-hs256"


# -- raw TCP and WebSocket helpers ------------------------------------------------------------


async def tcp_connect(base: str) -> RawSocket:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    except BaseException:
        sock.close()
        raise
    return RawSocket(sock)


async def drip(raw: RawSocket, first: bytes, step: bytes) -> None:
    """Send ``first``, then ``step`` every DRIP_S until the server hangs up."""
    with contextlib.suppress(ConnectionError):
        await send(raw, first)
        while True:
            await asyncio.sleep(DRIP_S)
            await send(raw, step)


@contextlib.asynccontextmanager
async def dripping(raw: RawSocket, first: bytes, step: bytes) -> AsyncIterator[None]:
    task = asyncio.create_task(drip(raw, first, step))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raw.close()


async def read_response(raw: RawSocket) -> bytes:
    """One HTTP response with a Content-Length, read from a kept-alive connection."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(WAIT_S):
        while b"\r\n\r\n" not in data:
            chunk = await loop.sock_recv(raw.sock, 4096)
            assert chunk, "closed before the response"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            chunk = await loop.sock_recv(raw.sock, 4096)
            assert chunk, "closed in the body"
            body += chunk
    return head


def get(path: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


# -- 5: slow clients --------------------------------------------------------------------------


async def test_slow_request_heads_are_cut_off_while_others_are_served(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession
) -> None:
    """Slowloris: many connections sending their request head a byte at a time, so that it never ends
    (one header value, growing: aiohttp's limit on header lines never comes into play)."""
    async with make_edge(header_timeout=SHORT_S) as edge:
        slow = [await tcp_connect(edge.url) for _ in range(30)]
        async with contextlib.AsyncExitStack() as stack:
            for raw in slow:
                await stack.enter_async_context(dripping(raw, b"GET /healthz HTTP/1.1\r\nX-Slow: ", b"a"))
            async with http.get(f"{edge.url}/healthz", headers={"Connection": "close"}) as r:
                assert r.status == 200
            await asyncio.gather(*(raw.wait_closed_by_server() for raw in slow))
        await eventually(lambda: edge.app[GUARD].open == 0)


async def test_connection_that_sends_nothing_is_closed(make_edge: EdgeFactory, functions: FunctionsRuntime) -> None:
    async with make_edge(header_timeout=SHORT_S) as edge:
        silent = await tcp_connect(edge.url)
        try:
            await silent.wait_closed_by_server()
        finally:
            silent.close()


async def test_idle_keep_alive_connection_is_closed(make_edge: EdgeFactory, functions: FunctionsRuntime) -> None:
    async with make_edge(keepalive_timeout=SHORT_S) as edge:
        raw = await tcp_connect(edge.url)
        try:
            await send(raw, get("/healthz"))
            assert (await read_response(raw)).startswith(b"HTTP/1.1 200")
            await raw.wait_closed_by_server()
        finally:
            raw.close()


async def test_kept_alive_connection_may_pause_longer_than_the_head_timeout(
    make_edge: EdgeFactory, functions: FunctionsRuntime
) -> None:
    """The head timeout runs from a request's first byte, not from the previous response: an idle
    keep-alive connection is the keep-alive timeout's business."""
    async with make_edge(header_timeout=SHORT_S, keepalive_timeout=WAIT_S) as edge:
        raw = await tcp_connect(edge.url)
        try:
            for _ in range(2):
                await send(raw, get("/healthz"))
                assert (await read_response(raw)).startswith(b"HTTP/1.1 200")
                await asyncio.sleep(SHORT_S * 3)
        finally:
            raw.close()


async def test_slow_request_body_is_cut_off(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with make_edge(body_timeout=SHORT_S) as edge:
        raw = await tcp_connect(edge.url)
        head = (
            f"POST /api/counters/context/{session_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        ).encode()
        async with dripping(raw, head + b'{"used": 1', b" "):
            await raw.wait_closed_by_server()
        await eventually(lambda: edge.app[GUARD].open == 0)
        async with http.get(f"{edge.url}/api/counters/context/{session_id}") as r:
            assert (await r.json())["revision"] == 0


async def test_open_socket_outlives_the_request_timeouts(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with (
        make_edge(header_timeout=SHORT_S, body_timeout=SHORT_S, keepalive_timeout=SHORT_S) as edge,
        http.ws_connect(ws_url(edge.url, session_id)) as ws,
    ):
        await next_frame(ws)
        await asyncio.sleep(SHORT_S * 3)
        await ws.send_str("ping")
        assert await next_frame(ws) == {"type": "pong"}


async def test_plain_http_connections_count_against_the_cap(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with make_edge(max_connections=2) as edge:
        guard = edge.app[GUARD]
        idle = [await tcp_connect(edge.url) for _ in range(2)]
        try:
            await eventually(lambda: guard.open == 2)
            # The third connection is answered, in JSON, and closed.
            async with http.get(f"{edge.url}/healthz") as r:
                await expect_error(r, 503, "unavailable")
                assert r.headers.get("Connection", "").lower() == "close"
            assert await handshake_status(http, ws_url(edge.url, session_id)) == 503
            assert metric(edge, "upgrades_rejected_total", reason="unavailable") == 1
        finally:
            idle.pop().close()
        try:
            await eventually(lambda: guard.open == 1)
            async with http.get(f"{edge.url}/healthz") as r:
                assert r.status == 200
        finally:
            idle.pop().close()


async def test_the_hand_over_still_fits_aiohttp(
    edge: EdgeServer, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    """``ws_edge.sockets.hand_over`` makes aiohttp's handler of a connection let go of it without closing
    it (the one place the edge reaches into aiohttp). If aiohttp changes how its handler ends, this fails
    first: the socket would be closed under the peer, or aiohttp would keep the connection (with its
    request machinery) for the socket's whole life."""
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        runner = edge._runner
        assert runner is not None and runner.server is not None
        await eventually(lambda: not runner.server.connections)  # aiohttp holds nothing of it
        assert edge.app[GUARD].open == 1  # the socket still holds its slot
        await ws.send_str("ping")
        assert await next_frame(ws) == {"type": "pong"}


async def test_guarded_site_serves_counts_and_stops_listening(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession
) -> None:
    async with make_edge() as edge:
        async with http.get(f"{edge.url}/healthz") as r:
            assert r.status == 200
        # The client keeps its connection alive: counted until it closes.
        assert edge.app[GUARD].open == 1
        url = edge.url
    with pytest.raises(ConnectionRefusedError):
        await tcp_connect(url)


async def test_an_upgrade_the_client_resets_is_no_error(
    edge: EdgeServer, functions: FunctionsRuntime, session_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that resets its connection right after the upgrade request logged an ERROR with a 2.7 KB
    traceback for a 165-byte request: a client's reset is its own doing."""
    resets = 5
    with caplog.at_level(logging.WARNING):
        for _ in range(resets):
            raw = await tcp_connect(edge.url)
            key = base64.b64encode(os.urandom(16)).decode()
            await send(
                raw,
                f"GET /api/ws/counters/{session_id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
            )
            raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()  # a reset, not a FIN
        route = {"route": "/api/ws/counters/{sid}", "method": "GET"}
        await eventually(
            lambda: (
                sum(
                    metric(edge, "http_request_duration_seconds_count", **route, status=status)
                    for status in ("101", "499")
                )
                == resets
            )
        )
    assert metric(edge, "http_request_duration_seconds_count", **route, status="499") >= 1  # reset mid-handshake
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    await eventually(lambda: edge.app[GUARD].open == 0)


# -- 6: every frame kind counts against the flood limit ---------------------------------------


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_BINARY])
async def test_control_and_binary_frames_count_against_the_flood_limit(
    edge: EdgeServer, session_id: str, opcode: int
) -> None:
    raw = await RawSocket.connect(edge.url, session_id)
    try:
        reader = FrameReader(raw)
        flood = client_frame(opcode, b"x") * 10_000
        sender = asyncio.create_task(send(raw, flood))
        counts, code = await reader.until_close()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
    finally:
        raw.close()
    assert code == 1008
    # Pings are still answered until then: the burst and what trickles in meanwhile, never thousands.
    assert counts.get(OP_PONG, 0) < INBOUND_FRAME_BURST * 10
    assert metric(edge, "sockets_closed_by_policy_total", reason="flood") == 1


async def test_protocol_ping_is_answered_with_its_payload(edge: EdgeServer, session_id: str) -> None:
    raw = await RawSocket.connect(edge.url, session_id)
    try:
        reader = FrameReader(raw)
        await send(raw, client_frame(OP_PING, b"hello"))
        async with asyncio.timeout(WAIT_S):
            while (frame := await reader.next()) is not None and frame[0] != OP_PONG:
                pass
        assert frame == (OP_PONG, b"hello")
    finally:
        raw.close()


async def test_heartbeat_keeps_an_answering_peer(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    """Server pings every 0.1 s; the client's pongs keep it open and are no flood."""
    async with make_edge(ws_heartbeat=0.1) as edge, http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        # receive() answers the server's pings (autoping) while it waits for a frame that never comes.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                await ws.receive()
        assert len(edge.app[SOCKETS].peers) == 1
        await ws.send_str("ping")
        assert await next_frame(ws) == {"type": "pong"}
        assert metric(edge, "sockets_closed_by_policy_total", reason="flood") == 0


# -- 7: cross-site writes ---------------------------------------------------------------------


async def test_cross_site_post_is_forbidden(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    """A page on another origin may POST ``text/plain`` with no preflight; its Origin gives it away."""
    url = f"{edge.url}/api/counters/context/{session_id}"
    body = '{"used": 5, "total": 100}'
    for origin in ("https://evil.example", "null", "http://localhost.evil.example"):
        async with http.post(url, data=body, headers={"Origin": origin, "Content-Type": "text/plain"}) as r:
            await expect_error(r, 403, "forbidden")
    async with http.get(url) as r:
        assert (await r.json())["revision"] == 0, "a cross-site POST changed state"
    # curl and agent runtimes send no Origin; a page on this machine sends a loopback one.
    async with http.post(url, data=body) as r:
        assert r.status == 200
    async with http.post(url, data=body, headers={"Origin": "http://localhost:5173"}) as r:
        assert r.status == 200


async def test_cross_site_post_is_forbidden_with_an_allow_list(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with make_edge(allowed_origins="https://app.example") as edge:
        url = f"{edge.url}/api/counters/tokens"
        payload = {"text": "hi", "model": "gpt-4o"}
        async with http.post(url, json=payload, headers={"Origin": "https://evil.example"}) as r:
            await expect_error(r, 403, "forbidden")
        async with http.post(url, json=payload, headers={"Origin": "https://app.example"}) as r:
            assert r.status == 200


async def test_origin_matching_a_forged_host_is_refused(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    """DNS rebinding: evil.example resolves to the edge, so the browser sends Host and Origin alike."""
    forged = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
    assert await handshake_status(http, ws_url(edge.url, session_id), headers=forged) == 403
    async with http.post(f"{edge.url}/api/counters/context/{session_id}", json={"used": 1}, headers=forged) as r:
        await expect_error(r, 403, "forbidden")


async def test_origin_of_the_bound_address_is_allowed(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    # Every 127/8 address is this machine's loopback on Linux, but only 127.0.0.1 is a loopback *name*.
    async with make_edge(host="127.0.0.2") as edge:
        url = ws_url(edge.url, session_id)
        async with http.ws_connect(url, headers={"Origin": "http://127.0.0.2:5173"}) as ws:
            await next_frame(ws)
        assert await handshake_status(http, url, headers={"Origin": "http://127.0.0.3:5173"}) == 403


# -- 8: status codes and crashes --------------------------------------------------------------


async def test_token_with_an_enormous_exp_is_401_json(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with make_edge(jwt_secret=SECRET) as edge:
        for exp in (10**400, "4102444800", True):
            bad = jwt.encode({"sessions": "*", "exp": exp}, SECRET, algorithm="HS256")
            headers = {"Authorization": f"Bearer {bad}"}
            async with http.get(f"{edge.url}/api/counters/context/{session_id}", headers=headers) as r:
                await expect_error(r, 401, "unauthorized")
            async with http.get(f"{edge.url}/api/ws/counters/{session_id}", headers=headers) as r:
                await expect_error(r, 401, "unauthorized")
            assert await handshake_status(http, ws_url(edge.url, session_id, token=bad)) == 401


NOT_PINGS: Final = [
    '{"type":' + "[" * 2030 + "]" * 2030 + "}",  # deep enough to exhaust a recursive parser
    "{" + '"a":{' * 680 + "}" * 680 + "}",
    "[" * 2040 + "]" * 2040,
    '{"type": "pong"}',
    "hello",
    "{not json",
]


async def test_frames_that_are_not_pings_are_ignored_never_fatal(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        for text in NOT_PINGS:
            assert len(text.encode()) <= MAX_INBOUND_FRAME_BYTES
            await ws.send_str(text)
        await ws.send_bytes(b"\x00\x01")
        # The pong is the next frame: nothing answered the others, and the socket is still open.
        await ws.send_str("ping")
        assert await next_frame(ws) == {"type": "pong"}


@pytest.mark.parametrize("bad", ["a%0ab", "a%0d%0ab", "a%0A", "%0a", "a%0d"])
async def test_session_id_with_a_line_break_is_400(edge: EdgeServer, http: aiohttp.ClientSession, bad: str) -> None:
    async with http.get(URL(f"{edge.url}/api/counters/context/{bad}", encoded=True)) as r:
        await expect_error(r, 400, "invalid_session_id")
    async with http.get(URL(f"{edge.url}/api/ws/counters/{bad}", encoded=True)) as r:
        await expect_error(r, 400, "invalid_session_id")


async def test_frame_over_the_limit_is_counted_as_too_big(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        await ws.send_str("x" * (MAX_INBOUND_FRAME_BYTES + 1))
        assert await close_code(ws) == 1009
    await eventually(lambda: len(edge.app[SOCKETS].peers) == 0)
    assert metric(edge, "sockets_closed_by_policy_total", reason="too_big") == 1
    assert metric(edge, "sockets_closed_by_policy_total", reason="protocol_error") == 0


async def test_refusals_quote_client_input_only_in_short(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    huge = "x" * 5_000
    async with make_edge(jwt_secret=SECRET) as edge:
        origin = {"Origin": f"https://{huge}.example"}
        async with http.post(f"{edge.url}/api/counters/context/{session_id}", headers=origin) as r:
            assert len((await expect_error(r, 403, "forbidden")).error.message) < 200
        grant = {"Authorization": f"Bearer {jwt.encode({'sessions': [huge], 'exp': 10**400}, SECRET)}"}
        async with http.get(f"{edge.url}/api/counters/context/{session_id}", headers=grant) as r:
            assert len((await expect_error(r, 401, "unauthorized")).error.message) < 200
