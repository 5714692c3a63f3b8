"""``python -m bench``: every figure of docs/performance.md, before and now, in one run, as one table.

"before" is a git revision (``--before``, default ``HEAD``) exported beside the working tree ("now");
every row is measured for both in the same run, one after the other (``bench.trees``). Rows:

- end to end through the real functions and edge (``bench.meter_e2e``): burst, steady, scale p99,
  and memory per WebSocket from the scale run;
- resident memory (``bench.memory``): ``ctxmeter up`` after counts with each encoding and a few
  updates, ``ctxmeter edge`` alone;
- counting (``bench.count``): latency and throughput against tiktoken in this process;
- the change path (``bench.changes``): ``context.add`` against raw KV compare-and-set puts, history on and off;
- OpenTelemetry ingest (``bench.otlp_ingest``): log records per second through the edge into meters against
  the same reports as plain usage requests, and an export's time to a browser socket (the working tree only:
  "before" may have no ingest).
- the sessions overview (``bench.overview``): with 10,000 live sessions, the edge's memory per session in
  its index, the first paint of ``/sessions`` in Chromium, and how soon a change reorders it.

5-10 minutes on 2 cores. ``--only e2e,memory,count,changes,otlp,overview`` runs a part; ``--measure`` shortens the
end-to-end runs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bench.bench_edge import raise_fd_limit
from bench.changes import ChangeRates, measure_changes
from bench.count import Counted, measure_counting, pooled
from bench.memory import Rss, measure_memory
from bench.meter_e2e import LOADS, Run, measure_loads
from bench.otlp_ingest import Ingested, measure_orders
from bench.overview import Overview, measure_overview
from bench.texts import TEXTS
from bench.trees import Tree, exported, working_tree

PARTS: Final = ("e2e", "memory", "count", "changes", "otlp", "overview")


@dataclass(frozen=True)
class Row:
    name: str
    goal: str
    before: float
    now: float
    unit: str
    met: bool | None
    how: str


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:.2f}{unit}" if unit == "x" else f"{value:.1f} {unit}"


def e2e_rows(runs: list[Run]) -> list[Row]:
    by = {(run.load.name, run.tree.label): run for run in runs}
    rows = []
    goals = {"burst": 25.0, "steady": 5.0, "scale": 25.0}
    for name, goal in goals.items():
        before, now = by.get((name, "before")), by.get((name, "now"))
        if now is None:
            continue
        b = before.p(0.99) if before and not before.failure else math.nan
        n = now.p(0.99) if not now.failure else math.nan
        rows.append(
            Row(
                f"{name}: {LOADS[name].label}, p99",
                f"<= {goal:g} ms",
                b,
                n,
                "ms",
                n <= goal and now.delivered >= 0.999,
                f"python -m bench.meter_e2e --load {name}",
            )
        )
    before, now = by.get(("scale", "before")), by.get(("scale", "now"))
    if now is not None:
        b = before.connect_s if before and not before.failure else math.nan
        sockets = f"{now.load.sockets:,}"
        rows.append(
            Row(
                f"scale: {sockets} connects, all clients at once, seconds",
                "<= 10 s",
                b,
                now.connect_s,
                "s",
                now.connect_s <= 10 and now.failed == 0,
                "python -m bench.meter_e2e --load scale",
            )
        )
        b = before.kb_per_socket if before and not before.failure else math.nan
        rows.append(
            Row(
                f"memory per WebSocket (RSS growth / sockets, {sockets})",
                "<= 7 KB",
                b,
                now.kb_per_socket,
                "KB",
                now.kb_per_socket <= 7,
                "python -m bench.meter_e2e --load scale",
            )
        )
    return rows


def memory_rows(results: list[Rss]) -> list[Row]:
    by = {(result.what, result.tree.label): result for result in results}
    rows = []
    for what, label, goal in (
        ("up", "`ctxmeter up` resident after counts with each encoding and updates", 160.0),
        ("edge", "`ctxmeter edge` alone, resident", 60.0),
    ):
        before, now = by.get((what, "before")), by.get((what, "now"))
        if now is None:
            continue
        b = before.mb if before else math.nan
        rows.append(
            Row(label, f"<= {goal:g} MB", b, now.mb, "MB", now.mb <= goal, f"python -m bench.memory --what {what}")
        )
    return rows


def count_rows(results: list[Counted]) -> list[Row]:
    rows = []
    kinds = sorted({result.kind for result in results}, key=list(TEXTS).index)
    by = {(result.kind, result.tree.label): result for result in results}

    def pick(kind: str, label: str, figure: Callable[[Counted], float]) -> float:
        found = by.get((kind, label))
        return figure(found) if found else math.nan

    for kind in kinds:
        now = pick(kind, "now", lambda r: r.latency_ratio)
        rows.append(
            Row(
                f"count 100 KB {kind}: function / tiktoken, median latency",
                "<= 1.25x",
                pick(kind, "before", lambda r: r.latency_ratio),
                now,
                "x",
                now <= 1.25,
                f"python -m bench.count --kinds {kind}",
            )
        )
    for kind in kinds:
        now = pick(kind, "now", lambda r: r.throughput_ratio)
        rows.append(
            Row(
                f"count 100 KB {kind}: function (16 in flight) / tiktoken x2 threads, MB/s",
                ">= 0.9x",
                pick(kind, "before", lambda r: r.throughput_ratio),
                now,
                "x",
                now >= 0.9,
                f"python -m bench.count --kinds {kind}",
            )
        )
    cold = [result for result in results if result.cold_mbps == result.cold_mbps]
    if cold:
        now = pick(cold[0].kind, "now", lambda r: r.cold_ratio)
        rows.append(
            Row(
                f"count cold start: first 16 concurrent 100 KB {cold[0].kind} counts after start / warm, MB/s",
                ">= 0.8x",
                pick(cold[0].kind, "before", lambda r: r.cold_ratio),
                now,
                "x",
                now >= 0.8,
                "python -m bench.count",
            )
        )
    return rows


def change_rows(results: list[ChangeRates]) -> list[Row]:
    by = {result.tree.label: result for result in results}
    rows = []
    for history in (True, False):

        def ratio(label: str, history: bool = history) -> float:
            return by[label].ratio(history) if label in by else math.nan

        rows.append(
            Row(
                f"context.add / raw KV compare-and-set puts, 64 in flight, history {'on' if history else 'off'}",
                ">= 0.4x" if history else "-",
                ratio("before"),
                ratio("now"),
                "x",
                ratio("now") >= 0.4 if history else None,
                "python -m bench.changes",
            )
        )
    return rows


def otlp_rows(results: list[Ingested]) -> list[Row]:
    how = "python -m bench.otlp_ingest"
    where = {
        "spread": "every record of an export another session",
        "grouped": "8 records of a session together",
    }
    rows = []
    for result in results:
        ok = not result.failure
        rows.append(
            Row(
                f"OTLP log records/s into meters, exports of 512 over 1,000 sessions, {where[result.order]}",
                ">= 20,000",
                math.nan,
                result.otlp,
                "/s",
                ok and result.otlp >= 20_000,
                how,
            )
        )
        rows.append(
            Row(
                f"  the same records: OTLP / plain usage requests, same run ({result.order})",
                ">= 0.8x",
                math.nan,
                result.ratio,
                "x",
                ok and result.ratio >= 0.8,
                how,
            )
        )
    if results:
        p99 = max(result.p(0.99) for result in results) * 1e3
        rows.append(
            Row(
                "OTLP export POST to a browser socket's frame, p99", "<= 1000 ms", math.nan, p99, "ms", p99 <= 1000, how
            )
        )
    return rows


def overview_rows(results: list[Overview]) -> list[Row]:
    by = {result.tree.label: result for result in results}
    now, before = by.get("now"), by.get("before")
    if now is None:
        return []

    def figure(result: Overview | None, value: float) -> float:
        return value if result is not None and not result.failure else math.nan

    how = "python -m bench.overview"
    kb = figure(now, now.kb_per_session)
    paint = figure(now, now.warm_paint_s * 1000)
    cold = figure(now, now.first_paint_s * 1000)
    reorder = figure(now, now.reorder_max_s * 1000)
    return [
        Row(
            "overview, 10,000 sessions: edge memory growth per session (index)",
            "<= 3 KB",
            figure(before, before.kb_per_session) if before else math.nan,
            kb,
            "KB",
            kb <= 3,
            how,
        ),
        Row(
            "overview, 10,000 sessions: first paint of /sessions (index built)",
            "<= 1000 ms",
            figure(before, before.warm_paint_s * 1000) if before else math.nan,
            paint,
            "ms",
            paint <= 1000,
            how,
        ),
        Row(
            "overview, 10,000 sessions: first paint, the edge's first overview request",
            "-",
            figure(before, before.first_paint_s * 1000) if before else math.nan,
            cold,
            "ms",
            None,
            how,
        ),
        Row(
            "overview, 10,000 sessions: a change reorders the page (max of 5)",
            "<= 1000 ms",
            figure(before, before.reorder_max_s * 1000) if before else math.nan,
            reorder,
            "ms",
            reorder <= 1000,
            how,
        ),
    ]


def print_table(rows: list[Row], trees: list[Tree], seconds: float) -> None:
    revisions = ", ".join(f"{tree.label} = {tree.revision}" for tree in trees)
    print(f"\nctxmeter performance ({os.cpu_count()} CPUs; {revisions}; {seconds:.0f} s in all)\n")
    width = max(len(row.name) for row in rows)
    header = f"{'figure':<{width}}  {'goal':>10}  {'before':>9}  {'now':>9}  met?"
    print(header)
    print("-" * len(header))
    for row in rows:
        met = "n/a" if row.met is None else ("yes" if row.met else "NO")
        print(
            f"{row.name:<{width}}  {row.goal:>10}  {_fmt(row.before, row.unit):>9}  {_fmt(row.now, row.unit):>9}  {met}"
        )
    print("\nEach row alone: " + "; ".join(sorted({row.how for row in rows})) + " (add --before REV).")


async def run(opts: argparse.Namespace, trees: list[Tree]) -> list[Row]:
    rows: list[Row] = []
    if "e2e" in opts.only:
        loads = [LOADS[name] for name in ("burst", "steady", "scale")]
        rows += e2e_rows(await measure_loads(trees, loads, warmup=opts.warmup, measure=opts.measure))
    if "memory" in opts.only:
        rows += memory_rows(await measure_memory(trees))
    if "count" in opts.only:
        rows += count_rows(pooled(await measure_counting(trees, list(TEXTS), opts.rounds, opts.passes)))
    if "changes" in opts.only:
        rows += change_rows(await measure_changes(trees))
    if "otlp" in opts.only:
        rows += otlp_rows(await measure_orders(trees[-1], opts.otlp_records, 3, ["spread", "grouped"]))
    if "overview" in opts.only:
        rows += overview_rows(await measure_overview(trees))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--before", default="HEAD", help="the git revision measured as 'before' (HEAD)")
    parser.add_argument(
        "--only", default=",".join(PARTS), help="e2e, memory, count, changes, otlp, overview (comma-separated)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="end-to-end: seconds of load before measuring")
    parser.add_argument("--measure", type=float, default=15.0, help="end-to-end: seconds measured per run")
    parser.add_argument("--rounds", type=int, default=40, help="counting: latency rounds per text and pass")
    parser.add_argument(
        "--passes", type=int, default=2, help="counting: fresh starts, every other one in reverse order"
    )
    parser.add_argument("--otlp-records", type=int, default=51_200, help="OTLP ingest: records per round")
    opts = parser.parse_args()
    opts.only = set(opts.only.split(","))
    raise_fd_limit()
    started = time.perf_counter()
    import uvloop

    with contextlib.ExitStack() as stack:
        trees = [stack.enter_context(exported(opts.before)), working_tree()]
        try:
            rows = uvloop.run(run(opts, trees))
        except KeyboardInterrupt:
            print("bench: interrupted", file=sys.stderr)
            sys.exit(130)
        print_table(rows, trees, time.perf_counter() - started)


if __name__ == "__main__":
    main()
