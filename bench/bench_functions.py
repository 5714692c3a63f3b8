"""Benchmark the functions against their baselines, measured in the same run.

1. Counting: ``ctxmeter.tokens.count`` through NATS and a separate functions process, against
   tiktoken called in this process on the same texts (1 KB, 100 KB, 1 MB): latency of one request at
   a time, and MB/s with concurrent requests against tiktoken on a 2-thread pool.
2. State: ``ctxmeter.context.add`` throughput against raw JetStream KV puts, same concurrency, and a
   check that no update was lost.

Run: ``.venv/bin/python -m bench.bench_functions`` (add ``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS

from bench import bare_handler
from bench.common import Timer, functions_process, nats_server, summary_ms
from ctxmeter.bucket import open_bucket
from ctxmeter.settings import Settings
from functions.counting import count_text_now
from functions.encodings import preload
from schemas import subjects
from schemas.models import ContextUsage, Encoding, TokenCount
from schemas.subjects import ContextOp

ENCODING = Encoding.O200K_BASE
SIZES = {"1 KB": 1_000, "100 KB": 100_000, "1 MB": 1_000_000}
COUNT_CONCURRENCY = 4
WARM_UP_ROUNDS = 3
POOL_THREADS = 2  # the target machine has 2 cores
PROSE = "the context window fills as the agent works and empties when it compresses its history while people watch"


def make_text(size: int, seed: int = 7) -> str:
    """Mixed prose, code and non-Latin text, like what agents put in context."""
    rng = random.Random(seed)
    words = PROSE.split()
    pieces = [
        lambda: " ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) + ". ",
        lambda: f"def f_{rng.randint(0, 999)}(x):\n    return x * {rng.randint(0, 99)}\n",
        lambda: "Контекстное окно заполняется. 上下文窗口正在填满。 ",
        lambda: json.dumps({"id": rng.randint(0, 10**6), "ok": rng.random() > 0.5}) + "\n",
    ]
    out: list[str] = []
    length = 0
    while length < size:
        piece = rng.choice(pieces)()
        out.append(piece)
        length += len(piece.encode())
    return "".join(out).encode()[:size].decode(errors="ignore")


@dataclass
class CountResult:
    label: str
    raw_latency: list[float]
    fn_latency: list[float]
    raw_mbps: float
    fn_mbps: float


async def wait_for_service(nc: NATS) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            await nc.request(f"$SRV.PING.{subjects.SERVICE_NAME}", b"", timeout=0.5)
            return
        except Exception:
            await asyncio.sleep(0.1)
    raise RuntimeError("functions did not come up")


def warmed_pool() -> ThreadPoolExecutor:
    """The in-process baseline's threads, each with its encodings built (as the functions' are)."""
    pool = ThreadPoolExecutor(POOL_THREADS, initializer=preload)
    barrier = threading.Barrier(POOL_THREADS)
    for future in [pool.submit(barrier.wait) for _ in range(POOL_THREADS)]:
        future.result()
    return pool


async def bench_count(nc: NATS, pool: ThreadPoolExecutor, label: str, text: str, rounds: int) -> CountResult:
    # UTF-8 JSON, as most clients (JavaScript, Go, Rust) send it; Python's default \u-escapes non-ASCII.
    payload = json.dumps({"text": text, "encoding": ENCODING.value}, ensure_ascii=False).encode()
    expected = count_text_now(text, ENCODING)
    reply = TokenCount.model_validate_json((await nc.request(subjects.tokens_count(), payload, timeout=30)).data)
    assert reply.count == expected, (reply.count, expected)

    # Warm both sides the same way (tiktoken's lazily built regex caches, first thread use).
    for _ in range(WARM_UP_ROUNDS):
        count_text_now(text, ENCODING)
        await nc.request(subjects.tokens_count(), payload, timeout=30)
    raw_latency = []
    for _ in range(rounds):
        with Timer() as t:
            count_text_now(text, ENCODING)
        raw_latency.append(t.seconds)
    fn_latency = []
    for _ in range(rounds):
        with Timer() as t:
            await nc.request(subjects.tokens_count(), payload, timeout=30)
        fn_latency.append(t.seconds)

    volume = rounds * 4
    megabytes = volume * len(text.encode()) / 1e6
    with Timer() as raw_t:
        list(pool.map(lambda _: count_text_now(text, ENCODING), range(volume)))

    queue: asyncio.Queue[None] = asyncio.Queue()
    for _ in range(volume):
        queue.put_nowait(None)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            await nc.request(subjects.tokens_count(), payload, timeout=60)

    with Timer() as fn_t:
        await asyncio.gather(*(worker() for _ in range(COUNT_CONCURRENCY)))
    return CountResult(label, raw_latency, fn_latency, megabytes / raw_t.seconds, megabytes / fn_t.seconds)


async def run_concurrently(total: int, concurrency: int, op: object) -> float:
    """Run ``op(i)`` for i in range(total) with ``concurrency`` in flight; seconds taken."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await op(i)  # type: ignore[operator]

    with Timer() as t:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return t.seconds


