"""Run the functions: connect, bind the bucket, serve until told to stop, drain."""

from __future__ import annotations

import asyncio
import logging

import prometheus_client
from nats.aio.client import Client as NATS

from ctxmeter.bucket import open_bucket
from ctxmeter.connection import NatsConnectError, NatsConnection, service_settings
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
from functions.storeuse import StoreUse

log = logging.getLogger(__name__)

CONNECTION_NAME = "ctxmeter-functions"
SERVICE_CONNECTION_NAME = "ctxmeter-functions-service"


async def start_counter(copies_at_start: bool) -> TokenCounter:
    """The counting workers, started: the first has built the shared o200k_base (cl100k_base is built
    when first used), which the event loop thread shares for the small texts it counts inline; with
    ``copies_at_start`` the others have built their own."""
    counter = TokenCounter(copies_at_start=copies_at_start)
    await asyncio.to_thread(counter.start_workers)
    return counter


class FunctionsRuntime:
    """The functions on their NATS connection(s); ``lost`` is set when NATS closes one under them.

    With ``CTXMETER_NATS_SERVICE_*`` credentials the requests come in, and the replies go out, on a
    connection of their own, as a NATS user that may publish to inboxes only: then no reply can reach the
    bucket, the history, events or the JetStream API, whatever a request names as its reply subject and
    whatever the code does (nats-server's ``allow_responses`` would let a reply through any deny list).
    The state (bucket, history, events) is written on the other connection.
    """

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
        separate = service_settings(settings)
        self.service_connection = (
            None
            if separate is None
            else NatsConnection(
                separate,
                SERVICE_CONNECTION_NAME,
                on_disconnected=self.metrics.nats_disconnects.inc,
                on_reconnected=self.metrics.nats_reconnects.inc,
                lost=self.connection.lost,
            )
        )
        self.service: FunctionsService | None = None
        self.store_use: StoreUse | None = None
        self._counter = counter
        self._owns_counter = counter is None

    @property
    def lost(self) -> asyncio.Event:
        return self.connection.lost

    async def start(self) -> None:
        if self._counter is None:
            self._counter = await start_counter(self.settings.count_copies_at_start is True)
        nc = await self.connection.open()
        try:
            service_nc = nc if self.service_connection is None else await self._open_service_connection()
            self.metrics.follow(
                self.metrics.nats_connected,
                *(one for one in (self.connection, self.service_connection) if one is not None),
            )
            models = ModelRegistry.load(self.settings.models_file)
            js = nc.jetstream()
            kv = await open_bucket(js, self.settings)
            if self.settings.record_history:
                await open_history(js, self.settings)
            writer = KvCasWriter(nc, self.settings.kv_bucket, self.settings.request_timeout)
            await writer.start()
            store = SessionStore(nc, kv, writer, History(js, self.settings), self.settings, self.metrics)
            deps = Deps(store=store, counter=self._counter, models=models)
            self.service = FunctionsService(service_nc, deps, self.metrics, self.settings.inbox_prefix)
            await self.service.start()
            self.store_use = StoreUse(js, self.settings, self.metrics)
            self.store_use.start()
        except BaseException:
            await self.stop()
            raise
        log.info("functions serving", extra={"url": self.connection.url})

    async def _open_service_connection(self) -> NATS:
        assert self.service_connection is not None
        try:
            return await self.service_connection.open()
        except NatsConnectError as error:
            raise NatsConnectError(f"the service connection (CTXMETER_NATS_SERVICE_*): {error}") from None

    async def stop(self) -> None:
        store_use, self.store_use = self.store_use, None
        if store_use is not None:
            await store_use.stop()
        service, self.service = self.service, None
        if service is not None:
            await service.stop()
        if self.service_connection is not None:
            await self.service_connection.close()
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
