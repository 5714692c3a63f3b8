"""OpenTelemetry ingest: log records per second through the edge into meters, against the same reports sent
as plain ``usage`` requests, measured in the same run; and how soon a browser sees an export's newest record.

Processes as deployed: nats-server with JetStream, ``ctxmeter functions``, ``ctxmeter edge`` (the tree under
test). The records are Claude Code's ``api_request`` events as it sends them (the captured attributes, one
record per model call), spread over 1,000 sessions in one of two orders:

- **spread**: each session's records in turn, so every export of 512 carries 512 different sessions and the
  edge's one-change-per-session rule saves nothing (the worst case for it);
- **grouped**: runs of 8 records of one session (as an agent's own exporter sends the calls of its last
  seconds together), so an export carries 64 sessions and the edge makes 64 changes of it.

Two ways in, alternating rounds, on the same records:

- **OTLP**: exports of 512 records (protobuf, as the SDKs send by default) POSTed to ``/v1/logs``, a few at
  once; a round is done when every export was answered (each answer follows every change's commit).
- **plain**: the same reports as ``ctxmeter.context.usage.<sid>`` requests over NATS (what an agent runtime
  with the client library sends), each with its idempotency key, as many in flight as the edge keeps.

Then a WebSocket on a session and single-record exports one at a time: POST to the socket's frame.

Run: ``python -m bench.otlp_ingest`` (``--records``, ``--rounds``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import nats
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from bench.bench_edge import stop_process, wait_http
from bench.common import percentile
from bench.trees import Tree, working_tree
from ctxmeter.limits import OTLP_CONCURRENCY
from ctxmeter.natsserver import NatsServerProcess, free_port
from schemas import subjects
from schemas.idempotency import KEY_HEADER
from schemas.subjects import ContextOp

SESSIONS: Final = 1_000
BATCH: Final = 512
# Exports in flight at once (a Collector's exporter sends a few queues' worth in parallel).
EXPORTS_IN_FLIGHT: Final = 4
# Plain requests in flight: what the edge keeps in flight for that many exports.
PLAIN_IN_FLIGHT: Final = EXPORTS_IN_FLIGHT * OTLP_CONCURRENCY
LATENCY_SAMPLES: Final = 50
BUCKET: Final = "CTXMETER_BENCH_OTLP"


# Records of one session in a row in the "grouped" order.
GROUP: Final = 8
ORDERS: Final = {"spread": 1, "grouped": GROUP}


@dataclass
class Ingested:
    tree: Tree
    order: str
    otlp_per_s: list[float] = field(default_factory=list)
    plain_per_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    failure: str = ""

    @property
    def otlp(self) -> float:
        return statistics.median(self.otlp_per_s) if self.otlp_per_s else float("nan")

    @property
    def plain(self) -> float:
        return statistics.median(self.plain_per_s) if self.plain_per_s else float("nan")

    @property
    def ratio(self) -> float:
        return self.otlp / self.plain if self.plain_per_s else float("nan")

    def p(self, fraction: float) -> float:
        return percentile(self.latency_s, fraction) if self.latency_s else float("nan")

    def summary(self) -> str:
        if self.failure:
            return f"otlp ingest ({self.order}) on {self.tree.label}: FAILED {self.failure}"
        return (
            f"otlp ingest ({self.order}) on {self.tree.label}: {self.otlp:,.0f} records/s through the edge, "
            f"{self.plain:,.0f} as plain usage requests (ratio {self.ratio:.2f}; rounds "
            f"{[round(x) for x in self.otlp_per_s]} / {[round(x) for x in self.plain_per_s]}); "
            f"export to socket p50 {self.p(0.5) * 1e3:.1f} ms, p99 {self.p(0.99) * 1e3:.1f} ms, "
            f"max {max(self.latency_s) * 1e3:.1f} ms"
        )


def _attributes(items: dict[str, Any]) -> list[KeyValue]:
    out = []
    for key, item in items.items():
        if isinstance(item, int):
            out.append(KeyValue(key=key, value=AnyValue(int_value=item)))
        elif isinstance(item, float):
            out.append(KeyValue(key=key, value=AnyValue(double_value=item)))
        else:
            out.append(KeyValue(key=key, value=AnyValue(string_value=item)))
    return out


def api_request(session: str, n: int, at_ns: int) -> tuple[LogRecord, dict[str, Any]]:
    """Claude Code's ``api_request`` event as captured (tests/otlp/fixtures), and the same report's usage body."""
    usage = {"input_tokens": 3 + n % 7, "output_tokens": 40 + n % 100, "cache_read_input_tokens": 20_000 + n}
    usage["cache_creation_input_tokens"] = 500
    attrs = {
        "user.id": "91fe7735e8d8f8e160becca7b3d2f68ff052021f7c8bd9a54f35a48a27ce093f",
        "session.id": session,
        "terminal.type": "non-interactive",
        "event.name": "api_request",
        "event.timestamp": "2026-12-04T15:29:05.204Z",
        "event.sequence": n,
        "prompt.id": "80485ef4-1dd2-44b1-94f7-9b414c27a9a0",
        "model": "claude-sonnet-4-5",
        "input_tokens": usage["input_tokens"],
        "output_tokens": usage["output_tokens"],
        "cache_read_tokens": usage["cache_read_input_tokens"],
        "cache_creation_tokens": usage["cache_creation_input_tokens"],
        "cost_usd": 0.0198,
        "cost_usd_micros": 19810,
        "duration_ms": 23,
        "speed": "normal",
        "query_source": "sdk",
        "effort": "high",
    }
    record = LogRecord(time_unix_nano=at_ns, observed_time_unix_nano=at_ns, attributes=_attributes(attrs))
    record.body.string_value = "claude_code.api_request"
    return record, {"usage": usage, "model": "claude-sonnet-4-5"}


def export(records: list[LogRecord]) -> bytes:
    resource = _attributes({"service.name": "claude-code", "service.version": "2.1.197"})
    message = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource={"attributes": resource},
                scope_logs=[ScopeLogs(scope={"name": "com.anthropic.claude_code.events"}, log_records=records)],
            )
        ]
    )
    return message.SerializeToString()


def stream(prefix: str, total: int, group: int) -> Iterator[tuple[str, LogRecord, dict[str, Any]]]:
    """``total`` records over the sessions in turn, ``group`` of one session in a row, each newer than the last."""
    start = time.time_ns()
    for n in range(total):
        session = f"{prefix}-{(n // group) % SESSIONS}"
        record, body = api_request(session, n, start + n)
        yield session, record, body


async def otlp_round(http: aiohttp.ClientSession, url: str, total: int, group: int) -> float:
    items = list(stream(f"otlp-{uuid.uuid4().hex[:8]}", total, group))
    bodies = [export([record for _, record, _ in items[i : i + BATCH]]) for i in range(0, total, BATCH)]
    slots = asyncio.Semaphore(EXPORTS_IN_FLIGHT)

    async def post(body: bytes) -> None:
        async with slots, http.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"export answered {response.status}")

    started = time.perf_counter()
    await asyncio.gather(*(post(body) for body in bodies))
    return total / (time.perf_counter() - started)


async def plain_round(nc: Any, total: int, group: int) -> float:
    items = [
        (subjects.context(ContextOp.USAGE, session), json.dumps(body).encode())
        for session, _, body in stream(f"plain-{uuid.uuid4().hex[:8]}", total, group)
    ]
    slots = asyncio.Semaphore(PLAIN_IN_FLIGHT)
    keys = itertools.count()

    async def request(subject: str, body: bytes) -> None:
        async with slots:
            reply = await nc.request(subject, body, timeout=30, headers={KEY_HEADER: f"bench-{next(keys)}"})
            if reply.headers and "Nats-Service-Error-Code" in reply.headers:
                raise RuntimeError(reply.data.decode())

    started = time.perf_counter()
    await asyncio.gather(*(request(subject, body) for subject, body in items))
    return total / (time.perf_counter() - started)


async def export_to_socket(http: aiohttp.ClientSession, edge: str) -> list[float]:
    """Single-record exports one at a time (the edge idle otherwise): POST to the socket's frame."""
    session = f"latency-{uuid.uuid4().hex[:8]}"
    samples = []
    async with http.ws_connect(f"{edge.replace('http', 'ws')}/api/ws/counters/{session}") as ws:
        await ws.receive(timeout=10)
        for n in range(LATENCY_SAMPLES):
            record, body = api_request(session, n, time.time_ns())
            wanted = sum(body["usage"].values())
            started = time.perf_counter()
            async with http.post(
                f"{edge}/v1/logs", data=export([record]), headers={"Content-Type": "application/x-protobuf"}
            ) as response:
                await response.read()
            while True:
                frame = json.loads((await ws.receive(timeout=10)).data)
                if frame["data"]["used"] == wanted:
                    break
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.12)  # past the socket's throttle, so every sample is a leading edge
    return samples


