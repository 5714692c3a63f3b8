"""The WebSocket clients of ``bench_edge``, run in processes of their own (never the server's).

Modes:
- ``ws``: a minimal WebSocket client on ``asyncio.Protocol`` (handshake, unmasked server frames,
  pongs to pings, a close answered). It costs a few microseconds per frame, so the figures measure the
  server, not the client. Used for the edge and the raw aiohttp baseline.
- ``nats``: nats-py clients over ``ws://`` (``nats.connect("ws://...")``), each subscribed to its
  session's events subject: nats-server's WebSocket listener as a browser-side NATS client sees it.
- ``natsraw``: the same NATS-over-WebSocket protocol spoken by the minimal client above (``CONNECT``,
  ``SUB``, ``PING``/``PONG``, ``MSG``), so nats-server can also be compared with the same client cost.
- ``meter``: the ``ws`` client, recording per frame its session, its ``data.used`` and its arrival time
  (``bench.meter_e2e`` makes ``used`` a per-session sequence number and matches it with the time it was
  published), besides the frame's own ``timestamp`` (when the functions built the event).

Every frame's latency is the receive time minus the ``timestamp`` the sender stamped in it (one
machine, one clock). The parent drives the process with JSON lines on stdin (``connect``, ``start``,
``stop``, ``close``) and reads one JSON line reply per command on stdout.

Run by ``bench_edge``: ``python -m bench.edge_clients --mode ws --url ws://127.0.0.1:8000/api/ws/counters/
--tag T --sessions N --first 0 --count 1000``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import re
import resource
import sys
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast
from urllib.parse import urlsplit

from bench.edge_load import client_session, session_ids
from schemas import subjects

TIMESTAMP_KEY: Final = b'"timestamp":'
CONNECT_TIMEOUT_S: Final = 30.0
# Connections opened at once while ramping up: batches, so the server's accept backlog never overflows.
RAMP_CONCURRENCY: Final = 50

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
TEXT_FIN: Final = 0x80 | OP_TEXT


def frame_timestamp(payload: bytes | bytearray | memoryview) -> float | None:
    """The envelope's ``timestamp`` (the last field the models write), without parsing the whole JSON."""
    data = bytes(payload)
    at = data.rfind(TIMESTAMP_KEY)
    if at < 0:
        return None
    start = at + len(TIMESTAMP_KEY)
    end = start
    while end < len(data) and data[end] not in b",}":
        end += 1
    try:
        return float(data[start:end])
    except ValueError:
        return None


# data.used (the first "used" of the frame) and the envelope's timestamp, in one pass of C code.
METER_FIELDS: Final = re.compile(rb'"used":(\d+).*"timestamp":([0-9.eE+-]+)', re.DOTALL)


def frame_meter(payload: bytes | bytearray | memoryview) -> tuple[int, float] | None:
    """(``data.used``, ``timestamp``) of a ``context_update`` frame, without parsing the whole JSON."""
    found = METER_FIELDS.search(payload)
    if found is None:
        return None
    try:
        return int(found[1]), float(found[2])
    except ValueError:
        return None


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client-to-server frame (clients must mask)."""
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    key = os.urandom(4)
    if not length:
        return header + key
    stream = (key * (length // 4 + 1))[:length]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(length, "big")
    return header + key + body


class Stats:
    """What all of this process's clients received; frames count only between ``start`` and ``stop``."""

    def __init__(self, clients: int) -> None:
        self.recording = False
        self.latencies = array("d")
        self.per_client = [0] * clients
        self.received = 0
        self.untimed = 0
        self.disconnects = 0
        self.errors: Counter[str] = Counter()
        self.started = 0.0
        self.stopped = 0.0
        self.open = 0
        # meter mode: (session index, used, arrival, event timestamp) per frame, flat.
        self.records = array("d")
        self.session_of: list[int] = []

    def meter_frame(self, index: int, payload: bytes | bytearray | memoryview, now: float) -> None:
        if not self.recording:
            return
        fields = frame_meter(payload)
        if fields is None:
            self.untimed += 1
            return
        self.received += 1
        self.per_client[index] += 1
        self.records.extend((self.session_of[index], fields[0], now, fields[1]))

    def frame(self, index: int, payload: bytes | bytearray | memoryview, now: float) -> None:
        if not self.recording:
            return
        sent = frame_timestamp(payload)
        if sent is None:
            self.untimed += 1
            return
        self.received += 1
        self.per_client[index] += 1
        self.latencies.append(now - sent)

    def begin(self) -> None:
        self.latencies = array("d")
        self.records = array("d")
        self.per_client = [0] * len(self.per_client)
        self.received = self.untimed = self.disconnects = 0
        self.recording = True
        self.started = time.perf_counter()

    def end(self) -> None:
        self.recording = False
        self.stopped = time.perf_counter()


