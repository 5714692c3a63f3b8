"""Session → local sockets, and the NATS subscription each session holds while it has any.

An edge subscribes to ``ctxmeter.events.<sid>`` when a session's first local socket joins and
unsubscribes a moment after its last one leaves (a page reload does not resubscribe), so each edge
behind a load balancer carries only its own sessions' traffic. Events arrive in the subscription
callback, are validated against the event schema, ordered by revision and coalesced per session
(``SessionThrottle``, the one place revisions are compared) and handed, framed once, to each socket
(``Peer.offer``) without awaiting any socket. When an event older than the newest held arrives, the
session's state is read again: the bucket is the authority on revisions (``SessionThrottle.trust``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Annotated, Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import Field, TypeAdapter, ValidationError

from ctxmeter.limits import (
    RESYNC_ATTEMPTS,
    RESYNC_CONCURRENCY,
    RESYNC_RETRY_S,
    STATE_REUSE_S,
    SUBSCRIPTION_LINGER_S,
)
from schemas import subjects
from schemas.models import ContextUpdateEvent, TokenCountEvent
from ws_edge.metrics import EdgeMetrics
from ws_edge.peer import Peer, text_frame
from ws_edge.state import Frame, StateReader, StateUnavailable
from ws_edge.throttle import SessionThrottle

log = logging.getLogger(__name__)

_EVENT: TypeAdapter[ContextUpdateEvent | TokenCountEvent] = TypeAdapter(
    Annotated[ContextUpdateEvent | TokenCountEvent, Field(discriminator="type")]
)


def parse_event(data: bytes, session_id: str) -> tuple[str, int] | None:
    """(kind, revision) of a valid event for ``session_id``, else None.

    The whole event is checked against the schema the functions publish, so what reaches a browser is
    always a well-formed frame; one that claims another session is dropped, never relayed.
    """
    try:
        event = _EVENT.validate_json(data, strict=True)
    except ValidationError:
        return None
    if event.session_id != session_id or event.data.session_id != session_id:
        return None
    return event.type, event.data.revision


class Session:
    def __init__(self, session_id: str, throttle_s: float, metrics: EdgeMetrics, reader: StateReader) -> None:
        self.session_id = session_id
        self.peers: set[Peer] = set()
        self.subscription: Subscription | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.linger: asyncio.TimerHandle | None = None
        self._metrics = metrics
        self._reader = reader
        self.throttle = SessionThrottle(
            throttle_s,
            self.broadcast,
            on_coalesced=metrics.frames_coalesced.inc,
            on_stale=metrics.stale_dropped.inc,
            on_reset=metrics.revisions_reset.inc,
        )
        self._checking: asyncio.Task[None] | None = None
        # Loop time when the newest bucket read taken into the throttle began (reads begin after the
        # subscription is live), or None: until STATE_REUSE_S later, the throttle holds the session's state.
        self.read_at: float | None = None

    def broadcast(self, kind: str, frame: bytes) -> None:
        wire = text_frame(frame)  # framed once for all of the session's sockets
        sent_now = sum(peer.offer(kind, wire) for peer in self.peers)
        if sent_now:
            self._metrics.frames_sent.inc(sent_now)

    async def on_message(self, msg: Msg) -> None:
        parsed = parse_event(msg.data, self.session_id)
        if parsed is None:
            self._metrics.bad_events.inc()
            log.warning("dropped an invalid event", extra={"subject": msg.subject, "session_id": self.session_id})
            return
        kind, revision = parsed
        if not self.throttle.offer(kind, revision, msg.data):
            self._check_revisions()

    def open(self, peer: Peer, state: list[Frame]) -> None:
        """Send ``peer`` its first state (the bucket's, or newer), then every frame after it."""
        peer.open_with([text_frame(frame) for frame in self.throttle.first_state(state)])

    def _check_revisions(self) -> None:
        if self._checking is None or self._checking.done():
            self._checking = asyncio.create_task(self._read_and_trust())

    async def _read_and_trust(self) -> None:
        try:
            frames = await self._reader.snapshot(self.session_id)
        except StateUnavailable as unavailable:
            log.warning("could not check revisions: %s", unavailable, extra={"session_id": self.session_id})
            return
        self.throttle.trust(frames)

    def close(self) -> None:
        self.throttle.close()
        if self.linger is not None:
            self.linger.cancel()
        if self._checking is not None:
            self._checking.cancel()


class Hub:
    def __init__(self, nc: NATS, reader: StateReader, metrics: EdgeMetrics, *, throttle_s: float) -> None:
        self._nc = nc
        self._reader = reader
        self._metrics = metrics
        self._throttle_s = throttle_s
        self._sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Loop time of the last reconnect to NATS: a read begun before it is not reused (events were lost).
        self._reconnected_at = float("-inf")

    async def join(self, peer: Peer) -> None:
        """Add ``peer`` to its session, subscribing first when it is the session's first local socket."""
        session = self._sessions.get(peer.session_id)
        if session is None:
            session = Session(peer.session_id, self._throttle_s, self._metrics, self._reader)
            self._sessions[peer.session_id] = session
            self._metrics.sessions.set(len(self._sessions))
            self._spawn(self._subscribe(session))
        elif session.linger is not None:
            session.linger.cancel()
            session.linger = None
        session.peers.add(peer)
        try:
            if session.ready.done():
                session.ready.result()  # its error, if the subscribe failed; no shield for every socket
            else:
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
            # A failed subscription is not kept for the next socket to find.
            if self._sessions.get(session.session_id) is session:
                self._drop(session)
            return
        if not session.ready.done():
            session.ready.set_result(None)

    def leave(self, peer: Peer) -> None:
        session = self._sessions.get(peer.session_id)
        if session is not None:
            self._remove(session, peer)

    def _remove(self, session: Session, peer: Peer) -> None:
        session.peers.discard(peer)
        if session.peers or self._sessions.get(session.session_id) is not session or session.linger is not None:
            return
        if session.ready.done() and session.ready.exception() is not None:
            self._drop(session)
            return
        session.linger = asyncio.get_running_loop().call_later(SUBSCRIPTION_LINGER_S, self._expire, session)

    def _expire(self, session: Session) -> None:
        session.linger = None
        if not session.peers and self._sessions.get(session.session_id) is session:
            self._drop(session)

    def _drop(self, session: Session) -> None:
        del self._sessions[session.session_id]
        self._metrics.sessions.set(len(self._sessions))
        session.close()
        self._spawn(self._unsubscribe(session))

    async def _unsubscribe(self, session: Session) -> None:
        # Wait for the subscribe this session started, so it is never left behind. A connection that
        # is already gone has no subscription left to remove: nothing to report.
        with contextlib.suppress(Exception):
            await asyncio.shield(session.ready)
        if session.subscription is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await session.subscription.unsubscribe()

    async def open(self, peer: Peer) -> None:
        """Send a joined ``peer`` its session's state: read after subscribing, so no change falls between;
        or, within ``STATE_REUSE_S`` of such a read, what the session holds (that read and every event since)."""
        session = self._sessions.get(peer.session_id)
        now = asyncio.get_running_loop().time()
        if (
            session is not None
            and session.read_at is not None
            and now - session.read_at < STATE_REUSE_S
            and self._nc.is_connected
        ):
            self._metrics.state_reused.inc()
            session.open(peer, [])
            return
        state = await self._reader.snapshot(peer.session_id)
        session = self._sessions.get(peer.session_id)
        if session is not None and peer in session.peers:
            session.open(peer, state)
            if now > self._reconnected_at:
                session.read_at = now if session.read_at is None else max(session.read_at, now)

    # -- NATS reconnect ---------------------------------------------------------------------

    def on_reconnected(self) -> None:
        """nats-py re-sends every live SUB itself before this runs; events published while the
        connection was down are lost, so every socket gets its session's current state again (and no
        new socket gets what a session held from before)."""
        self._reconnected_at = asyncio.get_running_loop().time()
        for session in self._sessions.values():
            session.read_at = None
        self._spawn(self.resync())

    async def resync(self) -> None:
        limit = asyncio.Semaphore(RESYNC_CONCURRENCY)

        async def one(session: Session) -> None:
            async with limit:
                frames = await self._read_retrying(session.session_id)
            if frames is not None and self._sessions.get(session.session_id) is session:
                session.throttle.trust(frames)

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
            session.close()
        self._sessions.clear()
        self._metrics.sessions.set(0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
