"""The edge application: its NATS connection and hub (``cleanup_ctx``), routes, and a runnable server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Final, Self

from aiohttp import web

from ctxmeter.connection import NatsConnection
from ctxmeter.heap import freeze_startup
from ctxmeter.limits import EDGE_SHUTDOWN_TIMEOUT_S
from ctxmeter.settings import Settings
from ctxmeter.supervise import supervise
from ws_edge.guard import GUARD, ConnectionGuard, GuardedSite, guard_requests
from ws_edge.hub import Hub
from ws_edge.keys import (
    CONNECTION,
    FUNCTIONS,
    GATE,
    HUB,
    METRICS,
    MORE_METRICS,
    NC,
    SETTINGS,
    WRITES,
    MetricsSource,
)
from ws_edge.metrics import EdgeMetrics
from ws_edge.middleware import cors, json_errors, observe, plain_bodies, same_origin_writes, write_rate
from ws_edge.routes import setup_routes
from ws_edge.rpc import FunctionsClient
from ws_edge.security import WILDCARD_HOSTS, ConnectionGate, IpRateLimiter
from ws_edge.serverlog import install as quiet_malformed_requests
from ws_edge.sockets import SOCKETS, OpenSockets, close_all
from ws_edge.state import StateReader

log = logging.getLogger(__name__)

CONNECTION_NAME: Final = "ctxmeter-edge"


def create_app(settings: Settings, more_metrics: Sequence[MetricsSource] = ()) -> web.Application:
    """The edge's application; ``more_metrics`` are served on ``/metrics`` after the edge's own (``ctxmeter
    up`` adds the functions' there, as they share the process)."""
    quiet_malformed_requests()
    app = web.Application(
        # The guard sees every request (preflights too) and refuses beyond the connection cap in JSON;
        # the Origin check on writes is innermost, so its refusal is a JSON error like any other.
        middlewares=[observe, guard_requests, cors, json_errors, write_rate, plain_bodies, same_origin_writes],
        # A 4 MiB text may double when JSON-escaped; the same bound as NATS's max_payload in nats.conf.
        client_max_size=2 * settings.max_text_bytes,
    )
    app[SETTINGS] = settings
    metrics = app[METRICS] = EdgeMetrics()
    app[MORE_METRICS] = tuple(more_metrics)
    app[GATE] = ConnectionGate(IpRateLimiter(settings.ip_connect_rate, settings.ip_connect_burst))
    app[WRITES] = IpRateLimiter(settings.ip_write_rate, settings.ip_write_burst)
    app[GUARD] = ConnectionGuard(
        settings.max_connections, header_timeout=settings.header_timeout, body_timeout=settings.body_timeout
    )

    def on_reconnected() -> None:
        metrics.nats_reconnects.inc()
        if HUB in app:
            app[HUB].on_reconnected()

    app[CONNECTION] = NatsConnection(
        settings, CONNECTION_NAME, on_disconnected=metrics.nats_disconnects.inc, on_reconnected=on_reconnected
    )
    app[SOCKETS] = OpenSockets(app, settings, metrics)
    app.cleanup_ctx.append(_nats_context)
    app.on_shutdown.append(close_all)
    setup_routes(app)
    return app


async def _nats_context(app: web.Application) -> AsyncIterator[None]:
    settings, metrics, connection = app[SETTINGS], app[METRICS], app[CONNECTION]
    nc = await connection.open()
    metrics.follow(metrics.nats_connected, connection)
    hub = Hub(nc, StateReader(nc.jetstream(), settings), metrics, throttle_s=settings.throttle_ms / 1000)
    app[NC] = nc
    app[HUB] = hub
    app[FUNCTIONS] = FunctionsClient(nc, metrics, settings.request_timeout)
    try:
        yield
    finally:
        await hub.close()
        await connection.close()


def _url_host(host: str) -> str:
    # The URL printed for an edge on every address uses loopback.
    if host in WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class EdgeServer:
    """The edge listening on ``settings.host``/``settings.port`` (0: a free port, shown in ``url``)."""

    def __init__(self, settings: Settings, more_metrics: Sequence[MetricsSource] = ()) -> None:
        self.settings = settings
        self.app = create_app(settings, more_metrics)
        self.url = ""
        self._runner: web.AppRunner | None = None

    @property
    def nats_url(self) -> str:
        """The NATS servers, safe to print (no password or token)."""
        return self.app[CONNECTION].url

    @property
    def lost(self) -> asyncio.Event:
        """Set when NATS closed the edge's connection for good (it then cannot relay anything)."""
        return self.app[CONNECTION].lost

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            shutdown_timeout=EDGE_SHUTDOWN_TIMEOUT_S,
            access_log=None,
            keepalive_timeout=self.settings.keepalive_timeout,
            # Nothing is inflated by aiohttp (on the event loop, before any size check): routes that take a
            # compressed body opt in (ws_edge.middleware.COMPRESSED_BODY_PREFIXES) and inflate it themselves.
            auto_decompress=False,
        )
        await runner.setup()
        try:
            site = GuardedSite(runner, self.app[GUARD], self.settings.host, self.settings.port)
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
    """Serve until ``stop`` is set; a new edge (sockets closed with 1001, clients reconnect) whenever
    NATS closes the current one's connection."""

    def started(edge: EdgeServer) -> None:
        print(f"ctxmeter edge: {edge.url}/ (NATS {edge.nats_url}; Ctrl-C stops)", flush=True)
        freeze_startup()

    await supervise(lambda: EdgeServer(settings), stop, "edge", started)
    print("ctxmeter edge: stopped", flush=True)
