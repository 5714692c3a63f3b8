"""Run the functions as a process: connect, bind the bucket, serve until told to stop, drain."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import nats
from nats.aio.client import Client as NATS

from ctxmeter.settings import Settings
from functions.counting import TokenCounter
from functions.encodings import preload
from functions.kvwriter import KvCasWriter
from functions.operation import Deps
from functions.service import FunctionsService
from functions.store import SessionStore, open_bucket

log = logging.getLogger(__name__)

# Seconds between reconnect attempts; with unlimited attempts a NATS restart is ridden out.
RECONNECT_WAIT_S: Final = 0.5


async def connect(url: str, name: str) -> NATS:
    async def on_disconnect() -> None:
        log.warning("disconnected from NATS", extra={"url": url})

    async def on_reconnect() -> None:
        log.info("reconnected to NATS", extra={"url": url})

    async def on_error(error: Exception) -> None:
        log.warning("NATS error: %s", error, extra={"url": url})

    return await nats.connect(
        servers=[server.strip() for server in url.split(",")],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_WAIT_S,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
    )


class FunctionsRuntime:
    """The functions' lifecycle, usable from the CLI and from tests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nc: NATS | None = None
        self.service: FunctionsService | None = None
        self.counter: TokenCounter | None = None
        self.writer: KvCasWriter | None = None

    async def start(self) -> None:
        # Small texts are counted on the event loop's thread: its encodings are built here, before
        # any request is taken (the worker threads build their own).
        preload()
        self.nc = await connect(self.settings.nats_url, "ctxmeter-functions")
        kv = await open_bucket(self.nc.jetstream(), self.settings)
        self.writer = KvCasWriter(self.nc, self.settings.kv_bucket, self.settings.request_timeout)
        await self.writer.start()
        self.counter = TokenCounter()
        await asyncio.to_thread(self.counter.start_workers)
        deps = Deps(store=SessionStore(self.nc, kv, self.writer, self.settings), counter=self.counter)
        self.service = FunctionsService(self.nc, deps)
        await self.service.start()
        log.info("functions serving", extra={"url": self.settings.nats_url})

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()
        if self.counter is not None:
            self.counter.close()
        log.info("functions stopped")

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
