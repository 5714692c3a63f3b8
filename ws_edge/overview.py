"""The sessions overview: every live session of the bucket, nearest to compaction first, and its changes.

The index is one KV watch per edge on the bucket's ``context.*`` keys, kept in memory: a request is
answered from it without reading the bucket. The watch starts with the first overview request (an edge
nobody asks for an overview of never holds it), or with the edge when ``CTXMETER_SESSIONS_INDEX_AT_START``
says so (reading 10,000 keys takes the first request about a second otherwise), and runs until the edge
stops. Per session it holds the
session's ``ContextUsage`` serialized (what a reply and a frame carry, about 450 bytes), its ``left`` and
revision and when the bucket's TTL ages it out: under 1 KB a session in all (measured by ``python -m
bench overview``). The stored state itself (with its idempotency keys, a few KB) is never kept.

Keys that age out of the bucket (its TTL) leave no marker in the stream: the index drops them itself at
the time the bucket does.

The feed relays each change to the overview's sockets, coalesced per session with the edge's throttle:
one ``SessionThrottle`` whose kinds are session ids, alive while an overview socket is open, and each
socket's latest-per-kind slot holds the latest frame per session when that socket is slow. A session
that leaves the bucket (deleted, purged or aged out) is sent as ``{"type": "session_removed",
"session_id"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import nats.errors
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from ctxmeter.limits import OVERVIEW_SWEEP_S
from ctxmeter.settings import Settings
from schemas import subjects
from schemas.models import ContextUsage
from schemas.state import CONTEXT_KIND, context_usage_json, decode_context, envelope
from ws_edge.metrics import EdgeMetrics
from ws_edge.peer import Peer, text_frame
from ws_edge.state import StateReader, StateUnavailable
from ws_edge.throttle import SessionThrottle

log = logging.getLogger(__name__)

REMOVED_KIND: Final = "session_removed"


@dataclass(slots=True)
class Entry:
    """One session in the index."""

    left: int
    revision: int
    # Wall-clock seconds at which the bucket's TTL removes the key (its last write + TTL).
    expires_at: float
    # The session's ContextUsage, serialized.
    data: bytes


def removed_frame(session_id: str) -> bytes:
    # A valid session id needs no JSON escaping.
    return b'{"type":"%s","session_id":"%s"}' % (REMOVED_KIND.encode(), session_id.encode())


class SessionIndex:
    """Session id → its current context, from a KV watch; ``on_change``/``on_removed`` hear every change
    after the watch has caught up with the bucket."""

    def __init__(
        self,
        reader: StateReader,
        settings: Settings,
        on_change: Callable[[str, int, bytes], None],
        on_removed: Callable[[str], None],
    ) -> None:
        self._reader = reader
        self._settings = settings
        self._on_change = on_change
        self._on_removed = on_removed
        self.entries: dict[str, Entry] = {}
        self._task: asyncio.Task[None] | None = None
        self._caught_up: asyncio.Future[None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def start(self) -> asyncio.Future[None]:
        """Start the watch if it is not running; done once it has read every key of the bucket."""
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._caught_up = loop.create_future()
            self._task = loop.create_task(self._run(self._caught_up))
        assert self._caught_up is not None
        return self._caught_up

    async def ready(self) -> None:
        """Start the watch if needed and wait until it has caught up with the bucket.

        ``StateUnavailable`` when the bucket cannot be bound (no bucket yet, NATS down); the next call
        tries again."""
        await asyncio.shield(self.start())

    def top(self, limit: int) -> list[Entry]:
        """The ``limit`` sessions with the fewest tokens left before compaction (ties: by session id)."""
        best = heapq.nsmallest(limit, self.entries.items(), key=lambda item: (item[1].left, item[0]))
        return [entry for _, entry in best]

    async def _run(self, caught_up: asyncio.Future[None]) -> None:
        try:
            kv = await self._reader.bucket()
            watcher = await kv.watch(subjects.every_context_key())
        except (StateUnavailable, nats.errors.Error, TimeoutError) as error:
            if not caught_up.done():
                caught_up.set_exception(StateUnavailable(f"{type(error).__name__}: {error}"))
                caught_up.exception()  # retrieved by whoever waits; no "never retrieved" report
            return
        self._sweep_later()
        # Keys read before the watch caught up: after a restarted watch, any other entry has left the bucket.
        seen: set[str] | None = set()
        # The newest stream sequence taken (every update's, sessions' or not).
        last_seq = 0
        try:
            async for update in watcher:
                if update is None:
                    # nats-py's "no more pending" marker. It can come before the updates it stands after
                    # (its consumer info is read while they are on their way): ask the consumer itself.
                    if seen is None or not await self._drained(watcher, last_seq):
                        continue
                else:
                    last_seq = max(last_seq, update.revision or 0)
                    applied = self._apply(update, notify=seen is None)
                    if seen is None:
                        continue
                    if applied is not None:
                        seen.add(applied)
                    if update.delta != 0:  # more are pending
                        continue
                # Caught up with the bucket.
                for session_id in [sid for sid in self.entries if sid not in seen]:
                    self._remove(session_id, notify=True)
                seen = None
                if not caught_up.done():
                    caught_up.set_result(None)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    @staticmethod
    async def _drained(watcher: KeyValue.KeyWatcher, last_seq: int) -> bool:
        """Whether the watch's consumer has nothing pending and delivered nothing newer than ``last_seq``."""
        # ``_sub`` is the watch's JetStream subscription (nats-py pinned in pyproject; tests read an empty
        # and a full bucket through this).
        subscription = watcher._sub
        if subscription is None:
            return False
        try:
            info = await subscription.consumer_info()
        except (nats.errors.Error, TimeoutError):
            return False  # the updates themselves will say (the last one has nothing pending)
        delivered = info.delivered.stream_seq if info.delivered is not None else 0
        return (info.num_pending or 0) == 0 and (delivered or 0) <= last_seq

    def _apply(self, update: KeyValue.Entry, *, notify: bool) -> str | None:
        """Take one update of the watch; the session it was for, None when it was not a session's."""
        session_id = update.key[len(subjects.CONTEXT_KEY_PREFIX) :]
        # Only the functions write the bucket, but what becomes JSON unescaped must be a session id.
        if not update.key.startswith(subjects.CONTEXT_KEY_PREFIX) or not subjects.is_session_id(session_id):
            return None
        if update.operation in (KV_DEL, KV_PURGE):
            self._remove(session_id, notify=True)
            return None
        data = context_usage_json(session_id, decode_context(update.value), update.revision or 0, self._settings)
        usage = ContextUsage.model_validate_json(data)
        # nats-py types ``created`` as an int, but sets the message's time (a datetime).
        created: object = update.created
        written = created.timestamp() if isinstance(created, datetime) else time.time()
        self.entries[session_id] = Entry(usage.left, usage.revision, written + self._settings.kv_ttl, data)
        if notify:
            self._on_change(session_id, usage.revision, data)
        return session_id

    def _remove(self, session_id: str, *, notify: bool) -> None:
        if self.entries.pop(session_id, None) is not None and notify:
            self._on_removed(session_id)

    def _sweep_later(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweeper = asyncio.get_running_loop().call_later(OVERVIEW_SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        """Drop the sessions the bucket's TTL has aged out (no marker tells the watch)."""
        now = time.time()
        for session_id in [sid for sid, entry in self.entries.items() if entry.expires_at <= now]:
            self._remove(session_id, notify=True)
        self._sweep_later()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.entries.clear()


class OverviewFeed:
    """The overview's sockets, and the coalesced changes of every session they get."""

    def __init__(self, metrics: EdgeMetrics, throttle_s: float) -> None:
        self.peers: set[Peer] = set()
        self._metrics = metrics
        self._throttle_s = throttle_s
        # Alive while a socket is: lanes per session cost memory only while someone watches.
        self._throttle: SessionThrottle | None = None

    def join(self, peer: Peer) -> None:
        if self._throttle is None:
            self._throttle = SessionThrottle(
                self._throttle_s,
                self._broadcast,
                on_coalesced=self._metrics.frames_coalesced.inc,
                on_stale=self._metrics.stale_dropped.inc,
            )
        self.peers.add(peer)

    def leave(self, peer: Peer) -> None:
        self.peers.discard(peer)
        if not self.peers and self._throttle is not None:
            self._throttle.close()
            self._throttle = None

    def changed(self, session_id: str, revision: int, data: bytes) -> None:
        if self._throttle is not None:
            self._throttle.offer(session_id, revision, envelope(CONTEXT_KIND, session_id, data))

    def removed(self, session_id: str) -> None:
        if self._throttle is None:
            return
        # A change still waiting for its interval must not follow the removal.
        self._throttle.forget(session_id)
        self._broadcast(session_id, removed_frame(session_id))

    def _broadcast(self, session_id: str, frame: bytes) -> None:
        # Framed once for every overview socket; the revision was checked by the throttle (sockets keep none).
        wire = text_frame(frame)
        sent_now = sum(peer.offer(session_id, wire) for peer in self.peers)
        if sent_now:
            self._metrics.frames_sent.inc(sent_now)

    def close(self) -> None:
        if self._throttle is not None:
            self._throttle.close()
            self._throttle = None


class Overview:
    """The index and the feed of one edge."""

    def __init__(self, reader: StateReader, settings: Settings, metrics: EdgeMetrics) -> None:
        self.feed = OverviewFeed(metrics, settings.throttle_ms / 1000)
        self.index = SessionIndex(reader, settings, self.feed.changed, self.feed.removed)

    async def close(self) -> None:
        self.feed.close()
        await self.index.close()
