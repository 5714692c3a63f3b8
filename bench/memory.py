"""Resident memory of the processes as deployed: ``ctxmeter up`` after some use, and ``ctxmeter edge`` alone.

- ``up``: ``ctxmeter up`` (its embedded nats-server is a process of its own, not counted) from the tree
  under test; once it serves, one count with each encoding of a short text (counted inline) and one of a
  100 KB text (counted on a worker thread), then a few context updates; then its VmRSS (and VmHWM, the
  peak). A count with each encoding makes every encoding load, so lazy loading alone cannot flatter it.
- ``edge``: ``ctxmeter edge`` alone (against a nats-server), idle, once it answers ``/healthz``.

Run: ``python -m bench.memory`` (``--before HEAD`` also measures that revision, in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nats

from bench.bench_edge import proc_status_kb, stop_process, wait_http
from bench.trees import Tree, exported, working_tree
from ctxmeter.natsserver import NatsServerProcess, free_port
from schemas import subjects
from schemas.subjects import ContextOp

SETTLE_S: Final = 1.0
SHORT_TEXT: Final = "Agents compact their context before the window is full; the meter shows how close they are."
LONG_TEXT_BYTES: Final = 100_000
UPDATES: Final = 5


@dataclass
class Rss:
    tree: Tree
    what: str
    rss_kb: int = 0
    peak_kb: int = 0
    failure: str = ""

    @property
    def mb(self) -> float:
        return self.rss_kb / 1024 if not self.failure else float("nan")

    def sample(self, pid: int) -> None:
        """Resident memory of ``pid`` now, and its peak so far."""
        self.rss_kb = proc_status_kb(pid, "VmRSS")
        self.peak_kb = proc_status_kb(pid, "VmHWM")

    def summary(self) -> str:
        if self.failure:
            return f"{self.tree.label:<6} {self.what:<5} FAILED: {self.failure}"
        return f"{self.tree.label:<6} {self.what:<5} RSS {self.mb:6.1f} MB (peak {self.peak_kb / 1024:6.1f} MB)"


def long_text() -> str:
    from bench.texts import prose

    return prose(LONG_TEXT_BYTES)


async def use_it(nats_url: str) -> None:
    """One short and one 100 KB count with each encoding, then a few updates of one session."""
    nc = await nats.connect(nats_url)
    try:
        for encoding in ("o200k_base", "cl100k_base"):
            for text in (SHORT_TEXT, long_text()):
                body = json.dumps({"text": text, "encoding": encoding}).encode()
                reply = await nc.request(subjects.tokens_count(), body, timeout=30)
                if b'"count"' not in reply.data:
                    raise RuntimeError(f"count failed: {reply.data[:200]!r}")
        for used in range(1, UPDATES + 1):
            body = json.dumps({"used": used * 1000, "total": 200_000}).encode()
            await nc.request(subjects.context(ContextOp.SET, "bench-memory"), body, timeout=10)
    finally:
        await nc.close()


async def measure_up(tree: Tree, workdir: Path) -> Rss:
    result = Rss(tree, "up")
    port, nats_port = free_port(), free_port()
    log = workdir / f"up-{tree.label}.log"
    store = workdir / f"store-{tree.label}"
    args = ["up", "--port", str(port), "--nats-port", str(nats_port), "--nats-monitor-port", "0", "--store", str(store)]
    process = tree.spawn(*args, log=log, env={"CTXMETER_KV_BUCKET": "CTXMETER_BENCH_MEMORY"})
    try:
        await wait_http(f"http://127.0.0.1:{port}/readyz", process, log)
        await use_it(f"nats://127.0.0.1:{nats_port}")
        await asyncio.sleep(SETTLE_S)
        result.sample(process.pid)
    except Exception as error:
        result.failure = f"{type(error).__name__}: {error}"
    finally:
        await asyncio.to_thread(stop_process, process)
    return result


async def measure_edge(tree: Tree, workdir: Path) -> Rss:
    result = Rss(tree, "edge")
    server = NatsServerProcess(workdir / f"nats-edge-{tree.label}")
    await asyncio.to_thread(server.start)
    port = free_port()
    log = workdir / f"edge-{tree.label}.log"
    args = ["edge", "--nats-url", server.url, "--host", "127.0.0.1", "--port", str(port)]
    process = tree.spawn(*args, log=log)
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz", process, log)
        await asyncio.sleep(SETTLE_S)
        result.sample(process.pid)
    except Exception as error:
        result.failure = f"{type(error).__name__}: {error}"
    finally:
        await asyncio.to_thread(stop_process, process)
        await asyncio.to_thread(server.stop)
    return result


async def measure_memory(trees: list[Tree], what: tuple[str, ...] = ("up", "edge")) -> list[Rss]:
    results = []
    with tempfile.TemporaryDirectory(prefix="ctxmeter-memory-") as tmp:
        for name in what:
            for tree in trees:
                print(f"... memory of {name} on {tree.label} ({tree.revision})", file=sys.stderr, flush=True)
                measure = measure_up if name == "up" else measure_edge
                result = await measure(tree, Path(tmp))
                print("    " + result.summary(), file=sys.stderr, flush=True)
                results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="also measure this git revision (e.g. HEAD), in the same run")
    parser.add_argument("--what", default="up,edge", help="up, edge (comma-separated)")
    opts = parser.parse_args()
    with contextlib.ExitStack() as stack:
        trees = [stack.enter_context(exported(opts.before))] if opts.before else []
        trees.append(working_tree())
        for result in asyncio.run(measure_memory(trees, tuple(opts.what.split(",")))):
            print(result.summary())


if __name__ == "__main__":
    main()
