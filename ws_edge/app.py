"""The edge application: its NATS connection and hub (``cleanup_ctx``), routes, and a runnable server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Final, Self

import nats
from aiohttp import web

from ctxmeter.settings import Settings
from functions.runner import RECONNECT_WAIT_S
from ws_edge.hub import Hub
from ws_edge.keys import FUNCTIONS, GATE, HUB, METRICS, NC, SETTINGS
from ws_edge.metrics import EdgeMetrics
from ws_edge.middleware import cors, json_errors, observe
from ws_edge.routes import setup_routes
from ws_edge.rpc import FunctionsClient
from ws_edge.security import ConnectionGate, IpRateLimiter
from ws_edge.sockets import close_all
from ws_edge.state import StateReader

log = logging.getLogger(__name__)

# Seconds the server waits for handlers after the sockets were told to close (they end at once).
SHUTDOWN_TIMEOUT_S: Final = 10.0
# Bound on draining the NATS connection at shutdown (unsubscribes, flushes).
NATS_DRAIN_TIMEOUT_S: Final = 5.0
# Hosts that listen on every address; the URL we print uses loopback for them instead.
WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[observe, cors, json_errors],
        # A 4 MiB text may double when JSON-escaped; the same bound as NATS's max_payload in nats.conf.
        client_max_size=2 * settings.max_text_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = EdgeMetrics()
    app[GATE] = ConnectionGate(
        IpRateLimiter(settings.ip_connect_rate, settings.ip_connect_burst), settings.max_connections
    )
    app.cleanup_ctx.append(_nats_context)
    app.on_shutdown.append(close_all)
    setup_routes(app)
    return app


async def _nats_context(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[SETTINGS], app[METRICS]

    async def on_disconnect() -> None:
        if nc.is_draining or nc.is_closed:
            return  # our own shutdown
        metrics.nats_disconnects.inc()
        log.warning("disconnected from NATS", extra={"url": settings.nats_url})

    async def on_reconnect() -> None:
        metrics.nats_reconnects.inc()
        log.info("reconnected to NATS; resending every session's state", extra={"url": settings.nats_url})
        if HUB in app:
            app[HUB].on_reconnected()

    async def on_error(error: Exception) -> None:
        log.warning("NATS error: %s", error, extra={"url": settings.nats_url})

    nc = await nats.connect(
        servers=[server.strip() for server in settings.nats_url.split(",")],
        name="ctxmeter-edge",
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_WAIT_S,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
    )
    hub = Hub(nc, StateReader(nc.jetstream(), settings), metrics, throttle_s=settings.throttle_ms / 1000)
    app[NC] = nc
    app[HUB] = hub
    app[FUNCTIONS] = FunctionsClient(nc, metrics, settings.request_timeout)
    try:
        yield
    finally:
        await hub.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(NATS_DRAIN_TIMEOUT_S):
                await nc.drain()
        if not nc.is_closed:
            await nc.close()


def _url_host(host: str) -> str:
    if host in WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class EdgeServer:
    """The edge listening on ``settings.host``/``settings.port`` (0: a free port, shown in ``url``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        self.url = f"http://{_url_host(self.settings.host)}:{port}"
        log.info("edge serving", extra={"url": self.url})

    async def stop(self) -> None:
        """Stop listening, close every socket with 1001, then drain NATS."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def run_edge(settings: Settings, stop: asyncio.Event) -> None:
    async with EdgeServer(settings) as edge:
        print(f"ctxmeter edge: {edge.url}/ (NATS {settings.nats_url}; Ctrl-C stops)", flush=True)
        await stop.wait()
    print("ctxmeter edge: stopped", flush=True)
