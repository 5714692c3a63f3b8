"""Benchmark the WebSocket edge against two baselines, measured in the same run.

Systems, each fed the same ``context_update`` frames (``bench.edge_load``) at the same rate per session:
- ``edge``: ``ctxmeter edge`` (its own process) behind a nats-server with JetStream and ``ctxmeter
  functions``; this process publishes the events on ``ctxmeter.events.<sid>``.
- ``raw``, baseline (a): ``bench.raw_ws_server``, aiohttp with one send loop per session straight to its
  sockets (no hub, no throttle, no NATS).
- ``nats``, baseline (b): a nats-server with its WebSocket listener; nats-py clients connect over
  ``ws://`` and subscribe to their session's subject; this process publishes.
- ``natsraw``, baseline (b) again, with the minimal client the edge and (a) are measured with speaking
  the NATS protocol over the WebSocket: the same server with the client's cost taken out.

Scenarios: A, 1,000 clients over 100 sessions at 10 updates/s per session; B, 10,000 clients over
1,000 sessions at 1 update/s. Clients run in separate processes (``bench.edge_clients``) and measure
publish→receive latency from the ``timestamp`` the sender stamps in each frame (one machine clock).
Every server is started afresh for each scenario; its RSS is read from ``/proc/<pid>/status``.

Run: ``.venv/bin/python -m bench.bench_edge`` (about 5 minutes; ``--quick`` for about one minute with
smaller numbers; ``--systems edge,raw`` / ``--scenarios A`` to run a part).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from array import array
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import nats
from nats.aio.client import Client as NATS

from bench.common import nats_server, percentile
from bench.edge_load import FrameMaker, run_schedule, session_ids
from ctxmeter.natsserver import NatsServerProcess as NatsProcess
from ctxmeter.natsserver import free_port
from schemas import subjects

BUCKET: Final = "CTXMETER_BENCH_EDGE"
WS_PATH: Final = "/api/ws/counters/"
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
# Targets from the issue.
TARGET_P99_MS: Final = 25.0
TARGET_OF_RAW: Final = 0.8
TARGET_OF_NATS: Final = 0.5
TARGET_RSS_MB: Final = 400.0
NATS_PY: Final = "nats-ws (b)"
NATS_RAW: Final = "nats-ws (b) raw"

NATS_WS_CONF: Final = """\
# Baseline (b): nats-server's own WebSocket listener; no JetStream.
listen: 127.0.0.1:-1
http: 127.0.0.1:-1
max_connections: 100000
websocket {
  listen: "127.0.0.1:-1"
  no_tls: true
  compression: false
}
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    clients: int
    sessions: int
    rate: float
    processes: int

    @property
    def label(self) -> str:
        return f"{self.clients:,}/{self.sessions:,} @{self.rate:g}/s"

    @property
    def expected(self) -> float:
        return self.clients * self.rate


FULL: Final = {
    "A": Scenario("A", 1_000, 100, 10.0, 1),
    "B": Scenario("B", 10_000, 1_000, 1.0, 2),
    # Not run by default: 100,000 deliveries/s offered, more than two cores can carry, to compare
    # what each system delivers when saturated (the clients share the cores with the server).
    "C": Scenario("C", 10_000, 100, 10.0, 2),
}
QUICK: Final = {
    "A": Scenario("A", 200, 20, 10.0, 1),
    "B": Scenario("B", 2_000, 200, 1.0, 2),
    "C": Scenario("C", 4_000, 40, 10.0, 2),
}


