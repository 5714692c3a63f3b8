"""The load ``bench_edge`` puts on every system: session ids, event frames and the send schedule.

The edge, the raw aiohttp baseline and nats-server's WebSocket listener all carry the same frames,
built here with the schema models (the envelope the functions publish), at the same rate per session,
with the sessions' send times spread evenly over each period so no system sees one burst per period.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final

from schemas.models import ContextLevel, ContextUpdateEvent, ContextUsage

# The publisher wakes this often and sends what is due; finer than any rate the bench uses.
SLOT_S: Final = 0.005
CONTEXT_WINDOW: Final = 200_000


def session_ids(tag: str, count: int) -> list[str]:
    return [f"{tag}-{index:05d}" for index in range(count)]


def client_session(index: int, sessions: list[str]) -> str:
    """Clients are dealt to sessions round-robin: client ``i`` watches session ``i mod n``."""
    return sessions[index % len(sessions)]


class FrameMaker:
    """One session's stream of ``context_update`` frames, with strictly increasing revisions."""

    __slots__ = ("revision", "session_id")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.revision = 0

    def next(self) -> bytes:
        """The next frame, stamped with the time now (the latency clock starts here)."""
        self.revision += 1
        return self.current()

    def current(self) -> bytes:
        """The frame of the current revision (what a socket gets on open), stamped now."""
        used = (self.revision * 7_919) % CONTEXT_WINDOW
        percent = round(used * 100 / CONTEXT_WINDOW, 2)
        level = (
            ContextLevel.CRITICAL if percent >= 90 else ContextLevel.WARNING if percent >= 80 else ContextLevel.NORMAL
        )
        usage = ContextUsage(
            session_id=self.session_id,
            used=used,
            total=CONTEXT_WINDOW,
            percentage=percent,
            level=level,
            model="gpt-4o",
            revision=self.revision,
            updated_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            compact_at=CONTEXT_WINDOW,
            left=CONTEXT_WINDOW - used,
        )
        event = ContextUpdateEvent(session_id=self.session_id, data=usage, timestamp=time.time())
        return event.model_dump_json().encode()


def phase(index: int, count: int, period: float) -> float:
    """Session ``index``'s offset within each period: evenly spread."""
    return period * index / count


async def run_schedule(count: int, rate: float, send: Callable[[int], Awaitable[None]], stop: asyncio.Event) -> int:
    """Call ``send(i)`` for each of ``count`` sessions ``rate`` times a second until ``stop``.

    One loop wakes every ``SLOT_S`` and sends what is due, sessions spread evenly over the period. A
    late wake-up sends the overdue ones at once (their frames are stamped when sent, so the latency
    measured starts at the real send). Returns how many were sent.
    """
    loop = asyncio.get_running_loop()
    period = 1.0 / rate
    slots = max(1, round(period / SLOT_S))
    by_slot: list[list[int]] = [[] for _ in range(slots)]
    for index in range(count):
        by_slot[int(phase(index, count, period) / period * slots) % slots].append(index)
    slot_s = period / slots
    started = loop.time()
    tick = 0
    sent = 0
    while not stop.is_set():
        delay = started + tick * slot_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
            if stop.is_set():
                break
        for index in by_slot[tick % slots]:
            await send(index)
            sent += 1
        tick += 1
    return sent
