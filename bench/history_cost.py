"""What keeping each session's history costs the update path: ``context.add`` throughput with history
recorded and without (``CTXMETER_RECORD_HISTORY``), measured in one run, alternating, each from a fresh
``ctxmeter functions`` process on one nats-server with JetStream.

Run: ``.venv/bin/python -m bench.history_cost`` (about a minute; ``--total`` changes the load).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import uuid
from pathlib import Path

import nats
from nats.aio.client import Client as NATS

from bench.bench_functions import run_concurrently, wait_for_service
from bench.common import nats_server
from schemas import subjects
from schemas.models import ContextUsage
from schemas.subjects import ContextOp

SESSIONS = 100
CONCURRENCY = 64
ROUNDS = 3
PAYLOAD = b'{"tokens": 3}'
PROJECT = Path(__file__).resolve().parent.parent


async def adds_per_second(nc: NATS, total: int) -> float:
    run = uuid.uuid4().hex[:8]

    async def add(i: int) -> None:
        reply = await nc.request(subjects.context(ContextOp.ADD, f"h{run}-{i % SESSIONS}"), PAYLOAD, timeout=30)
        if reply.headers and reply.headers.get("Nats-Service-Error-Code"):
            raise RuntimeError(reply.data.decode())

    seconds = await run_concurrently(total, CONCURRENCY, add)
    # Nothing lost: every session holds exactly its adds.
    for session in range(SESSIONS):
        got = await nc.request(subjects.context(ContextOp.GET, f"h{run}-{session}"), b"{}", timeout=10)
        assert ContextUsage.model_validate_json(got.data).used == 3 * len(range(session, total, SESSIONS))
    return total / seconds


async def one(url: str, history: bool, total: int) -> float:
    bucket = f"HIST{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CTXMETER_KV_BUCKET": bucket, "CTXMETER_RECORD_HISTORY": str(history).lower()}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ctxmeter_cli", "--log-level", "WARNING", "functions", "--nats-url", url,
        env=env, cwd=PROJECT,
    )  # fmt: skip
    nc = await nats.connect(url)
    try:
        await wait_for_service(nc)
        await adds_per_second(nc, total // 5)  # warm-up
        return await adds_per_second(nc, total)
    finally:
        await nc.drain()
        process.terminate()
        await process.wait()


async def main(total: int) -> None:
    rates: dict[bool, list[float]] = {True: [], False: []}
    with nats_server() as server:
        for _ in range(ROUNDS):
            for history in (False, True):
                rates[history].append(await one(server.url, history, total))
    without, with_history = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"context.add, {total} ops per round, {SESSIONS} sessions, {CONCURRENCY} in flight, median of {ROUNDS}")
    print(f"  without history  {without:10.0f} ops/s   {[round(rate) for rate in rates[False]]}")
    print(f"  with history     {with_history:10.0f} ops/s   {[round(rate) for rate in rates[True]]}")
    print(f"  ratio            {with_history / without:10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total", type=int, default=20_000, help="adds per round")
    asyncio.run(main(parser.parse_args().total))
