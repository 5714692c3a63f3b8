"""Per session and event type coalescing: at most one frame per interval, and the newest always goes out.

The first change after a quiet interval goes out at once (leading edge), changes inside the interval
replace each other, and the newest one goes out when the interval ends (trailing edge): the last change
of a burst reaches clients within one interval, so a meter never rests on a stale value (as it would if
the changes after the first of an interval were dropped).

Events carry their KV revision. Functions in several processes may publish out of order, so an event
older than the newest one seen for its type is dropped. An equal revision passes: it is the same state
again, which is what a resync after a NATS reconnect sends on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

# kind, revision, the frame exactly as it goes on the wire (serialized once per session).
Emit = Callable[[str, int, bytes], None]


@dataclass(slots=True)
class _Lane:
    """One event type's state within a session."""

    revision: int = -1
    sent_at: float = float("-inf")
    pending: tuple[int, bytes] | None = None
    timer: asyncio.TimerHandle | None = None


class SessionThrottle:
    def __init__(
        self,
        interval_s: float,
        emit: Emit,
        *,
        on_coalesced: Callable[[], None] = lambda: None,
        on_stale: Callable[[], None] = lambda: None,
    ) -> None:
        self._interval = interval_s
        self._emit = emit
        self._on_coalesced = on_coalesced
        self._on_stale = on_stale
        self._lanes: dict[str, _Lane] = {}
        self._loop = asyncio.get_running_loop()
        self._closed = False

    def offer(self, kind: str, revision: int, frame: bytes) -> bool:
        """Take an event; never blocks (it runs in the NATS subscription callback). False when it is
        older than one already taken for its type, and dropped."""
        if self._closed:
            return True
        lane = self._lanes.get(kind)
        if lane is None:
            lane = self._lanes[kind] = _Lane()
        if revision < lane.revision:
            self._on_stale()
            return False
        lane.revision = revision
        if lane.pending is not None:
            # A frame is already waiting for the interval to end: the newer one takes its place.
            lane.pending = (revision, frame)
            self._on_coalesced()
            return True
        now = self._loop.time()
        due = lane.sent_at + self._interval
        if now >= due:
            lane.sent_at = now
            self._emit(kind, revision, frame)
            return True
        lane.pending = (revision, frame)
        lane.timer = self._loop.call_at(due, self._flush, kind, lane)
        return True

    def revision(self, kind: str) -> int:
        """The newest revision taken for ``kind`` (-1 before any)."""
        lane = self._lanes.get(kind)
        return lane.revision if lane is not None else -1

    def reset(self, kind: str, revision: int) -> None:
        """Take ``revision`` as the newest of ``kind`` even if an older one than held: the state store
        says so (what was held was never real, or the bucket was made anew). A pending frame goes."""
        lane = self._lanes.get(kind)
        if lane is None:
            lane = self._lanes[kind] = _Lane()
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        lane.pending = None
        lane.revision = revision
        lane.sent_at = self._loop.time()

    def forget(self, kind: str) -> None:
        """Drop ``kind``'s lane, and a frame of it waiting for its interval (the overview's kinds are
        sessions, which come and go)."""
        lane = self._lanes.pop(kind, None)
        if lane is not None and lane.timer is not None:
            lane.timer.cancel()

    def _flush(self, kind: str, lane: _Lane) -> None:
        lane.timer = None
        if lane.pending is None or self._closed:
            return
        revision, frame = lane.pending
        lane.pending = None
        # The interval is counted from when this frame was due, not from when the timer got to run:
        # counting from the (always slightly late) run time pushed every later frame back a little
        # more, so updates arriving at the throttle's own rate queued up behind a drifting timer.
        lane.sent_at += self._interval
        self._emit(kind, revision, frame)

    def close(self) -> None:
        self._closed = True
        for lane in self._lanes.values():
            if lane.timer is not None:
                lane.timer.cancel()
                lane.timer = None
            lane.pending = None
