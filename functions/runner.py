"""Run the functions: connect, bind the bucket, serve until told to stop, drain."""

from __future__ import annotations

import asyncio
import logging

import prometheus_client

from ctxmeter.bucket import open_bucket
from ctxmeter.connection import NatsConnection
from ctxmeter.heap import freeze_startup
from ctxmeter.settings import Settings
from ctxmeter.supervise import supervise
from functions.counting import TokenCounter
from functions.history import History, open_history
from functions.kvwriter import KvCasWriter
from functions.metrics import FunctionsMetrics
from functions.operation import Deps
from functions.registry import ModelRegistry
from functions.service import FunctionsService
from functions.store import SessionStore

log = logging.getLogger(__name__)

CONNECTION_NAME = "ctxmeter-functions"


async def start_counter(copies_at_start: bool) -> TokenCounter:
    """The counting workers, started: the first has built the shared o200k_base (cl100k_base is built
    when first used), which the event loop thread shares for the small texts it counts inline; with
    ``copies_at_start`` the others have built their own."""
    counter = TokenCounter(copies_at_start=copies_at_start)
    await asyncio.to_thread(counter.start_workers)
    return counter


class FunctionsRuntime:
    """The functions on one NATS connection; ``lost`` is set when NATS closes it under them."""

    def __init__(
        self, settings: Settings, counter: TokenCounter | None = None, metrics: FunctionsMetrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or FunctionsMetrics()
        self.connection = NatsConnection(
            settings,
            CONNECTION_NAME,
            on_disconnected=self.metrics.nats_disconnects.inc,
            on_reconnected=self.metrics.nats_reconnects.inc,
        )
        self.service: FunctionsService | None = None
        self._counter = counter
        self._owns_counter = counter is None

    @property
    def lost(self) -> asyncio.Event:
        return self.connection.lost

    async def start(self) -> None:
        if self._counter is None:
            self._counter = await start_counter(self.settings.count_copies_at_start is True)
        nc = await self.connection.open()
        self.metrics.follow(self.metrics.nats_connected, self.connection)
        try:
            models = ModelRegistry.load(self.settings.models_file)
            js = nc.jetstream()
            kv = await open_bucket(js, self.settings)
            if self.settings.record_history:
                await open_history(js, self.settings)
            writer = KvCasWriter(nc, self.settings.kv_bucket, self.settings.request_timeout)
            await writer.start()
            store = SessionStore(nc, kv, writer, History(nc, js, self.settings), self.settings, self.metrics)
            deps = Deps(store=store, counter=self._counter, models=models)
            self.service = FunctionsService(nc, deps, self.metrics)
            await self.service.start()
        except BaseException:
            await self.stop()
            raise
        log.info("functions serving", extra={"url": self.connection.url})

    async def stop(self) -> None:
        service, self.service = self.service, None
        if service is not None:
            await service.stop()
        await self.connection.close()
        if self._owns_counter and self._counter is not None:
            self._counter.close()
            self._counter = None
        log.info("functions stopped")


async def run_functions(settings: Settings, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set, on a new connection whenever NATS closes the current one; with
    ``metrics_port``, Prometheus metrics on ``http://<metrics_host>:<metrics_port>/metrics``."""
    counter = await start_counter(settings.count_copies_at_start is not False)
    metrics = FunctionsMetrics()
    exporter = None
    if settings.metrics_port is not None:
        exporter, _ = prometheus_client.start_http_server(
            settings.metrics_port, settings.metrics_host, registry=metrics.registry
        )
        print(f"ctxmeter functions: metrics http://{settings.metrics_host}:{exporter.server_port}/metrics", flush=True)
    try:
        await supervise(
            lambda: FunctionsRuntime(settings, counter, metrics), stop, "functions", lambda _: freeze_startup()
        )
    finally:
        counter.close()
        if exporter is not None:
            exporter.shutdown()
            exporter.server_close()
