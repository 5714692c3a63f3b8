"""Session state in a JetStream KV bucket: compare-and-set updates, then an event per change."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from ctxmeter.bucket import read_entry
from ctxmeter.limits import CAS_BACKOFF_BASE_S, CAS_BACKOFF_CAP_S, CAS_MAX_ATTEMPTS, REVISION_CACHE_SIZE
from ctxmeter.settings import Settings
from functions.errors import Conflict
from functions.kvwriter import KvCasWriter, WrongRevision
from functions.metrics import FunctionsMetrics
from schemas import subjects
from schemas.models import ContextUsage, TokenUsage
from schemas.state import (
    ContextState,
    DraftState,
    context_event,
    context_usage,
    decode_context,
    draft_event,
    token_usage,
)

log = logging.getLogger(__name__)

ContextChange = Callable[[ContextState | None], ContextState]


class SessionStore:
    def __init__(
        self, nc: NATS, kv: KeyValue, writer: KvCasWriter, settings: Settings, metrics: FunctionsMetrics
    ) -> None:
        self._nc = nc
        self._metrics = metrics
        self._kv = kv
        self._writer = writer
        self._settings = settings
        self._known: OrderedDict[str, tuple[ContextState, int]] = OrderedDict()
        # Changes waiting for the session's next write, and the tasks writing them.
        self._pending: dict[str, list[tuple[ContextChange, asyncio.Future[ContextUsage]]]] = {}
        self._writers: set[asyncio.Task[None]] = set()

    @property
    def settings(self) -> Settings:
        return self._settings

    # -- context ----------------------------------------------------------------------------

    async def read_context(self, session_id: str) -> ContextUsage:
        state, revision = await self._read_context_state(session_id)
        return context_usage(session_id, state, revision, self._settings)

    async def update_context(self, session_id: str, change: ContextChange) -> ContextUsage:
        """Apply ``change`` atomically and publish the event; returns the state it was committed in.

        Changes to one session that arrive while a write for it is in flight are committed together
        in the next write (group commit): one compare-and-set and one event for the batch, each caller
        answered with the state that includes its change. Writers in other processes are handled by
        the compare-and-set itself.
        """
        batch = self._pending.get(session_id)
        if batch is not None:
            waiter: asyncio.Future[ContextUsage] = asyncio.get_running_loop().create_future()
            batch.append((change, waiter))
            return await waiter
        # Uncontended: commit in the caller's own task, with no hand-off.
        self._pending[session_id] = []
        try:
            return await self._commit([change], session_id)
        finally:
            self._hand_off(session_id)

    def _hand_off(self, session_id: str) -> None:
        """After a write: commit what queued up meanwhile in a task of its own, or close the batch."""
        if not self._pending.get(session_id):
            self._pending.pop(session_id, None)
            return
        task = asyncio.create_task(self._commit_queued(session_id))
        self._writers.add(task)
        task.add_done_callback(self._writers.discard)

    async def _commit_queued(self, session_id: str) -> None:
        while batch := self._pending.get(session_id):
            self._pending[session_id] = []
            try:
                usage = await self._commit([change for change, _ in batch], session_id)
            except Exception as error:
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(error)
            else:
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_result(usage)
        self._pending.pop(session_id, None)

    async def _commit(self, changes: list[ContextChange], session_id: str) -> ContextUsage:
        """Compare-and-set the changes in order, retried with jittered backoff on conflict."""
        key = subjects.context_key(session_id)
        cached = self._known.get(session_id)
        for attempt in range(CAS_MAX_ATTEMPTS):
            if cached is None:
                current, revision = await self._read_context_state(session_id)
            else:
                current, revision = cached
            new_state: ContextState | None = current
            for change in changes:
                new_state = change(new_state)
            assert new_state is not None
            payload = new_state.model_dump_json().encode()
            try:
                new_revision = await self._writer.write(key, payload, revision)
            except WrongRevision:
                self._metrics.cas_retries.inc()
                # Another process wrote first. Re-reading gives its revision; back off only when
                # that keeps happening, so a plain stale cache costs a single extra read.
                cached = None
                self._known.pop(session_id, None)
                if attempt:
                    await asyncio.sleep(_backoff(attempt))
                continue
            self._remember(session_id, new_state, new_revision)
            usage = context_usage(session_id, new_state, new_revision, self._settings)
            await self._nc.publish(subjects.events(session_id), context_event(usage))
            self._metrics.events.inc()
            return usage
        self._metrics.conflicts.inc()
        raise Conflict(f"session {session_id} changed concurrently {CAS_MAX_ATTEMPTS} times; retry")

    async def _read_context_state(self, session_id: str) -> tuple[ContextState | None, int]:
        """The stored state and the revision a compare-and-set must expect: a deleted or purged key has
        no state, at the revision of the marker it left."""
        entry = await read_entry(self._kv, subjects.context_key(session_id))
        revision = entry.revision
        if entry.value is None:
            self._known.pop(session_id, None)
            return None, revision
        state = decode_context(entry.value)
        if state is None:
            # Unreadable (written by hand?): the next change replaces it, at its revision.
            log.warning("unreadable context state", extra={"session_id": session_id})
            return None, revision
        self._remember(session_id, state, revision)
        return state, revision

    def _remember(self, session_id: str, state: ContextState, revision: int) -> None:
        self._known[session_id] = (state, revision)
        self._known.move_to_end(session_id)
        while len(self._known) > REVISION_CACHE_SIZE:
            self._known.popitem(last=False)

    # -- drafts -----------------------------------------------------------------------------

    async def put_draft(self, session_id: str, state: DraftState) -> TokenUsage:
        """A draft count is a snapshot: the last write wins, and its revision orders the events."""
        revision = await self._kv.put(subjects.tokens_key(session_id), state.model_dump_json().encode())
        usage = token_usage(session_id, state, revision, self._settings)
        await self._nc.publish(subjects.events(session_id), draft_event(usage))
        self._metrics.events.inc()
        return usage


def _backoff(attempt: int) -> float:
    """Full jitter: a random wait up to an exponentially growing, capped bound."""
    return random.uniform(0, min(CAS_BACKOFF_CAP_S, CAS_BACKOFF_BASE_S * 2**attempt))
