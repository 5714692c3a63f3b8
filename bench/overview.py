"""The sessions overview with 10,000 live sessions: the edge's memory per session in its index, the first
paint of ``/sessions`` in Chromium, and how soon a change reorders the page.

- A nats-server with the bucket holding ``SESSIONS`` sessions' states (written as the functions write
  them, one KV put per session; their ``used`` spread over the window, so each has its own place).
- ``ctxmeter edge`` from the tree under test, idle: its VmRSS.
- Chromium opens ``/sessions`` on that fresh edge (the index is not built yet: the page's socket starts
  the KV watch, which reads every key), then again in a new page (the index is built, as on an edge
  that has served the overview before or started it with ``CTXMETER_SESSIONS_INDEX_AT_START``): first
  paint is from the navigation until the page shows its rows.
- Then the edge's VmRSS again: (after - before) / sessions is what the index costs per session (it
  includes everything else the page made the edge hold: one socket and a few requests).
- Reorder: the session with the most room left is made the nearest to compaction (a KV put, as the
  functions do), ``CHANGES`` times over different sessions; each is timed from the put until the page
  shows that session first.

Run: ``python -m bench.overview`` (``--before HEAD`` also measures that revision, in the same run;
a tree without the overview reports n/a).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import nats
from playwright.async_api import Browser, Page, async_playwright

from bench.bench_edge import proc_status_kb, stop_process, wait_http
from bench.trees import Tree, exported, working_tree
from ctxmeter.bucket import open_bucket
from ctxmeter.natsserver import NatsServerProcess, free_port
from ctxmeter.settings import Settings
from schemas import subjects
from schemas.state import ContextState, utc_now
from tests.browser.support import CHROMIUM_ARGS, DESKTOP, chromium_executable

SESSIONS: Final = 10_000
CHANGES: Final = 5
WINDOW: Final = 200_000
BUCKET: Final = "CTXMETER_BENCH_OVERVIEW"
SETTLE_S: Final = 1.0
# A safety net for a broken page, not a goal.
PAGE_TIMEOUT_MS: Final = 60_000
PUT_CONCURRENCY: Final = 256


@dataclass
class Overview:
    tree: Tree
    sessions: int = SESSIONS
    idle_kb: int = 0
    indexed_kb: int = 0
    first_paint_s: float = float("nan")
    warm_paint_s: float = float("nan")
    reorder_s: list[float] = field(default_factory=list)
    failure: str = ""

    @property
    def kb_per_session(self) -> float:
        if self.failure or not self.indexed_kb:
            return float("nan")
        return (self.indexed_kb - self.idle_kb) / self.sessions

    @property
    def reorder_max_s(self) -> float:
        return max(self.reorder_s) if self.reorder_s and not self.failure else float("nan")

    def summary(self) -> str:
        if self.failure:
            return f"{self.tree.label:<6} FAILED: {self.failure}"
        reorder = ", ".join(f"{s * 1000:.0f}" for s in self.reorder_s)
        median = statistics.median(self.reorder_s) * 1000 if self.reorder_s else float("nan")
        return (
            f"{self.tree.label:<6} {self.sessions:,} sessions: edge RSS {self.idle_kb / 1024:.1f} -> "
            f"{self.indexed_kb / 1024:.1f} MB ({self.kb_per_session * 1024:.0f} B per session); first paint "
            f"{self.warm_paint_s * 1000:.0f} ms (index cold: {self.first_paint_s * 1000:.0f} ms); "
            f"reorder {reorder} ms (median {median:.0f} ms)"
        )


def state(used: int) -> bytes:
    return ContextState(used=used, total=WINDOW, model="gpt-5", updated_at=utc_now()).model_dump_json().encode()


async def fill_bucket(nats_url: str, sessions: int) -> list[str]:
    """``sessions`` states; session n has n * (WINDOW / 2 / sessions) used, so the last is the nearest."""
    nc = await nats.connect(nats_url)
    try:
        kv = await open_bucket(nc.jetstream(), Settings(kv_bucket=BUCKET))
        ids = [f"bench-{n:05}" for n in range(sessions)]
        limit = asyncio.Semaphore(PUT_CONCURRENCY)

        async def put(n: int) -> None:
            async with limit:
                await kv.put(subjects.context_key(ids[n]), state(n * (WINDOW // 2) // sessions))

        await asyncio.gather(*(put(n) for n in range(sessions)))
        return ids
    finally:
        await nc.close()


async def measure_tree(tree: Tree, workdir: Path, sessions: int) -> Overview:
    result = Overview(tree, sessions)
    server = NatsServerProcess(workdir / f"nats-{tree.label}")
    await asyncio.to_thread(server.start)
    port = free_port()
    log = workdir / f"edge-{tree.label}.log"
    process = None
    try:
        ids = await fill_bucket(server.url, sessions)
        args = ["edge", "--nats-url", server.url, "--host", "127.0.0.1", "--port", str(port)]
        process = tree.spawn(*args, log=log, env={"CTXMETER_KV_BUCKET": BUCKET})
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/healthz", process, log)
        await asyncio.sleep(SETTLE_S)
        result.idle_kb = proc_status_kb(process.pid, "VmRSS")
        await measure_page(result, base, server.url, ids)
        result.indexed_kb = proc_status_kb(process.pid, "VmRSS")
    except Exception as error:
        result.failure = f"{type(error).__name__}: {error}"
    finally:
        if process is not None:
            await asyncio.to_thread(stop_process, process)
        await asyncio.to_thread(server.stop)
    return result


async def measure_page(result: Overview, base: str, nats_url: str, ids: list[str]) -> None:
    executable = chromium_executable()
    if executable is None:
        raise RuntimeError("Chromium not found (apt-get install chromium)")
    nc = await nats.connect(nats_url)
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            # The edge's first overview request builds its index (CTXMETER_SESSIONS_INDEX_AT_START is off).
            result.first_paint_s, _ = await paint(browser, base)
            await asyncio.sleep(SETTLE_S)
            result.warm_paint_s, page = await paint(browser, base)
            kv = await nc.jetstream().key_value(BUCKET)
            for n in range(CHANGES):
                sid = ids[n]  # among the most room left: far outside the rows shown
                put_at = time.time()
                # Fewer tokens left than any before it: the new nearest to compaction.
                await kv.put(subjects.context_key(sid), state(WINDOW - (CHANGES - n)))
                await page.wait_for_function(
                    "(sid) => window.__firsts.some(([first]) => first === sid)", arg=sid, timeout=PAGE_TIMEOUT_MS
                )
                shown_ms = await page.evaluate("(sid) => window.__firsts.find(([first]) => first === sid)[1]", sid)
                result.reorder_s.append(shown_ms / 1000 - put_at)
        finally:
            await browser.close()
            await nc.close()


# Times taken by the page's own clock as the DOM changes (not when a poll from here notices): when its
# rows first show (ms since the navigation began), and every session that became the first row (Unix ms).
WATCH_ROWS = """
new MutationObserver(() => {
  const table = document.getElementById("sessions");
  if (window.__painted === undefined && Number(table?.dataset.rows) > 0) window.__painted = performance.now();
  const first = document.querySelector("#sessions-body tr")?.dataset.sessionId;
  window.__firsts ??= [];
  if (first && window.__firsts.at(-1)?.[0] !== first) window.__firsts.push([first, Date.now()]);
}).observe(document, { subtree: true, childList: true, attributes: true });
"""


async def paint(browser: Browser, base: str) -> tuple[float, Page]:
    """Seconds from the navigation to /sessions in a new page until it shows its rows; the page."""
    page = await browser.new_page(viewport=DESKTOP)
    await page.add_init_script(WATCH_ROWS)
    response = await page.goto(f"{base}/sessions")
    if response is None or response.status != 200:
        raise RuntimeError(f"/sessions answered {response.status if response else 'nothing'}")
    await page.wait_for_function("() => window.__painted !== undefined", timeout=PAGE_TIMEOUT_MS)
    painted_ms: float = await page.evaluate("() => window.__painted")
    return painted_ms / 1000, page


async def measure_overview(trees: list[Tree], sessions: int = SESSIONS) -> list[Overview]:
    results = []
    with tempfile.TemporaryDirectory(prefix="ctxmeter-overview-") as tmp:
        for tree in trees:
            print(f"... overview on {tree.label} ({tree.revision})", file=sys.stderr, flush=True)
            result = await measure_tree(tree, Path(tmp), sessions)
            print("    " + result.summary(), file=sys.stderr, flush=True)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="also measure this git revision (e.g. HEAD), in the same run")
    parser.add_argument("--sessions", type=int, default=SESSIONS, help=f"live sessions ({SESSIONS:,})")
    opts = parser.parse_args()
    with contextlib.ExitStack() as stack:
        trees = [stack.enter_context(exported(opts.before))] if opts.before else []
        trees.append(working_tree())
        for result in asyncio.run(measure_overview(trees, opts.sessions)):
            print(result.summary())


if __name__ == "__main__":
    main()
