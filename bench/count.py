"""Counting through ``ctxmeter.tokens.count`` against tiktoken in this process, in the same run.

- Latency: a 100 KB text (``bench.texts``: English prose, source code, CJK, a hard-wrapped licence)
  counted one request at a time through NATS by a ``ctxmeter functions`` process (from the tree under test), against
  ``len(encoding.encode_ordinary(text))`` in this process's main thread, rounds interleaved (one of
  each, in turn, which goes first alternating) so both see the same machine. Figure: median function ÷
  median tiktoken. A third interleaved round trip sends the same request to ``bench.echo``, which only
  answers its length: the transport alone, so the function's own time is its latency less tiktoken's
  and that.
- Cold start: before anything else, the first 16 counts of the first text after ``ctxmeter functions``
  started, sent at once, against the same batch once warm (after that text's rounds). Figure: cold MB/s ÷
  warm MB/s.
- Position against load: the whole measurement runs ``--passes`` times (default 2), each on a fresh
  ``ctxmeter functions``, the order of the texts and of the trees reversed every other pass; each pass's
  figures are printed with the place the text had in it, and the table's are every pass's samples pooled
  (cold start: the median of the passes'). A ratio that follows its position, not its text, is the
  machine's load or the previous text's after-effects, not the text.
- Throughput: the same texts, 16 requests in flight through the function, against tiktoken on a pool of
  2 threads (this machine's cores), each with an ``Encoding`` of its own (tiktoken at its best: see
  ``functions.encodings``). Figure: function MB/s ÷ tiktoken MB/s.

The baseline is plain tiktoken built from the same verified BPE file, never the functions' own code.
Requests are UTF-8 JSON, as most clients send them. Run: ``python -m bench.count`` (``--before HEAD``
also measures that revision, in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import nats
import tiktoken
from nats.aio.client import Client as NATS

from bench.bench_edge import stop_process, wait_functions
from bench.texts import TEXTS
from bench.trees import ROOT, Tree, exported, working_tree
from ctxmeter.natsserver import NatsServerProcess
from functions.encodings import SPECS, parse_ranks, read_bpe_file
from schemas import subjects
from schemas.models import Encoding

ENCODING: Final = Encoding.O200K_BASE
TEXT_BYTES: Final = 100_000
POOL_THREADS: Final = 2
IN_FLIGHT: Final = 16
WARM_UP: Final = 5
# Texts per throughput batch, and batches timed (each side's batches alternate).
THROUGHPUT_BATCH: Final = 48
THROUGHPUT_BATCHES: Final = 4
# The same batch of IN_FLIGHT counts, timed this many times once warm (against the first, cold one).
COLD_WARM_BATCHES: Final = 5
# After the cold batch the functions may build a second worker's copy of the encoding (once idle, up to 2 s
# on a busy machine); the latency rounds wait for it so they measure counting, not that.
AFTER_COLD_S: Final = 3.0
# Where ``bench.echo`` answers (a subject of the bench's own, outside ctxmeter's).
ECHO_SUBJECT: Final = "bench.echo.length"


def plain_encoding() -> tiktoken.Encoding:
    """tiktoken's own Encoding, built in the calling thread (so it runs at full speed there)."""
    spec = SPECS[ENCODING]
    encoding = tiktoken.Encoding(
        name=ENCODING.value,
        pat_str=spec.pat_str,
        mergeable_ranks=parse_ranks(read_bpe_file(ENCODING)),
        special_tokens=spec.special_tokens,
    )
    encoding.encode_ordinary("warm up")
    return encoding


