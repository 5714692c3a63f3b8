"""Per session and event type: the order of revisions and the coalescing of frames, in one place.

Coalescing: the first change after a quiet interval goes out at once (leading edge), changes inside the
interval replace each other, and the newest one goes out when the interval ends (trailing edge): the last
change of a burst reaches clients within one interval, so a meter never rests on a stale value (as it
would if the changes after the first of an interval were dropped).

Revisions: events carry their KV revision. Functions in several processes may publish out of order, so
an event older than the newest one taken for its type is dropped. An equal revision passes: it is the
same state again, which is what a resync after a NATS reconnect sends on purpose. A new socket's first
state is the newer of the bucket's (read for it) and the newest frame taken here, so no socket ever goes
back behind what it was shown first, and sockets need no revisions of their own. The bucket is the
authority on revisions (``trust``): when it is behind what is held here, what is held was never real
(a forged event, or a bucket made anew whose revisions start again at 1) and the bucket's state wins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ws_edge.state import Frame

# kind, the frame exactly as it goes on the wire (serialized once per session).
Emit = Callable[[str, bytes], None]


@dataclass(slots=True)
class _Lane:
    """One event type's state within a session."""

    revision: int = -1
    # The newest frame taken (sent, or waiting for its interval): a new socket's first state of this type.
    latest: bytes | None = None
    sent_at: float = float("-inf")
    pending: bytes | None = None
    timer: asyncio.TimerHandle | None = None
    # The newest event refused as older than ``revision``, kept while the bucket is asked which is real.
    refused: tuple[int, bytes] | None = None


class SessionThrottle:
    def __init__(
        self,
        interval_s: float,
        emit: Emit,
        *,
        on_coalesced: Callable[[], None] = lambda: None,
        on_stale: Callable[[], None] = lambda: None,
        on_reset: Callable[[], None] = lambda: None,
    ) -> None:
        self._interval = interval_s
        self._emit = emit
        self._on_coalesced = on_coalesced
        self._on_stale = on_stale
        self._on_reset = on_reset
        self._lanes: dict[str, _Lane] = {}
        self._loop = asyncio.get_running_loop()
        self._closed = False

    def _lane(self, kind: str) -> _Lane:
        lane = self._lanes.get(kind)
        if lane is None:
            lane = self._lanes[kind] = _Lane()
        return lane

    def offer(self, kind: str, revision: int, frame: bytes) -> bool:
        """Take an event; never blocks (it runs in the NATS subscription callback). False when it is
        older than one already taken for its type: dropped, and kept aside in case the bucket says the
        held revision was never real (``trust``)."""
        if self._closed:
            return True
        lane = self._lane(kind)
        if revision < lane.revision:
            self._on_stale()
            if lane.refused is None or revision >= lane.refused[0]:
                lane.refused = (revision, frame)
            return False
        self._take(kind, lane, revision, frame)
        return True

    def _take(self, kind: str, lane: _Lane, revision: int, frame: bytes) -> None:
        lane.revision = revision
        lane.latest = frame
        if lane.pending is not None:
            # A frame is already waiting for the interval to end: the newer one takes its place.
            lane.pending = frame
            self._on_coalesced()
            return
        now = self._loop.time()
        due = lane.sent_at + self._interval
        if now >= due:
            lane.sent_at = now
            self._emit(kind, frame)
            return
        lane.pending = frame
        lane.timer = self._loop.call_at(due, self._flush, kind, lane)

    def first_state(self, state: Iterable[Frame]) -> list[bytes]:
        """A new socket's first frames: per type (in the state's order, context first) the newer of the
        bucket's ``state`` and the newest frame taken, then the newest of any other type taken. A state
        newer than what is held becomes what is held (a frame still waiting for its interval is replaced
        by it), so nothing older can follow it on the socket."""
        first: list[bytes] = []
        kinds: set[str] = set()
        for frame in state:
            kinds.add(frame.kind)
            lane = self._lane(frame.kind)
            if frame.revision >= lane.revision or lane.latest is None:
                lane.revision = frame.revision
                lane.latest = frame.data
                if lane.pending is not None:
                    lane.pending = frame.data
            first.append(lane.latest)
        first += [lane.latest for kind, lane in self._lanes.items() if kind not in kinds and lane.latest is not None]
        return first

    def trust(self, state: Iterable[Frame]) -> None:
        """The bucket's state, read again: relayed like any event, and trusted over what is held. When
        the bucket is behind what is held, its state replaces it at once on every socket, and an event
        refused meanwhile that is newer than the bucket's follows it."""
        if self._closed:
            return
        for frame in state:
            lane = self._lane(frame.kind)
            if frame.revision < lane.revision:
                self._on_reset()
                if lane.timer is not None:
                    lane.timer.cancel()
                    lane.timer = None
                lane.pending = None
                lane.revision = frame.revision
                lane.latest = frame.data
                lane.sent_at = self._loop.time()
                self._emit(frame.kind, frame.data)
            else:
                self._take(frame.kind, lane, frame.revision, frame.data)
            refused, lane.refused = lane.refused, None
            if refused is not None and refused[0] > frame.revision:
                self._take(frame.kind, lane, *refused)

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
        frame, lane.pending = lane.pending, None
        # The interval is counted from when this frame was due, not from when the timer got to run:
        # counting from the (always slightly late) run time pushed every later frame back a little
        # more, so updates arriving at the throttle's own rate queued up behind a drifting timer.
        lane.sent_at += self._interval
        self._emit(kind, frame)

    def close(self) -> None:
        self._closed = True
        for lane in self._lanes.values():
            if lane.timer is not None:
                lane.timer.cancel()
                lane.timer = None
            lane.pending = None
