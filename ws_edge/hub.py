"""Session → local sockets, and the NATS subscription each session holds while it has any.

An edge subscribes to ``ctxmeter.events.<sid>`` when a session's first local socket joins and
unsubscribes when its last one leaves, so each edge behind a load balancer carries only its own
sessions' traffic. Events arrive in the subscription callback, are checked, coalesced per session
(``SessionThrottle``) and handed to each socket's writer (``Peer.offer``) without awaiting any socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Coroutine
from typing import Any, Final

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from schemas import subjects
from ws_edge.metrics import EdgeMetrics
from ws_edge.peer import Peer, text_frame
from ws_edge.state import CONTEXT_KIND, TOKENS_KIND, Frame, StateReader, StateUnavailable
from ws_edge.throttle import SessionThrottle

log = logging.getLogger(__name__)

EVENT_KINDS: Final = frozenset({CONTEXT_KIND, TOKENS_KIND})

# Sessions re-read at once after a NATS reconnect: bounded, so thousands of sessions do not flood
# JetStream with reads the moment it comes back.
RESYNC_CONCURRENCY: Final = 32
# Right after a nats-server restart JetStream may still be recovering its streams; retry the read.
RESYNC_ATTEMPTS: Final = 20
RESYNC_RETRY_S: Final = 0.25


def parse_event(data: bytes, session_id: str) -> tuple[str, int] | None:
    """(kind, revision) of a well-formed event for ``session_id``, else None.

    The frame itself is relayed as published, so only the fields the edge acts on are checked; a
    message that claims another session is dropped, never relayed.
    """
    try:
        event = json.loads(data)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    kind = event.get("type")
    payload = event.get("data")
    if kind not in EVENT_KINDS or event.get("session_id") != session_id or not isinstance(payload, dict):
        return None
    revision = payload.get("revision")
    if type(revision) is not int or revision < 0:
        return None
    return str(kind), revision


class Session:
    def __init__(self, session_id: str, throttle_s: float, metrics: EdgeMetrics) -> None:
        self.session_id = session_id
        self.peers: set[Peer] = set()
        self.subscription: Subscription | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._metrics = metrics
        self.throttle = SessionThrottle(
            throttle_s,
            self.broadcast,
            on_coalesced=metrics.frames_coalesced.inc,
            on_stale=metrics.stale_dropped.inc,
        )

    def broadcast(self, kind: str, revision: int, frame: bytes) -> None:
        wire = text_frame(frame)  # framed once for all of the session's sockets
        sent_now = sum(peer.offer(kind, revision, frame, wire) for peer in self.peers)
        if sent_now:
            self._metrics.frames_sent.inc(sent_now)

    async def on_message(self, msg: Msg) -> None:
        parsed = parse_event(msg.data, self.session_id)
        if parsed is None:
            self._metrics.bad_events.inc()
            log.warning("dropped a malformed event", extra={"subject": msg.subject, "session_id": self.session_id})
            return
        kind, revision = parsed
        self.throttle.offer(kind, revision, msg.data)


class Hub:
    def __init__(self, nc: NATS, reader: StateReader, metrics: EdgeMetrics, *, throttle_s: float) -> None:
        self._nc = nc
        self._reader = reader
        self._metrics = metrics
        self._throttle_s = throttle_s
        self._sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def sessions(self) -> dict[str, Session]:
        return self._sessions

    def peers(self) -> list[Peer]:
        return [peer for session in self._sessions.values() for peer in session.peers]

    async def join(self, peer: Peer) -> None:
        """Add ``peer`` to its session, subscribing first when it is the session's first local socket."""
        session = self._sessions.get(peer.session_id)
        if session is None:
            session = Session(peer.session_id, self._throttle_s, self._metrics)
            self._sessions[peer.session_id] = session
            self._metrics.sessions.set(len(self._sessions))
            self._spawn(self._subscribe(session))
        session.peers.add(peer)
        try:
            await asyncio.shield(session.ready)
        except BaseException:
            self._remove(session, peer)
            raise

    async def _subscribe(self, session: Session) -> None:
        try:
            session.subscription = await self._nc.subscribe(subjects.events(session.session_id), cb=session.on_message)
        except Exception as error:
            if not session.ready.done():
                session.ready.set_exception(error)
            # Joiners see the error through ``ready``; this marks it retrieved for the loop's report.
            session.ready.exception()
            return
        if not session.ready.done():
            session.ready.set_result(None)

    def leave(self, peer: Peer) -> None:
        session = self._sessions.get(peer.session_id)
        if session is not None:
            self._remove(session, peer)

    def _remove(self, session: Session, peer: Peer) -> None:
        session.peers.discard(peer)
        if session.peers or self._sessions.get(session.session_id) is not session:
            return
        del self._sessions[session.session_id]
        self._metrics.sessions.set(len(self._sessions))
        session.throttle.close()
        self._spawn(self._unsubscribe(session))

    async def _unsubscribe(self, session: Session) -> None:
        # Wait for the subscribe this session started, so it is never left behind. A connection that
        # is already gone has no subscription left to remove: nothing to report.
        with contextlib.suppress(Exception):
            await asyncio.shield(session.ready)
        if session.subscription is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await session.subscription.unsubscribe()

    async def snapshot(self, session_id: str) -> list[Frame]:
        return await self._reader.snapshot(session_id)

    # -- NATS reconnect ---------------------------------------------------------------------

    def on_reconnected(self) -> None:
        """nats-py re-sends every live SUB itself before this runs; events published while the
        connection was down are lost, so every socket gets its session's current state again."""
        self._spawn(self.resync())

    async def resync(self) -> None:
        limit = asyncio.Semaphore(RESYNC_CONCURRENCY)

        async def one(session: Session) -> None:
            async with limit:
                frames = await self._read_retrying(session.session_id)
            if frames is None or self._sessions.get(session.session_id) is not session:
                return
            for frame in frames:
                session.throttle.offer(frame.kind, frame.revision, frame.data)

        await asyncio.gather(*(one(session) for session in list(self._sessions.values())))

    async def _read_retrying(self, session_id: str) -> list[Frame] | None:
        for _ in range(RESYNC_ATTEMPTS):
            try:
                return await self._reader.snapshot(session_id)
            except StateUnavailable:
                await asyncio.sleep(RESYNC_RETRY_S)
        log.warning("could not re-read a session's state after reconnecting", extra={"session_id": session_id})
        return None

    # -- lifecycle --------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for session in self._sessions.values():
            session.throttle.close()
        self._sessions.clear()
        self._metrics.sessions.set(0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
