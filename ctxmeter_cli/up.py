"""``ctxmeter up``: the embedded nats-server, the functions and the edge in one process, stopped in order.

Each part is kept running: the nats-server is started again when it dies, and the functions and the
edge start over on a new connection when NATS closes theirs. What cannot be recovered ends the process
with a non-zero status, for a supervisor above it to act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ctxmeter.heap import freeze_startup
from ctxmeter.natsserver import EmbeddedNats
from ctxmeter.settings import Settings
from ctxmeter.supervise import supervise
from functions.metrics import FunctionsMetrics
from functions.runner import FunctionsRuntime, start_counter
from ws_edge.app import EdgeServer

log = logging.getLogger(__name__)


def _banner(settings: Settings, server: EmbeddedNats | None, edge: EdgeServer) -> None:
    freeze_startup()
    lines = [f"NATS {edge.nats_url}"]
    if server is not None:
        lines.append(f"JetStream store {settings.store.resolve()}")
        if settings.nats_monitor_port:
            lines.append(f"NATS monitoring http://127.0.0.1:{settings.nats_monitor_port}/")
    lines += [
        "functions on ctxmeter.tokens.* and ctxmeter.context.*",
        f"demo {edge.url}/",
        f"API {edge.url}/api/counters/context/<session>, WebSocket /api/ws/counters/<session>",
        f"OpenTelemetry OTEL_EXPORTER_OTLP_ENDPOINT={edge.otlp_url or edge.url} (/v1/traces, /v1/logs, /v1/metrics)",
        f"metrics {edge.url}/metrics (Ctrl-C stops)",
    ]
    for line in lines:
        print(f"ctxmeter up: {line}", flush=True)


async def run_up(settings: Settings, stop: asyncio.Event, *, start_nats: bool) -> None:
    server: EmbeddedNats | None = None
    if start_nats:
        server = EmbeddedNats(port=settings.nats_port, store=settings.store, monitor_port=settings.nats_monitor_port)
        await server.start()
        settings = settings.model_copy(update={"nats_url": server.url})
    # Small by default (one copy of each encoding until concurrent counts call for a second).
    counter = await start_counter(settings.count_copies_at_start is True)
    # One process: the functions' metrics are served on the edge's /metrics too (the edge's report the
    # process's suppressed log lines).
    metrics = FunctionsMetrics(report_logs=False)
    # Each part has its own stop, so they stop in order: the edge first (its sockets close with 1001
    # while the functions still answer), then the functions, then the server.
    edge_stop, functions_stop, server_stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    functions_up = asyncio.Event()
    functions: asyncio.Task[None] | None = None
    edge: asyncio.Task[None] | None = None
    watch: asyncio.Task[None] | None = None
    try:
        functions = asyncio.create_task(
            supervise(
                lambda: FunctionsRuntime(settings, counter, metrics),
                functions_stop,
                "functions",
                lambda _: functions_up.set(),
            )
        )
        await _until(functions_up, functions)
        # After the functions, so the first page load finds them answering.
        edge = asyncio.create_task(
            supervise(
                lambda: EdgeServer(settings, [metrics.render]),
                edge_stop,
                "edge",
                lambda started: _banner(settings, server, started),
            )
        )
        if server is not None:
            watch = asyncio.create_task(server.keep_running(server_stop))
        parts: set[asyncio.Future[Any]] = {task for task in (functions, edge, watch) if task is not None}
        stopping = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({stopping, *parts}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        for ended in done & parts:
            ended.result()  # a part that ended on its own failed: raise its error
    finally:
        in_order: list[tuple[asyncio.Event, asyncio.Task[None] | None]] = [
            (edge_stop, edge),
            (functions_stop, functions),
            (server_stop, watch),
        ]
        for part_stop, task in in_order:
            part_stop.set()
            if task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task
        counter.close()
        if server is not None:
            await server.stop()
        print("ctxmeter up: stopped", flush=True)


async def _until(event: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Wait for ``event``; if ``task`` ends first, raise what it raised."""
    waiter = asyncio.ensure_future(event.wait())
    await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not event.is_set():
        task.result()
        raise RuntimeError("the functions stopped before they started")