class RawWsClient(asyncio.Protocol):
    """A minimal WebSocket client: enough of RFC 6455 for a server that sends small frames."""

    def __init__(self, index: int, host: str, port: int, path: str, stats: Stats) -> None:
        self.index = index
        self.host, self.port, self.path = host, port, path
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.buffer = bytearray()
        self.message = bytearray()
        self.closing = False
        self.counted_open = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")]).split(b" ", 2)
            del buffer[: end + 4]
            if len(status) < 2 or status[1] != b"101":
                code = status[1].decode(errors="replace") if len(status) > 1 else "?"
                self.fail(f"http {code}")
                return
            self.upgraded = True
            self.on_upgraded()
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                if size - offset < 4:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 4], "big")
                header = 4
            elif length == 127:
                if size - offset < 10:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 10], "big")
                header = 10
            if second & 0x80:  # a masked server frame is a protocol error; skip its key
                header += 4
            if size - offset < header + length:
                break
            payload = buffer[offset + header : offset + header + length]
            offset += header + length
            self.on_frame(first & 0x0F, bool(first & 0x80), payload, now)
        if offset:
            del buffer[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted_open:
            self.stats.open -= 1
            self.counted_open = False
            if not self.closing:
                self.stats.disconnects += 1
                self.stats.errors["disconnected"] += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))

    # -- frames -------------------------------------------------------------------------------

    def on_upgraded(self) -> None:
        """The edge and the raw server send the current state first: ready when it arrives."""

    def on_frame(self, opcode: int, fin: bool, payload: bytearray, now: float) -> None:
        if opcode == OP_CONTINUATION:
            self.message += payload
            if fin:
                message, self.message = self.message, bytearray()
                self.on_message(message, now)
        elif opcode in (OP_TEXT, OP_BINARY):
            if fin:
                self.on_message(payload, now)
            else:
                self.message = bytearray(payload)
        elif opcode == OP_PING:
            self.send(OP_PONG, bytes(payload))
        elif opcode == OP_CLOSE:
            if not self.closing:
                self.stats.errors[f"closed by server {int.from_bytes(payload[:2], 'big') if payload else ''}"] += 1
                self.send(OP_CLOSE, bytes(payload[:2]))
            if self.transport is not None:
                self.transport.close()

    def on_message(self, payload: bytearray, now: float) -> None:
        if not self.ready.done():
            self.mark_ready()
        self.stats.frame(self.index, payload, now)

    # -- helpers ------------------------------------------------------------------------------

    def mark_ready(self) -> None:
        self.ready.set_result(None)
        self.stats.open += 1
        self.counted_open = True

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked_frame(opcode, payload))

    def fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.send(OP_CLOSE, (1000).to_bytes(2, "big"))
            self.transport.close()


