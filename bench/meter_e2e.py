"""End to end through the real system: publish ``ctxmeter.context.set.<sid>`` → frame in a browser-like client.

Processes, all started afresh for each run: nats-server with JetStream (``nats.conf``), ``ctxmeter
functions`` and ``ctxmeter edge`` (both from the tree under test, ``bench.trees``), client processes
(``bench.edge_clients --mode meter``) holding the WebSockets, and this process, which publishes.

Each change is a plain publish (no reply subject) of ``{"used": n, "total": 200000}`` where ``n`` is the
session's own sequence number; this process records when it published each (session, n), the clients
record when each frame of (session, n) arrived (one machine, one clock). Latency = arrival - publish.

Loads (``LOADS``):
- ``burst``: 1,000 sockets over 100 sessions; every 150 ms all 100 sessions change at the same instant.
- ``steady``: the same sockets; the 100 changes spread evenly over each 150 ms.
- ``scale``: 18,000 sockets over 1,800 sessions; one change per session per second, spread evenly. This
  machine caps a process at 20,000 open files (``ulimit -Hn``): the edge holds all 18,000 in one process,
  the clients spread them over 4. The run also times the connects (all of them, from the first client's
  first connect to the last one's last, 50 at a time per client process), and reads each process's CPU
  over the connects: CPU per connect, and the least time 18,000 connects can take on this machine's cores.

With a change every 150 ms per session and the edge's 100 ms throttle, every change is a leading edge
and goes out at once: every change should reach every socket of its session.

Stages, from the same records: ``functions`` = the event's own ``timestamp`` (stamped by the functions
after the compare-and-set was acknowledged) - publish; ``to NATS sub`` = arrival of the event at a plain
NATS subscriber in this process - publish (what the edge could see at best); ``edge+client`` = frame
arrival - event timestamp.

Run: ``python -m bench.meter_e2e --load burst`` (``--before HEAD`` also measures that revision, in the
same run; ``--measure``/``--warmup`` seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from bench.bench_edge import (
    CLK_TCK,
    ClientGroup,
    Scenario,
    proc_status_kb,
    raise_fd_limit,
    stop_process,
    wait_functions,
    wait_http,
)
from bench.common import percentile
from bench.edge_load import session_ids
from bench.trees import Tree, exported, working_tree
from ctxmeter.natsserver import NatsServerProcess, free_port
from ctxmeter.settings import Settings
from schemas import subjects
from schemas.state import ContextState, context_event, context_usage_json, utc_now
from schemas.subjects import ContextOp

BUCKET: Final = "CTXMETER_BENCH_E2E"
WS_PATH: Final = "/api/ws/counters/"
WINDOW: Final = 200_000
SETTLE_S: Final = 0.5
# Cores the connect arithmetic divides by: every process of the run shares them.
CORES: Final = os.cpu_count() or 1
RULES: Final = Settings()


@dataclass(frozen=True)
class Load:
    name: str
    sockets: int
    sessions: int
    period_s: float  # each session changes once per period
    burst: bool  # all sessions at the same instant; else spread evenly over the period
    processes: int  # client processes

    @property
    def label(self) -> str:
        how = "at once" if self.burst else "spread"
        return f"{self.sockets:,} sockets/{self.sessions:,} sessions, every {self.period_s * 1e3:g} ms {how}"


LOADS: Final = {
    "burst": Load("burst", 1_000, 100, 0.150, True, 1),
    "steady": Load("steady", 1_000, 100, 0.150, False, 1),
    "scale": Load("scale", 18_000, 1_800, 1.0, False, 4),
}


@dataclass
class Run:
    tree: Tree
    load: Load
    connected: int = 0
    failed: int = 0
    # Seconds the connects took: the slowest client process's, all processes connecting at once.
    connect_s: float = 0.0
    # CPU seconds each part spent while the clients connected (user + system; "clients" summed over its
    # processes): what one connect costs, so whether the connect goal fits the machine's cores is arithmetic.
    connect_cpu: dict[str, float] = field(default_factory=dict)
    sent: int = 0
    expected: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    functions_stage: array[float] = field(default_factory=lambda: array("d"))
    nats_stage: array[float] = field(default_factory=lambda: array("d"))
    edge_stage: array[float] = field(default_factory=lambda: array("d"))
    unmatched: int = 0
    # Per burst (the changes published at one instant, by sequence number): when its first and last event
    # was stamped and its first and last frame arrived, after the publish; seconds.
    timeline: dict[int, list[float]] = field(default_factory=dict)
    edge_rss_idle_kb: int = 0
    edge_rss_kb: int = 0
    # Cores used while measuring, user and system time apart ("edge", "edge sys", ...).
    cpu: dict[str, float] = field(default_factory=dict)
    changes_per_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    failure: str = ""

    def p(self, fraction: float, samples: array[float] | None = None) -> float:
        data = self.latencies if samples is None else samples
        return percentile(data, fraction) * 1e3 if data else float("nan")

    @property
    def kb_per_socket(self) -> float:
        return (self.edge_rss_kb - self.edge_rss_idle_kb) / self.connected if self.connected else float("nan")

    @property
    def delivered(self) -> float:
        return len(self.latencies) / self.expected if self.expected else float("nan")

    def summary(self) -> str:
        if self.failure:
            return f"{self.tree.label:<6} {self.load.name:<6} FAILED: {self.failure}"
        cpu = " ".join(f"{name} {share:.0%}" for name, share in self.cpu.items())
        if self.changes_per_s:
            per_change = (self.cpu.get("functions", 0) + self.cpu.get("functions sys", 0)) / self.changes_per_s
            frames_per_s = self.changes_per_s * self.load.sockets / self.load.sessions
            per_frame = (self.cpu.get("edge", 0) + self.cpu.get("edge sys", 0)) / frames_per_s
            cpu += f"; functions {per_change * 1e6:.0f} us/change, edge {per_frame * 1e6:.1f} us/frame"
        return (
            f"{self.tree.label:<6} {self.load.name:<6} sockets {self.connected:,} (failed {self.failed}, connected in"
            f" {self.connect_s:.1f} s); frames"
            f" {len(self.latencies):,} of {self.expected:,} ({self.delivered:.1%}); e2e p50 {self.p(0.5):.2f}"
            f" p99 {self.p(0.99):.2f} max {self.p(1.0):.2f} ms | p99 functions {self.p(0.99, self.functions_stage):.2f}"
            f" to-NATS-sub {self.p(0.99, self.nats_stage):.2f} edge+client {self.p(0.99, self.edge_stage):.2f} ms"
            f" | edge RSS idle {self.edge_rss_idle_kb / 1024:.1f} MB, loaded {self.edge_rss_kb / 1024:.1f} MB,"
            f" {self.kb_per_socket:.1f} KB/socket | CPU {cpu}"
            + self.connect_cost()
            + (f" | errors {self.errors}" if self.errors else "")
            + self.burst_timeline()
        )

    def connect_cost(self) -> str:
        """CPU per connect of each part, and the least time the connects could take on this machine's cores
        with every part's CPU as measured (no waiting, cores shared perfectly)."""
        if not self.connect_cpu or not self.connected:
            return ""
        per = ", ".join(f"{name} {cpu / self.connected * 1e6:.0f}" for name, cpu in self.connect_cpu.items())
        total = sum(self.connect_cpu.values())
        edge = self.connect_cpu.get("edge", 0.0)
        return (
            f" | CPU per connect (us): {per}; all {total / self.connected * 1e6:.0f} us -> at least"
            f" {total / CORES:.1f} s on {CORES} cores (edge alone, one thread: {edge:.1f} s)"
        )

    def burst_timeline(self) -> str:
        """Median and worst burst: first/last event out of the functions, first/last frame in a client."""
        if not self.timeline:
            return ""
        columns = list(zip(*self.timeline.values(), strict=True))
        names = ("first event", "last event", "first frame", "last frame")
        median = ", ".join(f"{name} {percentile(col, 0.5) * 1e3:.1f}" for name, col in zip(names, columns, strict=True))
        worst = ", ".join(f"{name} {max(col) * 1e3:.1f}" for name, col in zip(names, columns, strict=True))
        return f" | bursts, median: {median}; worst: {worst} ms"