@dataclass
class Counted:
    tree: Tree
    kind: str
    # Where it was measured: "pass 1, 1st of 4" (or "pooled" once passes are merged).
    place: str = ""
    raw_s: list[float] = field(default_factory=list)
    fn_s: list[float] = field(default_factory=list)
    # Round trips of the same request to ``bench.echo``: the transport alone.
    echo_s: list[float] = field(default_factory=list)
    raw_mbps: float = 0.0
    fn_mbps: float = 0.0
    # The first kind only: the first IN_FLIGHT counts after the functions started, all at once, and the
    # same batch once warm (median of COLD_WARM_BATCHES), MB/s.
    cold_mbps: float = float("nan")
    warm_mbps: float = float("nan")

    @property
    def cold_ratio(self) -> float:
        return self.cold_mbps / self.warm_mbps

    @property
    def latency_ratio(self) -> float:
        return statistics.median(self.fn_s) / statistics.median(self.raw_s)

    @property
    def own_ms(self) -> float:
        """The function's latency less tiktoken's and the transport's (medians): its own time, or, below
        zero, what counting a large text on two threads at once saves over tiktoken on one."""
        return (statistics.median(self.fn_s) - statistics.median(self.raw_s) - statistics.median(self.echo_s)) * 1e3

    @property
    def throughput_ratio(self) -> float:
        return self.fn_mbps / self.raw_mbps

    def summary(self) -> str:
        return (
            f"{self.tree.label:<6} {self.kind:<7} [{self.place}] latency:"
            f" tiktoken {statistics.median(self.raw_s) * 1e3:6.2f} ms,"
            f" function {statistics.median(self.fn_s) * 1e3:6.2f} ms, ratio {self.latency_ratio:4.2f}x"
            f" (NATS round trip alone {statistics.median(self.echo_s) * 1e3:4.2f} ms,"
            f" function - tiktoken - round trip {self.own_ms:5.2f} ms)"
            " | throughput:"
            f" tiktoken x{POOL_THREADS} threads {self.raw_mbps:5.1f} MB/s, function ({IN_FLIGHT} in flight)"
            f" {self.fn_mbps:5.1f} MB/s, ratio {self.throughput_ratio:4.2f}x"
            + (
                f" | first {IN_FLIGHT} at once after start {self.cold_mbps:5.1f} MB/s, warm {self.warm_mbps:5.1f} MB/s,"
                f" ratio {self.cold_ratio:4.2f}x"
                if self.cold_mbps == self.cold_mbps
                else ""
            )
        )


class Baseline:
    """tiktoken in this process: the main thread's encoding, and a pool of threads with their own."""

    def __init__(self) -> None:
        self.main = plain_encoding()
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(POOL_THREADS, initializer=self._init_thread)
        barrier = threading.Barrier(POOL_THREADS)
        for future in [self.pool.submit(barrier.wait) for _ in range(POOL_THREADS)]:
            future.result()

    def _init_thread(self) -> None:
        self.local.encoding = plain_encoding()

    def count_in_pool(self, text: str) -> int:
        return len(self.local.encoding.encode_ordinary(text))

    def close(self) -> None:
        self.pool.shutdown()


async def count_once(nc: NATS, payload: bytes, subject: str | None = None) -> int:
    reply = await nc.request(subject or subjects.tokens_count(), payload, timeout=60)
    return int(json.loads(reply.data)["count"])


async def timed_count(nc: NATS, payload: bytes, subject: str | None = None) -> float:
    started = time.perf_counter()
    await count_once(nc, payload, subject)
    return time.perf_counter() - started


async def in_flight(nc: NATS, payload: bytes, requests: int) -> None:
    """``requests`` counts, ``IN_FLIGHT`` at a time."""
    left = [requests]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await count_once(nc, payload)

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


def count_payload(kind: str) -> tuple[str, bytes]:
    text = TEXTS[kind](TEXT_BYTES)
    return text, json.dumps({"text": text, "encoding": ENCODING.value}, ensure_ascii=False).encode()


async def batch_mbps(nc: NATS, payload: bytes, text: str) -> float:
    """``IN_FLIGHT`` counts of ``payload`` sent at once: MB/s until the last answer."""
    started = time.perf_counter()
    await asyncio.gather(*(count_once(nc, payload) for _ in range(IN_FLIGHT)))
    return IN_FLIGHT * len(text.encode()) / 1e6 / (time.perf_counter() - started)