class MeterWsClient(RawWsClient):
    """The ``ws`` client for ``bench.meter_e2e``: records (session, used, arrival, event timestamp).

    It shares the machine with the servers it measures, so the common case costs as little as it can:
    a read that is exactly one whole small text frame is recorded straight from the bytes read.
    """

    def data_received(self, data: bytes) -> None:
        now = time.time()
        # One whole text frame of 126-65535 bytes (a 16-bit length), nothing buffered: record it as read
        # (the fields are found past the 4-byte header).
        if (
            len(data) > 4
            and data[0] == TEXT_FIN
            and data[1] == 126
            and int.from_bytes(data[2:4], "big") == len(data) - 4
            and not self.buffer
            and self.ready.done()
        ):
            self.stats.meter_frame(self.index, data, now)
            return
        super().data_received(data)

    def on_message(self, payload: bytearray, now: float) -> None:
        if not self.ready.done():
            self.mark_ready()
        self.stats.meter_frame(self.index, payload, now)


class RawNatsWsClient(RawWsClient):
    """NATS's client protocol over a WebSocket, with the minimal client: subscribe to one subject."""

    def __init__(self, index: int, host: str, port: int, path: str, stats: Stats, subject: str) -> None:
        super().__init__(index, host, port, path, stats)
        self.subject = subject
        self.stream = bytearray()
        self.want = -1  # payload bytes (+ CRLF) still expected for the current MSG, -1: reading a line

    def on_message(self, payload: bytearray, now: float) -> None:
        stream = self.stream
        stream += payload
        while True:
            if self.want >= 0:
                if len(stream) < self.want + 2:
                    return
                body = stream[: self.want]
                del stream[: self.want + 2]
                self.want = -1
                self.stats.frame(self.index, body, now)
                continue
            end = stream.find(b"\r\n")
            if end < 0:
                return
            line = bytes(stream[:end])
            del stream[: end + 2]
            if line.startswith(b"MSG "):
                self.want = int(line.rsplit(b" ", 1)[1])
            elif line == b"PING":
                self.send(OP_BINARY, b"PONG\r\n")
            elif line == b"PONG":
                if not self.ready.done():
                    self.mark_ready()
            elif line.startswith(b"INFO "):
                connect = json.dumps({"verbose": False, "pedantic": False, "protocol": 1, "name": "bench"})
                self.send(OP_BINARY, f"CONNECT {connect}\r\nSUB {self.subject} 1\r\nPING\r\n".encode())
            elif line.startswith(b"-ERR"):
                self.stats.errors[line.decode(errors="replace")[:60]] += 1