@dataclass
class Result:
    system: str
    scenario: Scenario
    connected: int = 0
    failed: int = 0
    connect_s: float = 0.0
    received: int = 0
    seconds: float = 0.0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    rss_idle_kb: int = 0
    rss_kb: int = 0
    hwm_kb: int = 0
    server_cpu: float = 0.0  # cores used by the server under test while measuring
    broker_cpu: float = 0.0  # cores used by the NATS server feeding the edge
    client_cpu: float = 0.0
    disconnects: int = 0
    starved: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str = ""

    @property
    def deliveries(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0

    def p(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) * 1e3 if self.latencies else float("nan")

    @property
    def kb_per_conn(self) -> float:
        return (self.rss_kb - self.rss_idle_kb) / self.connected if self.connected else float("nan")

    @property
    def us_per_delivery(self) -> float:
        return self.server_cpu * 1e6 / self.deliveries if self.deliveries else float("nan")


# -- processes --------------------------------------------------------------------------------


def raise_fd_limit() -> None:
    """Children inherit it: the edge, nats-server and the client processes all need thousands of fds."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def proc_status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    return 0.0


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it does not end in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def python_module(module: str, *args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


async def wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({process.returncode}):\n{tail(log)}")
        with contextlib.suppress(OSError):
            status = await asyncio.to_thread(http_status, url)
            if status == 200:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 in {START_TIMEOUT_S} s:\n{tail(log)}")


def http_status(url: str, method: str = "GET") -> int:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class ClientGroup:
    """The client processes of one run, driven by JSON lines."""

    def __init__(self, mode: str, url: str, tag: str, scenario: Scenario, workdir: Path) -> None:
        self.mode, self.url, self.tag, self.scenario, self.workdir = mode, url, tag, scenario, workdir
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        share, extra = divmod(self.scenario.clients, self.scenario.processes)
        first = 0
        for number in range(self.scenario.processes):
            count = share + (1 if number < extra else 0)
            log = (self.workdir / f"clients-{self.tag}-{number}.log").open("ab")
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.edge_clients",
                "--mode",
                self.mode,
                "--url",
                self.url,
                "--tag",
                self.tag,
                "--sessions",
                str(self.scenario.sessions),
                "--first",
                str(first),
                "--count",
                str(count),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=1 << 22,
            )
            log.close()
            self.processes.append(process)
            first += count
        await self.replies(START_TIMEOUT_S)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    async def command(
        self, command: dict[str, Any], limit_s: float, per_process: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        for number, process in enumerate(self.processes):
            message = {**command, **(per_process[number] if per_process else {})}
            assert process.stdin is not None
            process.stdin.write((json.dumps(message) + "\n").encode())
            await process.stdin.drain()
        return await self.replies(limit_s)

    async def replies(self, limit_s: float) -> list[dict[str, Any]]:
        async def one(process: asyncio.subprocess.Process) -> dict[str, Any]:
            assert process.stdout is not None
            line = await process.stdout.readline()
            if not line:
                raise RuntimeError(f"client process {process.pid} exited ({await process.wait()})")
            reply: dict[str, Any] = json.loads(line)
            return reply

        async with asyncio.timeout(limit_s):
            return await asyncio.gather(*(one(process) for process in self.processes))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.command({"cmd": "close"}, 20)
        for process in self.processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()


# -- the systems under test -----------------------------------------------------------------------


class Publisher:
    """This process publishes every session's frames on its events subject, on the shared schedule."""

    def __init__(self, nc: NATS, tag: str, scenario: Scenario) -> None:
        self.nc = nc
        sessions = session_ids(tag, scenario.sessions)
        self.subjects = [subjects.events(sid) for sid in sessions]
        self.makers = [FrameMaker(sid) for sid in sessions]
        self.rate = scenario.rate
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[int] | None = None

    async def send(self, index: int) -> None:
        await self.nc.publish(self.subjects[index], self.makers[index].next())

    def start(self) -> None:
        self.task = asyncio.create_task(run_schedule(len(self.subjects), self.rate, self.send, self.stop_event))

    async def stop(self) -> int:
        self.stop_event.set()
        return await self.task if self.task is not None else 0


class System:
    """One server under test, started fresh for each scenario."""

    name: str
    client_mode = "ws"
    pid = 0
    broker_pid = 0
    url = ""

    async def start(self, tag: str, scenario: Scenario) -> None:
        raise NotImplementedError

    async def start_traffic(self) -> None:
        raise NotImplementedError

    async def stop_traffic(self) -> None:
        raise NotImplementedError

    async def notes(self) -> list[str]:
        return []

    async def close(self) -> None:
        raise NotImplementedError


class NatsFedSystem(System):
    """A system whose events come from a publisher on NATS (the edge, nats-server's WebSocket)."""

    nc: NATS | None = None
    publisher: Publisher | None = None

    async def connect_publisher(self, nats_url: str, tag: str, scenario: Scenario) -> None:
        self.nc = await nats.connect(nats_url, name=f"bench-{self.name}-publisher")
        self.publisher = Publisher(self.nc, tag, scenario)

    async def start_traffic(self) -> None:
        assert self.publisher is not None
        self.publisher.start()

    async def stop_traffic(self) -> None:
        if self.publisher is not None:
            await self.publisher.stop()

    async def close_publisher(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop_traffic()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        self.nc = self.publisher = None


class EdgeSystem(NatsFedSystem):
    name = "edge"

    def __init__(self, nats_url: str, workdir: Path, throttle_ms: int | None, module: str) -> None:
        self.nats_url = nats_url
        self.module = module
        self.workdir = workdir
        self.throttle_ms = throttle_ms
        self.process: subprocess.Popen[bytes] | None = None
        self.http = ""

    async def start(self, tag: str, scenario: Scenario) -> None:
        port = free_port()
        env = {
            **os.environ,
            "CTXMETER_KV_BUCKET": BUCKET,
            # Every client comes from 127.0.0.1: the per-IP limit must not refuse the bench's ramp.
            "CTXMETER_IP_CONNECT_RATE": "1000000",
            "CTXMETER_IP_CONNECT_BURST": "1000000",
            "CTXMETER_MAX_CONNECTIONS": str(scenario.clients * 2 + 1000),
        }
        if self.throttle_ms is not None:
            env["CTXMETER_THROTTLE_MS"] = str(self.throttle_ms)
        log = self.workdir / f"edge-{tag}.log"
        self.process = python_module(
            self.module,
            "--log-level",
            "WARNING",
            "edge",
            "--nats-url",
            self.nats_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            log=log,
            env=env,
        )
        self.pid = self.process.pid
        self.http = f"http://127.0.0.1:{port}"
        self.url = f"ws://127.0.0.1:{port}{WS_PATH}"
        await wait_http(f"{self.http}/readyz", self.process, log)
        await self.connect_publisher(self.nats_url, tag, scenario)

    async def notes(self) -> list[str]:
        try:
            text = await asyncio.to_thread(http_text, f"{self.http}/metrics")
        except OSError as error:
            return [f"/metrics unreadable: {error}"]
        wanted = ("frames_sent", "frames_coalesced", "stale_events_dropped", "slow_sockets_closed", "rejected")
        found = []
        for line in text.splitlines():
            if line.startswith("ctxmeter_edge_") and any(word in line for word in wanted) and "_created" not in line:
                name, _, value = line.rpartition(" ")
                if float(value):
                    found.append(f"{name.removeprefix('ctxmeter_edge_')}={float(value):,.0f}")
        return ["edge /metrics: " + (", ".join(found) or "nothing to report")]

    async def close(self) -> None:
        await self.close_publisher()
        if self.process is not None:
            await asyncio.to_thread(stop_process, self.process)
        self.process = None


class RawSystem(System):
    name = "raw (a)"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.http = ""

    async def start(self, tag: str, scenario: Scenario) -> None:
        port = free_port()
        log = self.workdir / f"raw-{tag}.log"
        args = ["--port", str(port), "--tag", tag, "--sessions", str(scenario.sessions), "--rate", str(scenario.rate)]
        self.process = python_module("bench.raw_ws_server", *args, log=log)
        self.pid = self.process.pid
        self.http = f"http://127.0.0.1:{port}"
        self.url = f"ws://127.0.0.1:{port}{WS_PATH}"
        await wait_http(f"{self.http}/healthz", self.process, log)

    async def start_traffic(self) -> None:
        await asyncio.to_thread(http_status, f"{self.http}/bench/start", "POST")

    async def stop_traffic(self) -> None:
        await asyncio.to_thread(http_status, f"{self.http}/bench/stop", "POST")

    async def close(self) -> None:
        if self.process is not None:
            await asyncio.to_thread(stop_process, self.process)
        self.process = None


class NatsWsSystem(NatsFedSystem):
    def __init__(self, workdir: Path, client_mode: str) -> None:
        self.workdir = workdir
        self.client_mode = client_mode
        self.name = NATS_PY if client_mode == "nats" else NATS_RAW
        self.server: NatsProcess | None = None

    async def start(self, tag: str, scenario: Scenario) -> None:
        store = self.workdir / f"nats-ws-{tag}"
        store.mkdir()
        config = store / "nats-ws.conf"
        config.write_text(NATS_WS_CONF)
        self.server = NatsProcess(store, config=config)
        await asyncio.to_thread(self.server.start)
        assert self.server.process is not None
        self.pid = self.server.process.pid
        ports = json.loads((store / "ports" / f"nats-server_{self.pid}.ports").read_text())
        self.url = ports["websocket"][0]
        await self.connect_publisher(self.server.url, tag, scenario)

    async def close(self) -> None:
        await self.close_publisher()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
        self.server = None


# -- one run ----------------------------------------------------------------------------------


async def run_case(system: System, scenario: Scenario, opts: argparse.Namespace, workdir: Path) -> Result:
    result = Result(system.name, scenario)
    tag = f"{re.sub(r'[^a-z]', '', system.name.split()[0] + system.client_mode)}{scenario.name}{uuid.uuid4().hex[:6]}"
    clients: ClientGroup | None = None
    try:
        await system.start(tag, scenario)
        await asyncio.sleep(0.5)
        result.rss_idle_kb = proc_status_kb(system.pid, "VmRSS")
        clients = ClientGroup(system.client_mode, system.url, tag, scenario, workdir)
        await clients.start()
        connected = await clients.command({"cmd": "connect"}, opts.connect_timeout)
        result.connected = sum(reply["ok"] for reply in connected)
        result.failed = sum(reply["failed"] for reply in connected)
        result.connect_s = max(reply["seconds"] for reply in connected)
        for reply in connected:
            for error, count in reply["errors"].items():
                result.errors[error] = result.errors.get(error, 0) + count
        await system.start_traffic()
        await asyncio.sleep(opts.warmup)
        pids = [system.pid, system.broker_pid, *clients.pids]
        cpu_before = [cpu_seconds(pid) if pid else 0.0 for pid in pids]
        started = time.perf_counter()
        await clients.command({"cmd": "start"}, 10)
        await asyncio.sleep(opts.measure)
        samples = [workdir / f"samples-{tag}-{number}.bin" for number in range(len(clients.processes))]
        stopped = await clients.command({"cmd": "stop"}, 30, per_process=[{"samples": str(path)} for path in samples])
        elapsed = time.perf_counter() - started
        cpu = [
            (cpu_seconds(pid) - before) / elapsed if pid else 0.0 for pid, before in zip(pids, cpu_before, strict=True)
        ]
        result.server_cpu, result.broker_cpu, result.client_cpu = cpu[0], cpu[1], sum(cpu[2:])
        result.rss_kb = proc_status_kb(system.pid, "VmRSS")
        result.hwm_kb = proc_status_kb(system.pid, "VmHWM")
        await system.stop_traffic()
        result.received = sum(reply["received"] for reply in stopped)
        result.seconds = max(reply["seconds"] for reply in stopped)
        result.disconnects = sum(reply["disconnects"] for reply in stopped)
        result.starved = sum(reply["starved"] for reply in stopped)
        result.errors = {}  # each process reports every error since it started, connect errors too
        for reply in stopped:
            for error, count in reply["errors"].items():
                result.errors[error] = result.errors.get(error, 0) + count
        for path in samples:
            with path.open("rb") as source:
                result.latencies.frombytes(source.read())
            path.unlink()
        result.notes += await system.notes()
    except Exception as error:  # a broken system must not stop the other runs
        result.skipped = f"failed: {type(error).__name__}: {error}"
    finally:
        if clients is not None:
            await clients.close()
        await system.close()
    return result


# -- report -------------------------------------------------------------------------------------


def fmt(value: float, spec: str) -> str:
    return "n/a" if value != value else format(value, spec)  # NaN check


def print_table(results: list[Result]) -> None:
    header = (
        f"{'system':<17} {'scenario':<19} {'conns':>7} {'deliv/s':>9} {'expected':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'max ms':>8} {'RSS MB':>7} {'KB/conn':>8} {'srv CPU':>7} {'us/dlv':>7} {'cli CPU':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if r.skipped:
            print(f"{r.system:<17} {r.scenario.label:<19} {r.skipped}")
            continue
        print(
            f"{r.system:<17} {r.scenario.label:<19} {r.connected:>7,} {r.deliveries:>9,.0f}"
            f" {r.scenario.expected:>9,.0f}"
            f" {fmt(r.p(0.5), '8.2f')} {fmt(r.p(0.99), '8.2f')} {fmt(r.p(1.0), '8.2f')} {r.rss_kb / 1024:>7.1f}"
            f" {fmt(r.kb_per_conn, '8.1f')} {r.server_cpu:>7.0%} {fmt(r.us_per_delivery, '7.1f')} {r.client_cpu:>7.0%}"
        )
    print(
        "\nconns: clients connected (of the scenario's); deliv/s: frames received per second by all clients while"
        "\nmeasuring; p50/p99/max: publish (sender's timestamp) -> client receive; RSS: the server process's"
        "\nVmRSS at the end; KB/conn: (RSS loaded - RSS idle) / conns; srv CPU: the server process's cores used;"
        "\nus/dlv: its CPU microseconds per delivered frame; cli CPU: the client processes' cores."
        f"\n{NATS_PY}: nats-py clients over ws://; {NATS_RAW}: the same server, minimal NATS-over-WebSocket clients."
    )
    for r in results:
        extra = []
        if r.failed:
            extra.append(f"{r.failed} connections failed")
        if r.disconnects:
            extra.append(f"{r.disconnects} disconnected while measuring")
        if r.starved:
            extra.append(f"{r.starved} clients got nothing while measuring")
        if r.errors:
            extra.append(f"errors {r.errors}")
        if r.broker_cpu:
            extra.append(f"nats-server behind it used {r.broker_cpu:.0%} CPU")
        if r.connect_s:
            extra.append(
                f"ramp {r.connect_s:.1f} s; RSS idle {r.rss_idle_kb / 1024:.1f} MB, peak {r.hwm_kb / 1024:.1f} MB"
            )
        extra += r.notes
        if extra and not r.skipped:
            print(f"  {r.system} {r.scenario.name}: " + "; ".join(extra))


def verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else ("PASS" if ok else "FAIL")


def print_targets(results: list[Result], scenarios: dict[str, Scenario]) -> None:
    by = {(r.system, r.scenario.name): r for r in results if not r.skipped}
    print("\nTargets (issue 3):")
    edge_a = by.get((EdgeSystem.name, "A"))
    if edge_a:
        p99 = edge_a.p(0.99)
        ok = verdict(p99 <= TARGET_P99_MS)
        print(f"  [{ok}] edge p99 at {edge_a.scenario.label}: {p99:.2f} ms (<= {TARGET_P99_MS:g})")
    for name in scenarios:
        edge = by.get((EdgeSystem.name, name))
        if edge is None or not edge.deliveries:
            continue
        for system, target in ((RawSystem.name, TARGET_OF_RAW), (NATS_PY, TARGET_OF_NATS), (NATS_RAW, TARGET_OF_NATS)):
            other = by.get((system, name))
            if other is None or not other.deliveries:
                continue
            ratio = edge.deliveries / other.deliveries
            print(f"  [{verdict(ratio >= target)}] {name}: edge deliveries/s = {ratio:.2f}x {system} (>= {target:g}x)")
    edge_b = by.get((EdgeSystem.name, "B"))
    if edge_b:
        mb = edge_b.rss_kb / 1024
        print(
            f"  [{verdict(mb <= TARGET_RSS_MB and edge_b.connected >= edge_b.scenario.clients)}] edge RSS with"
            f" {edge_b.connected:,} connections: {mb:.0f} MB (<= {TARGET_RSS_MB:g} MB at 10,000)"
        )
    print("\nServer CPU per delivery (where every system delivers all it is offered, deliveries/s ratios sit")
    print("near 1 and this shows the headroom: roughly how far each could go on one core; nats-server, a Go")
    print("program, spends relatively more when lightly loaded):")
    for name in scenarios:
        parts = []
        edge = by.get((EdgeSystem.name, name))
        for system in (EdgeSystem.name, RawSystem.name, NATS_PY, NATS_RAW):
            other = by.get((system, name))
            if other is None or not other.deliveries or not other.server_cpu:
                continue
            cost = other.us_per_delivery
            part = f"{system:<16} {cost:6.1f} us/delivery (~{1e6 / cost:7,.0f}/s per core)"
            if edge is not None and other is not edge and edge.server_cpu:
                part += f"; the edge spends {edge.us_per_delivery / other.us_per_delivery:.2f}x this"
            parts.append(part)
        if parts:
            print(f"  {name}: " + "\n     ".join(parts))


# -- main ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def edge_backend(needed: bool) -> Iterator[tuple[str, int]]:
    """nats-server with JetStream and ``ctxmeter functions`` for the edge: (NATS URL, nats-server pid)."""
    if not needed:
        yield "", 0
        return
    with nats_server() as server, tempfile.TemporaryDirectory(prefix="ctxmeter-bench-fn-") as logs:
        assert server.process is not None
        env = {**os.environ, "CTXMETER_KV_BUCKET": BUCKET}
        args = ["--log-level", "WARNING", "functions", "--nats-url", server.url]
        functions = python_module("ctxmeter_cli", *args, log=Path(logs) / "functions.log", env=env)
        try:
            yield server.url, server.process.pid
        finally:
            stop_process(functions)


async def wait_functions(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                await nc.request(subjects.service_ping(), b"", timeout=0.5)
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("ctxmeter functions did not come up")
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def interrupted_on_term() -> AsyncIterator[None]:
    """SIGTERM ends the run like Ctrl-C, so every child is stopped by the ``finally`` blocks."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def main_async(opts: argparse.Namespace) -> int:
    table = QUICK if opts.quick else FULL
    scenarios = {name: table[name] for name in opts.scenarios.split(",")}
    systems = opts.systems.split(",")
    results: list[Result] = []
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="ctxmeter-bench-edge-") as tmp,
        edge_backend("edge" in systems) as (
            nats_url,
            broker_pid,
        ),
    ):
        workdir = Path(tmp)
        if opts.logs:
            workdir = Path(opts.logs)
            workdir.mkdir(parents=True, exist_ok=True)
        if nats_url:
            await wait_functions(nats_url)
        async with interrupted_on_term():
            for scenario in scenarios.values():
                for name in systems:
                    system: System
                    if name == "edge":
                        system = EdgeSystem(nats_url, workdir, opts.throttle_ms, opts.edge_module)
                        system.broker_pid = broker_pid
                    elif name == "raw":
                        system = RawSystem(workdir)
                    elif name in ("nats", "natsraw"):
                        if name == "nats" and scenario.clients > opts.nats_py_max:
                            skipped = Result(NATS_PY, scenario)
                            skipped.skipped = (
                                f"skipped: {scenario.clients:,} nats-py clients (one aiohttp session each) are more"
                                f" than --nats-py-max {opts.nats_py_max:,} on this machine; see '{NATS_RAW}'"
                            )
                            results.append(skipped)
                            continue
                        system = NatsWsSystem(workdir, name)
                    else:
                        raise SystemExit(f"unknown system {name!r}")
                    progress = f"... {system.name}, scenario {scenario.name} ({scenario.label})"
                    print(progress, file=sys.stderr, flush=True)
                    result = await run_case(system, scenario, opts, workdir)
                    results.append(result)
                    if result.skipped:
                        print(f"    {result.skipped}", file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(
        f"\nctxmeter edge benchmark ({'quick' if opts.quick else 'full'}; {os.cpu_count()} CPUs; load average before"
        f" the run {opts.load_before:.2f}, after {load[0]:.2f}; measured {opts.measure:g} s after {opts.warmup:g} s"
        f" warm-up; {time.perf_counter() - started:.0f} s in all)\n"
    )
    print_table(results)
    print_targets(results, scenarios)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller numbers, about one minute")
    parser.add_argument("--systems", default="edge,raw,nats,natsraw", help="edge, raw, nats, natsraw (comma-separated)")
    parser.add_argument("--scenarios", default="A,B", help="A, B and C (saturation, not by default), comma-separated")
    parser.add_argument("--warmup", type=float, help="seconds of traffic before measuring")
    parser.add_argument("--measure", type=float, help="seconds measured")
    parser.add_argument("--connect-timeout", type=float, default=120.0, help="seconds for all clients to connect")
    parser.add_argument("--throttle-ms", type=int, help="CTXMETER_THROTTLE_MS for the edge (default: its own)")
    parser.add_argument("--logs", help="keep the servers' and clients' logs in this directory")
    parser.add_argument(
        "--edge-module", default="ctxmeter_cli", help="module run as the edge's CLI (to try a patched edge)"
    )
    parser.add_argument(
        "--nats-py-max", type=int, default=10_000, help="largest scenario run with nats-py clients for (b)"
    )
    opts = parser.parse_args()
    opts.warmup = opts.warmup if opts.warmup is not None else (1.0 if opts.quick else 2.0)
    opts.measure = opts.measure if opts.measure is not None else (4.0 if opts.quick else 12.0)
    opts.load_before = os.getloadavg()[0]
    raise_fd_limit()
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(main_async(opts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench_edge: interrupted; every process it started was stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