async def bench_state(nc: NATS, settings: Settings, total: int, sessions: int, concurrency: int) -> None:
    js = nc.jetstream()
    raw_settings = settings.model_copy(update={"kv_bucket": f"RAW{uuid.uuid4().hex[:8]}"})
    raw_kv = await open_bucket(js, raw_settings)
    value = b'{"used":1,"total":200000,"model":null,"updated_at":"2026-01-01T00:00:00Z"}'

    async def raw_put(i: int) -> None:
        await raw_kv.put(f"context.raw{i % sessions}", value)

    raw_s = await run_concurrently(total, concurrency, raw_put)

    bare = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bare_handler",
        settings.nats_url,
        raw_settings.kv_bucket,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert bare.stdout is not None and (await bare.stdout.readline()).strip() == b"ready"

        async def bare_update(i: int) -> None:
            await nc.request(f"{bare_handler.SUBJECT_PREFIX}.s{i % sessions}", value, timeout=30)

        bare_s = await run_concurrently(total, concurrency, bare_update)
    finally:
        bare.terminate()
        await bare.wait()
    await js.delete_key_value(raw_settings.kv_bucket)

    run = uuid.uuid4().hex[:8]
    add_payload = b'{"tokens": 3}'

    async def add(i: int) -> None:
        reply = await nc.request(subjects.context(ContextOp.ADD, f"b{run}-{i % sessions}"), add_payload, timeout=30)
        if reply.headers and reply.headers.get("Nats-Service-Error-Code"):
            raise RuntimeError(reply.data.decode())

    add_s = await run_concurrently(total, concurrency, add)

    lost = 0
    for s in range(sessions):
        got = await nc.request(subjects.context(ContextOp.GET, f"b{run}-{s}"), b"{}", timeout=10)
        used = ContextUsage.model_validate_json(got.data).used
        expected = 3 * len(range(s, total, sessions))
        lost += (expected - used) // 3
    raw_rate, add_rate = total / raw_s, total / add_s
    print(f"\n== context.add vs raw KV put ({total} ops, {sessions} sessions, {concurrency} in flight)")
    print(f"raw kv.put         {raw_rate:10.0f} ops/s")
    bare_rate = total / bare_s
    print(f"bare handler       {bare_rate:10.0f} ops/s   ratio {bare_rate / raw_rate:5.2f} (kv.put + reply only)")
    print(f"context.add        {add_rate:10.0f} ops/s   ratio {add_rate / raw_rate:5.2f} (target >= 0.50)")
    print(f"lost updates       {lost:10d}         (target 0)")


async def main(quick: bool) -> None:
    preload()
    texts = {label: make_text(size) for label, size in SIZES.items()}
    rounds = {"1 KB": 400, "100 KB": 60, "1 MB": 8} if not quick else {"1 KB": 100, "100 KB": 15, "1 MB": 3}
    bucket = f"BENCH{uuid.uuid4().hex[:8]}"
    with nats_server() as server, functions_process(server.url, bucket):
        nc = await nats.connect(server.url)
        await wait_for_service(nc)
        print(f"machine: {os.cpu_count()} cores; encoding {ENCODING.value}; count concurrency {COUNT_CONCURRENCY}")
        print("\n== tokens.count through NATS + functions process vs in-process tiktoken")
        pool = warmed_pool()
        for label, text in texts.items():
            result = await bench_count(nc, pool, label, text, rounds[label])
            raw_p50 = sorted(result.raw_latency)[len(result.raw_latency) // 2]
            fn_p50 = sorted(result.fn_latency)[len(result.fn_latency) // 2]
            print(f"{label:>7} raw       {summary_ms(result.raw_latency)}")
            print(f"{label:>7} function  {summary_ms(result.fn_latency)}   p50 ratio {fn_p50 / raw_p50:5.2f}x")
            print(
                f"{label:>7} MB/s      raw {result.raw_mbps:7.2f} ({POOL_THREADS} threads)   function "
                f"{result.fn_mbps:7.2f} ({COUNT_CONCURRENCY} in flight)   {result.fn_mbps / result.raw_mbps:5.0%}"
            )
        pool.shutdown()
        settings = Settings(nats_url=server.url, kv_bucket=bucket)
        total = 20_000 if not quick else 4_000
        await bench_state(nc, settings, total=total, sessions=100, concurrency=64)
        await nc.drain()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    arguments = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(arguments.quick))
    except ImportError:
        asyncio.run(main(arguments.quick))