class Clients:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sessions = session_ids(args.tag, args.sessions)
        self.indexes = range(args.first, args.first + args.count)
        self.stats = Stats(args.count)
        self.stats.session_of = [self.indexes[local] % args.sessions for local in range(args.count)]
        self.raw: list[RawWsClient] = []
        self.nats: list[Any] = []
        url = urlsplit(args.url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.path = url.path

    async def connect(self) -> dict[str, Any]:
        started = time.perf_counter()
        limit = asyncio.Semaphore(self.args.ramp)
        connectors: dict[str, Callable[[int, str], Awaitable[None]]] = {
            "ws": self._connect_ws,
            "meter": self._connect_meter,
            "natsraw": self._connect_natsraw,
            "nats": self._connect_nats,
        }
        connect_one = connectors[self.args.mode]

        async def one(local: int) -> bool:
            sid = client_session(self.indexes[local], self.sessions)
            async with limit:
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT_S):
                        await connect_one(local, sid)
                except Exception as error:
                    self.stats.errors[f"connect: {type(error).__name__}: {str(error)[:60]}"] += 1
                    return False
            return True

        results = await asyncio.gather(*(one(local) for local in range(len(self.indexes))))
        return {
            "ok": sum(results),
            "failed": len(results) - sum(results),
            "seconds": time.perf_counter() - started,
            "errors": dict(self.stats.errors),
        }

    async def _connect_ws(self, local: int, sid: str) -> None:
        await self._connect_raw(RawWsClient(local, self.host, self.port, self.path + sid, self.stats))

    async def _connect_meter(self, local: int, sid: str) -> None:
        await self._connect_raw(MeterWsClient(local, self.host, self.port, self.path + sid, self.stats))

    async def _connect_natsraw(self, local: int, sid: str) -> None:
        client = RawNatsWsClient(local, self.host, self.port, self.path or "/", self.stats, subjects.events(sid))
        await self._connect_raw(client)

    async def _connect_raw(self, client: RawWsClient) -> None:
        self.raw.append(client)
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: client, self.host, self.port)
        await client.ready

    async def _connect_nats(self, local: int, sid: str) -> None:
        import nats

        stats = self.stats

        async def on_message(msg: Any) -> None:
            stats.frame(local, msg.data, time.time())

        async def on_closed() -> None:
            stats.open -= 1
            if not closing[0]:
                stats.disconnects += 1
                stats.errors["disconnected"] += 1

        async def on_error(error: Exception) -> None:
            stats.errors[f"nats: {type(error).__name__}"] += 1

        closing = [False]
        nc = await nats.connect(
            self.args.url,
            name=f"bench-{local}",
            allow_reconnect=False,
            connect_timeout=CONNECT_TIMEOUT_S,
            ping_interval=120,
            closed_cb=on_closed,
            error_cb=on_error,
        )
        stats.open += 1
        self.nats.append((nc, closing))
        await nc.subscribe(subjects.events(sid), cb=on_message)
        await nc.flush()

    def report(self) -> dict[str, Any]:
        stats = self.stats
        per_client = stats.per_client
        return {
            "received": stats.received,
            "untimed": stats.untimed,
            "seconds": stats.stopped - stats.started,
            "disconnects": stats.disconnects,
            "open": stats.open,
            "starved": sum(1 for count in per_client if count == 0),
            "min_per_client": min(per_client) if per_client else 0,
            "max_per_client": max(per_client) if per_client else 0,
            "errors": dict(stats.errors),
            "cpu_s": time.process_time(),
        }

    async def close(self) -> None:
        for client in self.raw:
            client.close()
        for _nc, closing in self.nats:
            closing[0] = True
        await asyncio.gather(*(nc.close() for nc, _ in self.nats), return_exceptions=True)
        await asyncio.sleep(0.2)


def write_samples(path: str, latencies: array[float]) -> None:
    with open(path, "wb") as samples:
        latencies.tofile(samples)


def write_report_samples(path: str, stats: Stats) -> None:
    write_samples(path, stats.records if stats.records else stats.latencies)


async def serve(args: argparse.Namespace) -> None:
    clients = Clients(args)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    reply({"ready": True, "pid": os.getpid()})
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        match command["cmd"]:
            case "connect":
                reply(await clients.connect())
                if args.gc_freeze:
                    # Thousands of clients are millions of long-lived objects: a full collection would
                    # pause this process for a long time while measuring, and show as latency.
                    gc.collect()
                    gc.freeze()
            case "start":
                clients.stats.begin()
                reply({"ok": True})
            case "stop":
                clients.stats.end()
                await asyncio.to_thread(write_report_samples, command["samples"], clients.stats)
                reply(clients.report())
            case "close":
                await clients.close()
                reply({"ok": True})
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["ws", "nats", "natsraw", "meter"], required=True)
    parser.add_argument("--url", required=True, help="ws:// URL; for ws mode the path prefix the session id ends")
    parser.add_argument("--tag", required=True, help="session id prefix (bench.edge_load.session_ids)")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="global index of this process's first client")
    parser.add_argument("--count", type=int, required=True, help="clients in this process")
    parser.add_argument("--ramp", type=int, default=RAMP_CONCURRENCY, help="connections opened at once")
    parser.add_argument("--no-gc-freeze", dest="gc_freeze", action="store_false", help="keep the GC as it is")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        run: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:
        run = asyncio.run  # type: ignore[assignment]
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args))


if __name__ == "__main__":
    main()