async def measure_kind(nc: NATS, baseline: Baseline, tree: Tree, kind: str, rounds: int) -> Counted:
    text, payload = count_payload(kind)
    expected = len(baseline.main.encode_ordinary(text))
    got = await count_once(nc, payload)
    if got != expected:
        raise RuntimeError(f"{kind}: the function counted {got}, tiktoken {expected}")
    result = Counted(tree, kind)
    for _ in range(WARM_UP):
        baseline.main.encode_ordinary(text)
        await count_once(nc, payload)
        await count_once(nc, payload, ECHO_SUBJECT)
    for index in range(rounds):
        # Which goes first alternates: whichever follows the other's count finds the CPU caches full of
        # the other's rank tables (38 MB), and that must fall on both alike.
        if index % 2:
            result.fn_s.append(await timed_count(nc, payload))
        started = time.perf_counter()
        baseline.main.encode_ordinary(text)
        result.raw_s.append(time.perf_counter() - started)
        if not index % 2:
            result.fn_s.append(await timed_count(nc, payload))
        result.echo_s.append(await timed_count(nc, payload, ECHO_SUBJECT))

    # Throughput: batches of each in turn, the first of each as warm-up (a second counting thread
    # builds its encodings when it first counts, as the baseline's threads did before any timing).
    megabytes = THROUGHPUT_BATCH * len(text.encode()) / 1e6
    raw_s = fn_s = 0.0
    for batch in range(THROUGHPUT_BATCHES + 1):
        started = time.perf_counter()
        list(baseline.pool.map(baseline.count_in_pool, [text] * THROUGHPUT_BATCH))
        raw = time.perf_counter() - started
        started = time.perf_counter()
        await in_flight(nc, payload, THROUGHPUT_BATCH)
        fn = time.perf_counter() - started
        if batch:
            raw_s, fn_s = raw_s + raw, fn_s + fn
    result.raw_mbps = THROUGHPUT_BATCHES * megabytes / raw_s
    result.fn_mbps = THROUGHPUT_BATCHES * megabytes / fn_s
    return result


def start_echo(nats_url: str) -> subprocess.Popen[bytes]:
    """``bench.echo`` (the same for every tree: it is the instrument), once it has subscribed."""
    echo = subprocess.Popen(
        [sys.executable, "-m", "bench.echo", nats_url, ECHO_SUBJECT], cwd=ROOT, stdout=subprocess.PIPE
    )
    assert echo.stdout is not None
    if echo.stdout.readline().strip() != b"ready":
        stop_process(echo)
        raise RuntimeError("bench.echo did not start")
    return echo


async def measure_tree(
    tree: Tree, baseline: Baseline, kinds: list[str], cold_kind: str, rounds: int, workdir: Path, pass_no: int
) -> list[Counted]:
    server = NatsServerProcess(workdir / f"nats-count-{tree.label}-{pass_no}")
    await asyncio.to_thread(server.start)
    log = workdir / f"functions-count-{tree.label}-{pass_no}.log"
    functions = tree.spawn(
        "functions", "--nats-url", server.url, log=log, env={"CTXMETER_KV_BUCKET": "CTXMETER_BENCH_COUNT"}
    )
    echo = await asyncio.to_thread(start_echo, server.url)
    nc: NATS | None = None
    try:
        await wait_functions(server.url)
        nc = await nats.connect(server.url)
        # Cold start: the first concurrent counts after the functions started (nothing counted before).
        text, payload = count_payload(cold_kind)
        cold_mbps = await batch_mbps(nc, payload, text)
        await asyncio.sleep(AFTER_COLD_S)
        results = []
        for place, kind in enumerate(kinds, 1):
            result = await measure_kind(nc, baseline, tree, kind, rounds)
            result.place = f"pass {pass_no}, {ordinal(place)} of {len(kinds)}"
            if kind == cold_kind:
                warm = [await batch_mbps(nc, payload, text) for _ in range(COLD_WARM_BATCHES)]
                result.cold_mbps, result.warm_mbps = cold_mbps, statistics.median(warm)
            print("    " + result.summary(), file=sys.stderr, flush=True)
            results.append(result)
        return results
    finally:
        if nc is not None:
            await nc.close()
        await asyncio.to_thread(stop_process, functions)
        await asyncio.to_thread(stop_process, echo)
        await asyncio.to_thread(server.stop)


