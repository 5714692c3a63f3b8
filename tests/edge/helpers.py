"""Reading frames from a socket, raw WebSocket handshakes, tokens, synthetic events and ``ctxmeter up``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import jwt
import nats.errors
from nats.aio.client import Client as NATS
from websockets.frames import Opcode

from ctxmeter.natsserver import free_port
from schemas import subjects
from schemas.models import ContextLevel, ContextUpdateEvent, ContextUsage
from ws_edge.app import EdgeServer
from ws_edge.keys import METRICS

# Opcodes as the frames the tests build and read carry them (the edge's framing is the websockets library's).
OP_CONTINUATION, OP_TEXT, OP_BINARY = Opcode.CONT, Opcode.TEXT, Opcode.BINARY
OP_CLOSE, OP_PING, OP_PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG
# The code a close frame with no payload stands for (RFC 6455 7.1.5).
NO_STATUS: Final = 1005

# A safety net so a broken edge fails a test instead of hanging it; never a performance bound.
WAIT_S: Final = 20.0

POLL_S: Final = 0.01
# How long a probe request waits for a subscriber's silence to count as "someone is there".
PROBE_S: Final = 0.3

Frame = dict[str, Any]


async def next_frame(ws: aiohttp.ClientWebSocketResponse) -> Frame:
    """The next text frame as JSON; fails on a close."""
    async with asyncio.timeout(WAIT_S):
        message = await ws.receive()
    assert message.type is aiohttp.WSMsgType.TEXT, (message.type, message.data, message.extra)
    frame: Frame = json.loads(message.data)
    return frame


async def frames_until(ws: aiohttp.ClientWebSocketResponse, done: Callable[[Frame], bool]) -> list[Frame]:
    """Every frame up to and including the first for which ``done`` is true."""
    frames: list[Frame] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            frame = await next_frame(ws)
            frames.append(frame)
            if done(frame):
                return frames


async def close_code(ws: aiohttp.ClientWebSocketResponse) -> int:
    """Read until the server closes the socket; its close code."""
    async with asyncio.timeout(WAIT_S):
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                assert ws.close_code is not None
                return ws.close_code


async def eventually(check: Callable[[], bool]) -> None:
    """Poll ``check`` (state of the edge that has no event to wait on) until it holds."""
    async with asyncio.timeout(WAIT_S):
        while True:
            if check():
                return
            await asyncio.sleep(POLL_S)


def metric(edge: EdgeServer, name: str, **labels: str) -> float:
    """A sample of the edge's own registry (``ctxmeter_edge_<name>``); 0 when never recorded."""
    value = edge.app[METRICS].registry.get_sample_value(f"ctxmeter_edge_{name}", labels)
    return 0.0 if value is None else value


async def has_subscriber(nc: NATS, subject: str) -> bool:
    """Whether anyone subscribes to ``subject``, asked of the server itself: a request nobody hears is
    answered "no responders" at once; one a subscriber hears (and does not answer) times out."""
    try:
        await nc.request(subject, b"probe", timeout=PROBE_S)
    except nats.errors.NoRespondersError:
        return False
    except nats.errors.TimeoutError:
        return True
    return True


async def no_subscriber(nc: NATS, subject: str) -> bool:
    return not await has_subscriber(nc, subject)