async def measure_ingest(tree: Tree, total: int, rounds: int, order: str = "spread") -> Ingested:
    result = Ingested(tree, order)
    group = ORDERS[order]
    with tempfile.TemporaryDirectory(prefix="ctxmeter-otlp-") as tmp:
        workdir = Path(tmp)
        server = NatsServerProcess(workdir / "nats")
        await asyncio.to_thread(server.start)
        port = free_port()
        env = {"CTXMETER_KV_BUCKET": BUCKET}
        functions = tree.spawn("functions", "--nats-url", server.url, log=workdir / "functions.log", env=env)
        edge_args = ["edge", "--nats-url", server.url, "--host", "127.0.0.1", "--port", str(port)]
        edge = tree.spawn(*edge_args, log=workdir / "edge.log", env=env)
        base = f"http://127.0.0.1:{port}"
        nc = await nats.connect(server.url)
        try:
            await wait_http(f"{base}/readyz", edge, workdir / "edge.log")
            connector = aiohttp.TCPConnector(limit=EXPORTS_IN_FLIGHT * 2)
            async with aiohttp.ClientSession(connector=connector) as http:
                await otlp_round(http, f"{base}/v1/logs", BATCH * 8, 1)  # warm-up: both paths, every session
                await plain_round(nc, BATCH * 8, 1)
                for _ in range(rounds):
                    result.otlp_per_s.append(await otlp_round(http, f"{base}/v1/logs", total, group))
                    result.plain_per_s.append(await plain_round(nc, total, group))
                result.latency_s = await export_to_socket(http, base)
        except Exception as error:
            result.failure = f"{type(error).__name__}: {error}"
        finally:
            await nc.close()
            await asyncio.to_thread(stop_process, edge)
            await asyncio.to_thread(stop_process, functions)
            await asyncio.to_thread(server.stop)
    return result


async def measure_orders(tree: Tree, total: int, rounds: int, orders: list[str]) -> list[Ingested]:
    results = []
    for order in orders:
        print(f"... otlp ingest, {order} ({rounds} rounds of {total:,} records)", file=sys.stderr, flush=True)
        results.append(await measure_ingest(tree, total, rounds, order))
        print("    " + results[-1].summary(), file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=BATCH * 100, help="records per round (51,200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each way in, alternating (3)")
    parser.add_argument("--orders", default="spread,grouped", help="spread, grouped (comma-separated)")
    opts = parser.parse_args()
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        for result in uvloop.run(measure_orders(working_tree(), opts.records, opts.rounds, opts.orders.split(","))):
            print(result.summary())


if __name__ == "__main__":
    main()