def ordinal(number: int) -> str:
    return f"{number}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(number if number < 20 else number % 10, 'th') }"


def pooled(results: list[Counted]) -> list[Counted]:
    """One result per (tree, text): every pass's latency samples together, throughput the passes' mean, cold
    start the median pass's."""
    groups: dict[tuple[str, str], list[Counted]] = {}
    for result in results:
        groups.setdefault((result.tree.label, result.kind), []).append(result)
    merged = []
    for group in groups.values():
        one = Counted(group[0].tree, group[0].kind, "pooled")
        for result in group:
            one.raw_s += result.raw_s
            one.fn_s += result.fn_s
            one.echo_s += result.echo_s
        one.raw_mbps = statistics.fmean(result.raw_mbps for result in group)
        one.fn_mbps = statistics.fmean(result.fn_mbps for result in group)
        cold = sorted((result for result in group if result.cold_mbps == result.cold_mbps), key=lambda r: r.cold_ratio)
        if cold:
            middle = cold[(len(cold) - 1) // 2]
            one.cold_mbps, one.warm_mbps = middle.cold_mbps, middle.warm_mbps
        merged.append(one)
    return merged


def by_place(results: list[Counted]) -> list[str]:
    """Per tree and text: its latency ratio in each pass with its place there, to tell position from text."""
    lines: dict[tuple[str, str], list[str]] = {}
    for result in results:
        lines.setdefault((result.tree.label, result.kind), []).append(f"{result.latency_ratio:4.2f}x ({result.place})")
    return [f"{label:<6} {kind:<7} ratio by place: {'; '.join(found)}" for (label, kind), found in lines.items()]


async def measure_counting(trees: list[Tree], kinds: list[str], rounds: int, passes: int = 2) -> list[Counted]:
    """Every pass's results (``pooled`` merges them); odd passes reverse the order of texts and trees."""
    baseline = Baseline()
    results: list[Counted] = []
    try:
        with tempfile.TemporaryDirectory(prefix="ctxmeter-count-") as tmp:
            for pass_no in range(1, passes + 1):
                forward = pass_no % 2 == 1
                for tree in trees if forward else trees[::-1]:
                    print(f"... counting on {tree.label} ({tree.revision}), pass {pass_no}", file=sys.stderr)
                    results += await measure_tree(
                        tree, baseline, kinds if forward else kinds[::-1], kinds[0], rounds, Path(tmp), pass_no
                    )
    finally:
        baseline.close()
    for line in by_place(results):
        print(line, file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="also measure this git revision (e.g. HEAD), in the same run")
    parser.add_argument("--kinds", default=",".join(TEXTS), help=f"{', '.join(TEXTS)} (comma-separated)")
    parser.add_argument("--rounds", type=int, default=40, help="latency rounds per text and pass")
    parser.add_argument("--passes", type=int, default=2, help="fresh starts; every other one reverses the order")
    opts = parser.parse_args()
    import uvloop

    with contextlib.ExitStack() as stack:
        trees = [stack.enter_context(exported(opts.before))] if opts.before else []
        trees.append(working_tree())
        results = uvloop.run(measure_counting(trees, opts.kinds.split(","), opts.rounds, opts.passes))
        for line in by_place(results):
            print(line)
        for result in pooled(results):
            print(result.summary())


if __name__ == "__main__":
    main()