async def eventually_async(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll an asynchronous ``check`` until it holds."""
    async with asyncio.timeout(WAIT_S):
        while True:
            if await check():
                return
            await asyncio.sleep(POLL_S)


def used_is(value: int) -> Callable[[Frame], bool]:
    return lambda frame: frame["type"] == "context_update" and frame["data"]["used"] == value


def ws_url(base: str, session_id: str, **query: str) -> str:
    url = base.replace("http://", "ws://", 1) + f"/api/ws/counters/{session_id}"
    if query:
        url += "?" + "&".join(f"{key}={value}" for key, value in query.items())
    return url


def token(secret: str, sessions: object, *, expires_in: float = 300, **claims: Any) -> str:
    payload: dict[str, Any] = {"sessions": sessions, "exp": int(time.time() + expires_in), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def context_event(session_id: str, used: int, revision: int, *, model: str | None = None) -> bytes:
    """An event as the functions publish it; tests publish these to control revisions and sizes."""
    usage = ContextUsage(
        session_id=session_id,
        used=used,
        total=1_000_000,
        percentage=round(used * 100 / 1_000_000, 2),
        level=ContextLevel.NORMAL,
        model=model,
        revision=revision,
        updated_at="2025-01-01T00:00:00.000Z",
        compact_at=1_000_000,
        left=1_000_000 - used,
    )
    return ContextUpdateEvent(session_id=session_id, data=usage, timestamp=time.time()).model_dump_json().encode()


async def publish_events(nc: NATS, session_id: str, events: list[bytes]) -> None:
    for event in events:
        await nc.publish(subjects.events(session_id), event)
    await nc.flush()


class RawSocket:
    """A WebSocket client at the TCP level: handshakes, then does only what the test says."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    async def connect(cls, base: str, session_id: str, *, receive_buffer: int | None = None) -> RawSocket:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Before connecting, so the advertised window stays small: the server's writes back up fast.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /api/ws/counters/{session_id} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        head = b""
        async with asyncio.timeout(WAIT_S):
            while b"\r\n\r\n" not in head:
                chunk = await loop.sock_recv(sock, 1)
                assert chunk, "connection closed during the handshake"
                head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(sock)

    async def wait_closed_by_server(self) -> None:
        """Read (and discard) until the server has closed or reset the connection."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(WAIT_S):
            while True:
                try:
                    if not await loop.sock_recv(self.sock, 1 << 20):
                        return
                except ConnectionResetError:
                    return

    def close(self) -> None:
        self.sock.close()


# -- raw WebSocket frames ---------------------------------------------------------------------


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """One client frame, masked unless told (clients must mask), in whichever length form it needs."""
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = bytes((first, mask_bit | size))
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


async def send(raw: RawSocket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(raw.sock, data)


class FrameReader:
    """Server frames (unmasked) off a raw socket."""

    def __init__(self, raw: RawSocket) -> None:
        self.raw = raw
        self.buffer = b""

    def _parse(self) -> tuple[int, bytes] | None:
        if len(self.buffer) < 2:
            return None
        opcode, size, offset = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
        if size == 126:
            if len(self.buffer) < 4:
                return None
            (size,), offset = struct.unpack("!H", self.buffer[2:4]), 4
        elif size == 127:
            if len(self.buffer) < 10:
                return None
            (size,), offset = struct.unpack("!Q", self.buffer[2:10]), 10
        if len(self.buffer) < offset + size:
            return None
        payload = self.buffer[offset : offset + size]
        self.buffer = self.buffer[offset + size :]
        return opcode, payload

    async def next(self) -> tuple[int, bytes] | None:
        """The next frame; None when the server hung up."""
        loop = asyncio.get_running_loop()
        while (frame := self._parse()) is None:
            try:
                chunk = await loop.sock_recv(self.raw.sock, 1 << 16)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        return frame

    async def until_close(self) -> tuple[dict[int, int], int | None]:
        """Frames counted per opcode until the server's close frame (its code) or hang-up (None)."""
        counts: dict[int, int] = {}
        async with asyncio.timeout(WAIT_S):
            while (frame := await self.next()) is not None:
                opcode, payload = frame
                if opcode == OP_CLOSE:
                    return counts, close_code_of(payload)
                counts[opcode] = counts.get(opcode, 0) + 1
        return counts, None


def close_code_of(payload: bytes) -> int:
    """The code of a close frame's payload (1005 when it has none)."""
    return int(struct.unpack("!H", payload[:2])[0]) if payload else NO_STATUS


async def kernel_send_queue(ss: str, local_port: int, remote_port: int) -> tuple[int, int] | None:
    """The kernel's own figures for one TCP connection, as ``ss -tm`` reports them: bytes in its send
    queue (Send-Q) and the size of its send buffer (``tb``); None once the connection is gone."""
    process = await asyncio.create_subprocess_exec(
        ss,
        "-tmnH",
        "state",
        "established",
        f"( sport = :{local_port} and dport = :{remote_port} )",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    lines = out.decode().split()
    if not lines:
        return None
    send_queue = int(lines[1])
    memory = next(word for word in lines if word.startswith("skmem:"))
    send_buffer = int(memory.split("tb")[1].split(",")[0])
    return send_queue, send_buffer


@dataclass
class Up:
    """A running ``ctxmeter up``: its process, what it printed, and where its stderr goes."""

    process: asyncio.subprocess.Process
    port: int
    printed: str
    stderr: Path

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")


@contextlib.asynccontextmanager
async def running_up(tmp_path: Path, *flags: str) -> AsyncIterator[Up]:
    """``ctxmeter up`` on free ports with a store in ``tmp_path``, once it has printed its banner; stopped with
    SIGINT on the way out, which it must survive with exit code 0 (its stderr in the message if not)."""
    edge_port, nats_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CTXMETER_")}
    stderr = tmp_path / "up.stderr"
    with stderr.open("wb") as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ctxmeter_cli", "up", "--port", str(edge_port), "--nats-port", str(nats_port),
            "--nats-monitor-port", "0", "--store", str(tmp_path / "store"), *flags,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=errors,
        )  # fmt: skip
    assert process.stdout is not None
    up = Up(process, edge_port, "", stderr)
    try:
        async with asyncio.timeout(WAIT_S * 2):
            while "/metrics" not in up.printed:
                line = (await process.stdout.readline()).decode()
                assert line, f"{up.printed}\n{up.errors()[-3000:]}"
                up.printed += line
        yield up
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(WAIT_S):
            up.printed += (await process.stdout.read()).decode()
            code = await process.wait()
        assert code == 0, f"ctxmeter up exited with {code}:\n{up.printed}\n{up.errors()[-3000:]}"
