"""Keep a part (functions or edge) serving: start it again on a new NATS connection when it loses its own.

nats-py reconnects by itself through outages, but a connection the server closed (a protocol error,
say) is gone for good. A part that cannot serve any more sets ``lost``; it is then stopped and a fresh
one started, with a capped, doubling backoff, until the process is told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from ctxmeter.limits import RESTART_BACKOFF_CAP_S, RESTART_BACKOFF_S

log = logging.getLogger(__name__)


class Part(Protocol):
    @property
    def lost(self) -> asyncio.Event: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


PartT = TypeVar("PartT", bound=Part)


async def supervise(
    make: Callable[[], PartT], stop: asyncio.Event, name: str, started: Callable[[PartT], None] | None = None
) -> None:
    """Run ``make()`` until ``stop`` is set, calling ``started`` after each start. A failure of the first
    start is raised (the settings are wrong, or NATS is not there); later failures are retried."""
    part = make()
    await part.start()
    if started is not None:
        started(part)
    backoff = RESTART_BACKOFF_S
    try:
        while await _lost_before(stop, part.lost):
            await part.stop()
            while True:
                log.error("the %s lost NATS; starting over in %.1f s", name, backoff)
                await _sleep_unless(stop, backoff)
                backoff = min(RESTART_BACKOFF_CAP_S, backoff * 2)
                if stop.is_set():
                    return
                part = make()
                try:
                    await part.start()
                except Exception as error:
                    log.error("could not start the %s again: %s", name, error)
                    continue
                log.info("the %s serve again", name)
                if started is not None:
                    started(part)
                backoff = RESTART_BACKOFF_S
                break
    finally:
        await part.stop()


async def _lost_before(stop: asyncio.Event, lost: asyncio.Event) -> bool:
    """Wait for either event; True when ``lost`` was set and ``stop`` was not."""
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return not stop.is_set()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
