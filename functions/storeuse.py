"""How full the bucket and the history stream are, as gauges an alert can watch before writes fail.

The bucket refuses writes that need more room once it holds ``kv_max_bytes`` (``store_full``); the
history stream drops its oldest points beyond ``history_max_bytes``. Each is read with a stream info
every ``STORE_USE_POLL_S``: ``ctxmeter_functions_store_bytes{store}`` against
``ctxmeter_functions_store_max_bytes{store}`` (-1 for a stream without a limit: one made before ctxmeter
set limits, or provisioned without one; logged once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import nats.errors
from nats.js import JetStreamContext

from ctxmeter.limits import STORE_USE_POLL_S
from ctxmeter.settings import Settings
from functions.history import stream_name
from functions.metrics import FunctionsMetrics

log = logging.getLogger(__name__)

STATE: Final = "state"
HISTORY: Final = "history"
UNLIMITED: Final = -1


class StoreUse:
    def __init__(self, js: JetStreamContext, settings: Settings, metrics: FunctionsMetrics) -> None:
        self._js = js
        self._metrics = metrics
        self._streams = {STATE: f"KV_{settings.kv_bucket}"}
        if settings.record_history:
            self._streams[HISTORY] = stream_name(settings)
        self._unlimited_told: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def refresh(self) -> None:
        """Read each stream's size and limit into the gauges (a stream that does not answer keeps its last)."""
        for store, stream in self._streams.items():
            try:
                info = await self._js.stream_info(stream)
            except nats.errors.Error as error:
                log.debug("could not read the size of %s: %s", stream, type(error).__name__)
                continue
            limit = info.config.max_bytes if info.config.max_bytes and info.config.max_bytes > 0 else UNLIMITED
            self._metrics.store_bytes.labels(store).set(info.state.bytes)
            self._metrics.store_max_bytes.labels(store).set(limit)
            if limit == UNLIMITED and store not in self._unlimited_told:
                self._unlimited_told.add(store)
                log.warning(
                    "the stream %s has no size limit: it can fill the server's storage (ctxmeter sets one only on "
                    "streams it creates; `nats stream edit %s --max-bytes ...`, docs/deploy.md)",
                    stream,
                    stream,
                )

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while not self._stopping.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STORE_USE_POLL_S):
                    await self._stopping.wait()

    async def stop(self) -> None:
        # The event ends the loop even when a cancellation is lost: Python 3.11's ``wait_for`` (inside
        # nats.py's requests) swallows one that arrives as its reply does.
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
