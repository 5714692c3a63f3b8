"""``ctxmeter up``: the embedded nats-server, the functions and the edge in one process, stopped in order."""

from __future__ import annotations

import asyncio
import logging

from ctxmeter.natsserver import EmbeddedNats
from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from ws_edge.app import EdgeServer

log = logging.getLogger(__name__)


async def run_up(settings: Settings, stop: asyncio.Event, *, start_nats: bool) -> None:
    server: EmbeddedNats | None = None
    if start_nats:
        server = EmbeddedNats(port=settings.nats_port, store=settings.store, monitor_port=settings.nats_monitor_port)
        await server.start()
        settings = settings.model_copy(update={"nats_url": server.url})
    functions = FunctionsRuntime(settings)
    edge: EdgeServer | None = None
    try:
        await functions.start()
        # After the functions, so the first page load finds them answering.
        edge = EdgeServer(settings)
        await edge.start()
        print(f"ctxmeter up: NATS {settings.nats_url}", flush=True)
        if server is not None:
            print(f"ctxmeter up: JetStream store {settings.store.resolve()}", flush=True)
            if settings.nats_monitor_port:
                print(f"ctxmeter up: NATS monitoring http://127.0.0.1:{settings.nats_monitor_port}/", flush=True)
        print("ctxmeter up: functions on ctxmeter.tokens.* and ctxmeter.context.*", flush=True)
        print(f"ctxmeter up: demo {edge.url}/", flush=True)
        print(
            f"ctxmeter up: API {edge.url}/api/counters/context/<session>, WebSocket /api/ws/counters/<session>",
            flush=True,
        )
        print(f"ctxmeter up: metrics {edge.url}/metrics (Ctrl-C stops)", flush=True)
        await stop.wait()
    finally:
        # The edge first: its sockets close with 1001 while the functions can still answer.
        if edge is not None:
            await edge.stop()
        await functions.stop()
        if server is not None:
            await server.stop()
        print("ctxmeter up: stopped", flush=True)