# -- processes --------------------------------------------------------------------------------------


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` so far."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    return 0.0, 0.0


@dataclass
class Backend:
    nats_url: str
    edge_url: str
    http: str
    pids: dict[str, int]


@contextlib.asynccontextmanager
async def backend(tree: Tree, load: Load, workdir: Path) -> AsyncIterator[Backend]:
    """nats-server with JetStream, then the tree's functions, then its edge; stopped in reverse."""
    store = workdir / f"nats-{uuid.uuid4().hex[:6]}"
    server = NatsServerProcess(store)
    await asyncio.to_thread(server.start)
    parts: list[subprocess.Popen[bytes]] = []
    try:
        assert server.process is not None
        env = {
            "CTXMETER_KV_BUCKET": BUCKET,
            "CTXMETER_IP_CONNECT_RATE": "1000000",
            "CTXMETER_IP_CONNECT_BURST": "1000000",
            "CTXMETER_MAX_CONNECTIONS": str(load.sockets * 2 + 1000),
        }
        functions = tree.spawn("functions", "--nats-url", server.url, log=workdir / "functions.log", env=env)
        parts.append(functions)
        await wait_functions(server.url)
        port = free_port()
        edge_args = ["edge", "--nats-url", server.url, "--host", "127.0.0.1", "--port", str(port)]
        edge = tree.spawn(*edge_args, log=workdir / "edge.log", env=env)
        parts.append(edge)
        http = f"http://127.0.0.1:{port}"
        await wait_http(f"{http}/readyz", edge, workdir / "edge.log")
        yield Backend(
            server.url,
            f"ws://127.0.0.1:{port}{WS_PATH}",
            http,
            {"edge": edge.pid, "functions": functions.pid, "nats-server": server.process.pid},
        )
    finally:
        for part in reversed(parts):
            await asyncio.to_thread(stop_process, part)
        await asyncio.to_thread(server.stop)


# -- the publisher ----------------------------------------------------------------------------------


class Publisher:
    """Publishes each session's changes on schedule and remembers when it published each (session, n)."""

    def __init__(self, nc: NATS, sids: list[str], load: Load, *, direct: bool = False) -> None:
        self.nc = nc
        self.sids = sids
        # direct: publish the event the functions would, on the events subject (the edge's stage alone).
        self.direct = direct
        self.subjects = [(subjects.events if direct else partial(subjects.context, ContextOp.SET))(sid) for sid in sids]
        self.load = load
        self.sent: dict[tuple[int, int], float] = {}
        self.recording = False
        self.counted = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        count = len(self.subjects)
        period = self.load.period_s
        offsets = [0.0 if self.load.burst else period * index / count for index in range(count)]
        sequence = [0] * count
        started = loop.time() + 0.05
        tick = 0
        while not self._stop.is_set():
            base = started + tick * period
            for index in range(count):
                delay = base + offsets[index] - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                    if self._stop.is_set():
                        return
                sequence[index] += 1
                used = sequence[index]
                self.sent[(index, used)] = time.time()
                if self.recording:
                    self.counted += 1
                await self.nc.publish(self.subjects[index], self._payload(index, used))
            tick += 1

    def _payload(self, index: int, used: int) -> bytes:
        if not self.direct:
            return b'{"used":%d,"total":%d}' % (used, WINDOW)
        state = ContextState(used=used, total=WINDOW, updated_at=utc_now())
        sid = self.sids[index]
        return context_event(sid, context_usage_json(sid, state, used, RULES))


class EventTap:
    """A plain NATS subscriber on every session's events: when each event left nats-server, at best."""

    def __init__(self, index_of: dict[str, int]) -> None:
        self.index_of = index_of
        self.arrived: dict[tuple[int, int], float] = {}

    async def on_event(self, msg: Msg) -> None:
        now = time.time()
        with contextlib.suppress(ValueError, KeyError, TypeError):
            event = json.loads(msg.data)
            self.arrived[(self.index_of[event["session_id"]], event["data"]["used"])] = now


# -- one run ----------------------------------------------------------------------------------------


async def run_load(
    tree: Tree, load: Load, *, warmup: float, measure: float, workdir: Path, direct: bool = False
) -> Run:
    run = Run(tree, load)
    tag = f"e2e{load.name}{uuid.uuid4().hex[:6]}"
    sids = session_ids(tag, load.sessions)
    scenario = Scenario(load.name, load.sockets, load.sessions, 1 / load.period_s, load.processes)
    clients: ClientGroup | None = None
    nc: NATS | None = None
    try:
        async with backend(tree, load, workdir) as system:
            await asyncio.sleep(SETTLE_S)
            run.edge_rss_idle_kb = proc_status_kb(system.pids["edge"], "VmRSS")
            clients = ClientGroup("meter", system.edge_url, tag, scenario, workdir)
            await clients.start()
            connecting = {**system.pids, **{f"clients{n}": pid for n, pid in enumerate(clients.pids)}}
            before_connect = {name: sum(cpu_split(pid)) for name, pid in connecting.items()}
            connected = await clients.command({"cmd": "connect"}, 120)
            for name, pid in connecting.items():
                group = "clients" if name.startswith("clients") else name
                spent = sum(cpu_split(pid)) - before_connect[name]
                run.connect_cpu[group] = run.connect_cpu.get(group, 0.0) + spent
            run.connected = sum(reply["ok"] for reply in connected)
            run.failed = sum(reply["failed"] for reply in connected)
            run.connect_s = max(reply["seconds"] for reply in connected)
            nc = await nats.connect(system.nats_url, name="bench-e2e-publisher")
            tap = EventTap({sid: index for index, sid in enumerate(sids)})
            await nc.subscribe(subjects.events("x").rsplit(".", 1)[0] + ".*", cb=tap.on_event)
            await nc.flush()
            publisher = Publisher(nc, sids, load, direct=direct)
            publisher.start()
            await asyncio.sleep(warmup)
            watched = {**system.pids, **{f"clients{n}": pid for n, pid in enumerate(clients.pids)}}
            before = {name: cpu_split(pid) for name, pid in watched.items()}
            started = time.perf_counter()
            await clients.command({"cmd": "start"}, 10)
            publisher.recording = True
            await asyncio.sleep(measure)
            publisher.recording = False
            samples = [workdir / f"records-{tag}-{number}.bin" for number in range(len(clients.processes))]
            stopped = await clients.command(
                {"cmd": "stop"}, 30, per_process=[{"samples": str(path)} for path in samples]
            )
            elapsed = time.perf_counter() - started
            for name, pid in watched.items():
                user, system_s = cpu_split(pid)
                group = "clients" if name.startswith("clients") else name
                run.cpu[group] = run.cpu.get(group, 0.0) + (user - before[name][0]) / elapsed
                run.cpu[group + " sys"] = run.cpu.get(group + " sys", 0.0) + (system_s - before[name][1]) / elapsed
            run.changes_per_s = run.load.sessions / run.load.period_s
            run.edge_rss_kb = proc_status_kb(system.pids["edge"], "VmRSS")
            await publisher.stop()
            run.sent = publisher.counted
            run.expected = publisher.counted * load.sockets // load.sessions
            for reply in stopped:
                for error, count in reply["errors"].items():
                    run.errors[error] = run.errors.get(error, 0) + count
            # The functions' stage once per event (the event's timestamp is in every frame of it).
            stamped_at: dict[tuple[int, int], float] = {}
            for path in samples:
                records = array("d")
                with path.open("rb") as source:
                    records.frombytes(source.read())
                path.unlink()
                for at in range(0, len(records), 4):
                    session, used, arrived, stamped = records[at : at + 4]
                    key = (int(session), int(used))
                    sent = publisher.sent.get(key)
                    if sent is None:
                        run.unmatched += 1
                        continue
                    run.latencies.append(arrived - sent)
                    run.edge_stage.append(arrived - stamped)
                    stamped_at[key] = stamped
                    if load.burst:
                        marks = run.timeline.setdefault(key[1], [float("inf"), 0.0, float("inf"), 0.0])
                        marks[0] = min(marks[0], stamped - sent)
                        marks[1] = max(marks[1], stamped - sent)
                        marks[2] = min(marks[2], arrived - sent)
                        marks[3] = max(marks[3], arrived - sent)
            for key, stamped in stamped_at.items():
                run.functions_stage.append(stamped - publisher.sent[key])
                tapped = tap.arrived.get(key)
                if tapped is not None:
                    run.nats_stage.append(tapped - publisher.sent[key])
            await close_all(nc, clients)
    except Exception as error:
        run.failure = f"{type(error).__name__}: {error}"
    finally:
        await close_all(nc, clients)
    return run


async def close_all(nc: NATS | None, clients: ClientGroup | None) -> None:
    """The publisher's connection and the clients, before the servers they talk to stop."""
    if nc is not None and not nc.is_closed:
        with contextlib.suppress(Exception):
            await nc.close()
    if clients is not None and clients.processes:
        await clients.close()
        clients.processes.clear()


async def measure_loads(
    trees: list[Tree],
    loads: list[Load],
    *,
    warmup: float,
    measure: float,
    logs: Path | None = None,
    direct: bool = False,
) -> list[Run]:
    """Each load on each tree, in that order (before, now; next load), every run on fresh processes."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="ctxmeter-e2e-") as tmp:
        workdir = logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for load in loads:
            for tree in trees:
                print(f"... e2e {load.name} ({load.label}) on {tree.label} ({tree.revision})", file=sys.stderr)
                run = await run_load(tree, load, warmup=warmup, measure=measure, workdir=workdir, direct=direct)
                print("    " + run.summary(), file=sys.stderr, flush=True)
                runs.append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", default="burst,steady,scale", help="burst, steady, scale (comma-separated)")
    parser.add_argument("--before", help="also measure this git revision (e.g. HEAD), in the same run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--measure", type=float, default=10.0)
    parser.add_argument("--logs", type=Path, help="keep the processes' logs here")
    parser.add_argument(
        "--direct", action="store_true", help="publish the events themselves (the edge's stage alone, no functions)"
    )
    opts = parser.parse_args()
    raise_fd_limit()
    loads = [LOADS[name] for name in opts.load.split(",")]

    async def go(trees: list[Tree]) -> list[Run]:
        return await measure_loads(
            trees, loads, warmup=opts.warmup, measure=opts.measure, logs=opts.logs, direct=opts.direct
        )

    import uvloop

    with contextlib.ExitStack() as stack:
        trees = [stack.enter_context(exported(opts.before))] if opts.before else []
        trees.append(working_tree())
        runs = uvloop.run(go(trees))
    for run in runs:
        print(run.summary())


def run_summary(runs: list[Run]) -> dict[str, Any]:
    return {f"{run.load.name}/{run.tree.label}": run.p(0.99) for run in runs}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
