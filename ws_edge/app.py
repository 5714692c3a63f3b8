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
from ws_edge.guard import GUARD, ConnectionGuard, guard_requests
from ws_edge.hub import Hub
from ws_edge.keys import (
    CONNECTION,
    FUNCTIONS,
    GATE,
    HUB,
    METRICS,
    MORE_METRICS,
    NC,
    OTLP_WANTED,
    OVERVIEW,
    SETTINGS,
    WRITES,
    MetricsSource,
)
from ws_edge.listener import listen, server_tls, url_of
from ws_edge.metrics import EdgeMetrics
from ws_edge.middleware import cors, json_errors, observe, plain_bodies, same_origin_writes, write_rate
from ws_edge.otlp.handler import setup_otlp_routes
from ws_edge.otlp.mapping import wanted_attributes
from ws_edge.overview import Overview
from ws_edge.overview_routes import setup_overview_routes
from ws_edge.proxies import TRUSTED_PROXIES
from ws_edge.routes import setup_routes
from ws_edge.rpc import FunctionsClient
from ws_edge.security import ConnectionGate, IpRateLimiter
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
    app[TRUSTED_PROXIES] = tuple(settings.trusted_proxies)
    app[GATE] = ConnectionGate(IpRateLimiter(settings.ip_connect_rate, settings.ip_connect_burst))
    app[WRITES] = IpRateLimiter(settings.ip_write_rate, settings.ip_write_burst)
    sockets = app[SOCKETS] = OpenSockets(app, settings, metrics)
    app[GUARD] = ConnectionGuard(
        settings.max_connections,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        sockets=sockets.peers,
    )

    def on_reconnected() -> None:
        metrics.nats_reconnects.inc()
        if HUB in app:
            app[HUB].on_reconnected()

    app[CONNECTION] = NatsConnection(
        settings, CONNECTION_NAME, on_disconnected=metrics.nats_disconnects.inc, on_reconnected=on_reconnected
    )
    app[OTLP_WANTED] = wanted_attributes(settings.otlp_session_attributes)
    app.cleanup_ctx.append(_nats_context)
    app.on_shutdown.append(close_all)
    setup_routes(app)
    setup_otlp_routes(app)
    setup_overview_routes(app)
    return app


async def _nats_context(app: web.Application) -> AsyncIterator[None]:
    settings, metrics, connection = app[SETTINGS], app[METRICS], app[CONNECTION]
    nc = await connection.open()
    metrics.follow(metrics.nats_connected, connection)
    reader = StateReader(nc.jetstream(), settings)
    hub = Hub(nc, reader, metrics, throttle_s=settings.throttle_ms / 1000)
    overview = Overview(reader, settings, metrics)
    app[NC] = nc
    app[HUB] = hub
    app[OVERVIEW] = overview
    app[SOCKETS].on_leave.append(overview.feed.leave)
    if settings.sessions_index_at_start:
        # A bucket the functions have not made yet is tried again at the first overview request.
        overview.index.start().add_done_callback(_quietly)
    app[FUNCTIONS] = FunctionsClient(nc, metrics, settings.request_timeout)
    try:
        yield
    finally:
        await overview.close()
        await hub.close()
        await connection.close()


def _quietly(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: a failed start is retried by the next overview request


class EdgeServer:
    """The edge listening on ``settings.host``/``settings.port`` (0: a free port, shown in ``url``)."""

    def __init__(self, settings: Settings, more_metrics: Sequence[MetricsSource] = ()) -> None:
        self.settings = settings
        self.app = create_app(settings, more_metrics)
        self.url = ""
        # The OTLP/HTTP listener's URL when ``settings.otlp_port`` is set.
        self.otlp_url: str | None = None
        self._runner: web.AppRunner | None = None
        self._listeners: list[asyncio.Server] = []

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
        tls = server_tls(self.settings)
        await runner.setup()
        try:
            self._listeners.append(await listen(runner, self.app[GUARD], self.settings.host, self.settings.port, tls))
            if self.settings.otlp_port is not None:
                # The same app on a second listener (OTLP's conventional 4318): one guard counts both.
                self._listeners.append(
                    await listen(runner, self.app[GUARD], self.settings.host, self.settings.otlp_port, tls)
                )
        except BaseException:
            for listener in self._listeners:
                listener.close()
            self._listeners = []
            await runner.cleanup()
            raise
        self._runner = runner
        self.url = url_of(self._listeners[0], self.settings.host, tls)
        if self.settings.otlp_port is not None:
            self.otlp_url = url_of(self._listeners[1], self.settings.host, tls)
        log.info("edge serving", extra={"url": self.url, "otlp_url": self.otlp_url})

    async def stop(self) -> None:
        """Stop listening, close every socket with 1001, then drain NATS."""
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        for listener in listeners:
            # After the runner's cleanup: from Python 3.12 this also waits for the connections to end.
            await listener.wait_closed()

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
        print(f"ctxmeter edge: OTLP/HTTP at {edge.otlp_url or edge.url}/v1/{{traces,logs,metrics}}", flush=True)
        freeze_startup()

    await supervise(lambda: EdgeServer(settings), stop, "edge", started)
    print("ctxmeter edge: stopped", flush=True)
