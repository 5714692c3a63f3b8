"""The change path: ``ctxmeter.context.add`` through ``ctxmeter functions`` against raw JetStream KV
compare-and-set puts (``kv.update`` expecting the key's last revision), the same number of sessions and
requests in flight, in one run: rounds interleaved (raw, add with history, add without), each ``add``
round from a fresh functions process of the tree under test, so before and now share the machine's state.

The raw puts are the floor of any compare-and-set store on this NATS: one JetStream write and its
acknowledgement per change, nothing else. A ``context.add`` does that write plus the request and its
reply, the change itself (policy, idempotency window, observed time), the event and, with history on, a
history point, and never loses an update: every round checks each session's total.

Run: ``.venv/bin/python -m bench.changes`` (``--before REV`` adds that revision's functions, same run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import nats
from nats.aio.client import Client as NATS

from bench.bench_edge import stop_process
from bench.bench_functions import run_concurrently, wait_for_service
from bench.common import nats_server
from bench.trees import Tree, exported, working_tree
from schemas import subjects
from schemas.models import ContextUsage
from schemas.subjects import ContextOp

SESSIONS: Final = 100
CONCURRENCY: Final = 64
ROUNDS: Final = 3
TOTAL: Final = 10_000
ADD: Final = b'{"tokens": 3}'
# What a raw put writes: a state of the size the functions store (a few fields, no keys).
STATE: Final = b'{"used":1,"total":200000,"model":null,"updated_at":"2026-01-01T00:00:00Z","op":"add"}'


@dataclass
class ChangeRates:
    tree: Tree
    raw: list[float] = field(default_factory=list)
    with_history: list[float] = field(default_factory=list)
    without_history: list[float] = field(default_factory=list)

    def ratio(self, history: bool) -> float:
        rates = self.with_history if history else self.without_history
        return statistics.median(rates) / statistics.median(self.raw)

    def summary(self) -> str:
        raw = statistics.median(self.raw)
        return (
            f"raw CAS {raw:,.0f}/s; add with history {statistics.median(self.with_history):,.0f}/s "
            f"({self.ratio(True):.2f}x), without {statistics.median(self.without_history):,.0f}/s "
            f"({self.ratio(False):.2f}x)"
        )


async def raw_cas_puts(nc: NATS, total: int) -> float:
    """Compare-and-set puts per second: each session's writes expect its previous revision."""
    js = nc.jetstream()
    bucket = f"RAW{uuid.uuid4().hex[:8]}"
    kv = await js.create_key_value(bucket=bucket, history=1)
    try:
        revisions = [await kv.create(f"context.s{session}", STATE) for session in range(SESSIONS)]

        async def put(i: int) -> None:
            session = i % SESSIONS
            revisions[session] = await kv.update(f"context.s{session}", STATE, last=revisions[session])

        # With fewer in flight than sessions, no two puts of one session overlap: none conflicts.
        return total / await run_concurrently(total, CONCURRENCY, put)
    finally:
        await js.delete_key_value(bucket)


async def adds(nc: NATS, total: int) -> float:
    run = uuid.uuid4().hex[:8]

    async def add(i: int) -> None:
        reply = await nc.request(subjects.context(ContextOp.ADD, f"c{run}-{i % SESSIONS}"), ADD, timeout=30)
        if reply.headers and reply.headers.get("Nats-Service-Error-Code"):
            raise RuntimeError(reply.data.decode())

    seconds = await run_concurrently(total, CONCURRENCY, add)
    for session in range(SESSIONS):
        got = await nc.request(subjects.context(ContextOp.GET, f"c{run}-{session}"), b"{}", timeout=10)
        used = ContextUsage.model_validate_json(got.data).used
        if used != 3 * len(range(session, total, SESSIONS)):
            raise RuntimeError(f"session {session} lost updates: used {used}")
    return total / seconds


async def adds_from(tree: Tree, url: str, history: bool, total: int, logs: Path) -> float:
    bucket = f"CHG{uuid.uuid4().hex[:8]}"
    env = {"CTXMETER_KV_BUCKET": bucket, "CTXMETER_RECORD_HISTORY": str(history).lower()}
    process = tree.spawn("functions", "--nats-url", url, log=logs / f"functions-{tree.label}.log", env=env)
    nc = await nats.connect(url)
    try:
        await wait_for_service(nc)
        await adds(nc, total // 5)  # warm-up: caches, the bucket's first writes
        return await adds(nc, total)
    finally:
        stop_process(process)
        # The bucket and the history stream reserve their maximum sizes on the server: free them for the next.
        js = nc.jetstream()
        for stream in await js.streams_info():
            if bucket in stream.config.name:
                await js.delete_stream(stream.config.name)
        await nc.drain()


async def measure_changes(trees: list[Tree], total: int = TOTAL, rounds: int = ROUNDS) -> list[ChangeRates]:
    results = [ChangeRates(tree) for tree in trees]
    with nats_server() as server, tempfile.TemporaryDirectory(prefix="ctxmeter-changes-") as tmp:
        nc = await nats.connect(server.url)
        try:
            await raw_cas_puts(nc, total // 5)  # warm-up
            for round_ in range(rounds):
                # Alternate which tree goes first, and history on/off, so neither always follows the other.
                order = results if round_ % 2 == 0 else results[::-1]
                for result in order:
                    result.raw.append(await raw_cas_puts(nc, total))
                    for history in (True, False) if round_ % 2 == 0 else (False, True):
                        rates = result.with_history if history else result.without_history
                        rates.append(await adds_from(result.tree, server.url, history, total, Path(tmp)))
                    print(f"... round {round_ + 1}, {result.tree.label}: {result.summary()}", file=sys.stderr)
        finally:
            await nc.drain()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="also measure this git revision (e.g. HEAD), in the same run")
    parser.add_argument("--total", type=int, default=TOTAL, help=f"changes per round ({TOTAL:,})")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds ({ROUNDS})")
    opts = parser.parse_args()
    with contextlib.ExitStack() as stack:
        trees = [stack.enter_context(exported(opts.before))] if opts.before else []
        trees.append(working_tree())
        for result in asyncio.run(measure_changes(trees, opts.total, opts.rounds)):
            print(f"{result.tree.label} ({result.tree.revision}): {result.summary()}")


if __name__ == "__main__":
    main()
