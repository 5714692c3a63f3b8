"""Session state in a JetStream KV bucket: compare-and-set updates, then an event and a history point.

Keys ``context.<sid>`` and ``tokens.<sid>`` in the bucket; events on ``ctxmeter.events.<sid>``; history
points on ``ctxmeter.history.<bucket>.<sid>``.

One change, top to bottom (``functions/context.py`` says what each operation does to a state; this module
commits it):

1. ``update_context``: join the session's batch if a write for it is in flight (group commit), else
   commit now;
2. ``_commit``: take the last known (state, revision), from the cache or the bucket;
3. ``_apply``: each change of the batch in order: a duplicate key or an older observed time is a no-op,
   a key beyond the window is refused, else the change; the keys applied are kept with the state
   (``functions/idempotency.py`` says how a key is kept and for how long);
4. ``_commit``: the compare-and-set write (``functions/kvwriter.py``), retried on a conflict, and on an
   unknown outcome only when the state shows the write did not land;
5. ``_announce``: the event and the history point of the committed state.

Every change to a session's context is a compare-and-set on the key's revision, so changes from any
number of processes are never lost. Idempotency keys are checked against the state being replaced and
stored with it, in the same write.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from ctxmeter.bucket import read_entry
from ctxmeter.limits import CAS_BACKOFF_BASE_S, CAS_BACKOFF_CAP_S, CAS_MAX_ATTEMPTS, REVISION_CACHE_SIZE
from ctxmeter.settings import Settings
from functions.errors import Conflict, CtxmeterError, Internal, StoreFull
from functions.history import History
from functions.idempotency import KeyEntry, digest, has_room, remember, seen, window_full
from functions.kvwriter import KvCasWriter, KvWriteTimeout, NoRoom, WrongRevision
from functions.metrics import FunctionsMetrics
from schemas import subjects
from schemas.models import ContextHistory, TokenUsage
from schemas.state import (
    ContextState,
    DraftState,
    context_event,
    context_usage_json,
    decode_context,
    decode_draft,
    draft_event,
    history_point,
    history_point_json,
    token_usage,
)

log = logging.getLogger(__name__)

# Errors that mean JetStream did not answer (no stream leader during an election, a node gone):
# retried with backoff until the request's time is up.
UNAVAILABLE = (
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    KvWriteTimeout,
)


@dataclass(frozen=True, slots=True)
class Change:
    """One change to a session's context: what it does to the current state (None: nothing stored; the
        new state names its operation in ``op``) and the caller's idempotency key. ``apply`` raises a
        ``CtxmeterError`` when the change is invalid against the current state (then it alone is refused). A change
    with an ``observed`` time older than the newest one applied to the session is stale: a no-op."""

    apply: Callable[[ContextState | None], ContextState]
    key: str | None = None
    # When what it reports was observed (Unix ns): older than the state's ``observed_at``, it is stale.
    observed: int | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    """The state a change was committed in, as its ``ContextUsage`` serialized (the bytes the event
    carried, when there was one); ``duplicate`` when its key had been applied before, ``stale`` when it was
    observed before the newest change applied."""

    data: bytes
    duplicate: bool = False
    stale: bool = False


# What each change of a batch came to: applied, a duplicate, or its error.
_APPLIED = "applied"
_DUPLICATE = "duplicate"
_STALE = "stale"
Outcome = str | CtxmeterError
# A batch's outcomes and the state they leave, serialized (a ``ContextUsage``).
Results = tuple[list[Outcome], bytes]


class SessionStore:
    def __init__(
        self,
        nc: NATS,
        kv: KeyValue,
        writer: KvCasWriter,
        history: History,
        settings: Settings,
        metrics: FunctionsMetrics,
    ) -> None:
        self._nc = nc
        self._kv = kv
        self._writer = writer
        self._history = history
        self._settings = settings
        self._metrics = metrics
        self._known: OrderedDict[str, tuple[ContextState, int]] = OrderedDict()
        # Changes waiting for the session's next write, and the tasks writing them.
        self._pending: dict[str, list[tuple[Change, asyncio.Future[Committed]]]] = {}
        self._writers: set[asyncio.Task[None]] = set()
        # Tokens of this process's writes (see ``ContextState.write``): random once, then counted, so
        # a write costs no call to the system's random source.
        self._write_prefix = secrets.token_hex(6)
        self._write_count = itertools.count()

    @property
    def settings(self) -> Settings:
        return self._settings

    # -- reads ------------------------------------------------------------------------------

    async def read_context(self, session_id: str) -> bytes:
        """The session's ``ContextUsage``, serialized."""
        state, revision = await self._read_context_state(session_id)
        return context_usage_json(session_id, state, revision, self._settings)

    async def read_history(self, session_id: str, limit: int) -> ContextHistory:
        state, revision = await self._read_context_state(session_id)
        current = history_point(state, revision) if state is not None else None
        return await self._history.read(session_id, limit, current)

    # -- changes ----------------------------------------------------------------------------

    async def update_context(self, session_id: str, change: Change) -> Committed:
        """Apply ``change`` atomically and publish its event; returns the state it was committed in.

        Changes to one session that arrive while a write for it is in flight are committed together
        in the next write: one compare-and-set, one event and one history point for the batch, each
        caller answered with the state that includes its change. Writers in other processes are
        handled by the compare-and-set itself.
        """
        batch = self._pending.get(session_id)
        if batch is not None:
            waiter: asyncio.Future[Committed] = asyncio.get_running_loop().create_future()
            batch.append((change, waiter))
            return await waiter
        # Uncontended: commit in the caller's own task, with no hand-off.
        self._pending[session_id] = []
        try:
            return _result(await self._commit([change], session_id), 0)
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
                results = await self._commit([change for change, _ in batch], session_id)
            except Exception as error:
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(error)
                continue
            for index, (_, waiter) in enumerate(batch):
                if waiter.done():
                    continue
                try:
                    waiter.set_result(_result(results, index))
                except CtxmeterError as refused:
                    waiter.set_exception(refused)
        self._pending.pop(session_id, None)

    async def _commit(self, changes: list[Change], session_id: str) -> Results:
        """Compare-and-set the changes in order, retried with jittered backoff on conflict and while
        JetStream is unavailable (up to the request timeout)."""
        key = subjects.context_key(session_id)
        cached = self._known.get(session_id)
        deadline = time.monotonic() + self._settings.request_timeout
        conflicts = 0
        while True:
            if cached is None:
                try:
                    current, revision = await self._read_context_state(session_id)
                except UNAVAILABLE as unavailable:
                    await _wait_or_give_up(deadline, unavailable)
                    continue
            else:
                current, revision = cached
            outcomes, new_state, digests = self._apply(session_id, changes, current)
            if new_state is None:
                if cached is not None and (_DUPLICATE in outcomes or _STALE in outcomes):
                    # Nothing to write, and a no-op answers with the current state: read it fresh.
                    cached = None
                    continue
                return outcomes, context_usage_json(session_id, current, revision, self._settings)
            token = f"{self._write_prefix}{next(self._write_count):x}"
            new_state = new_state.model_copy(update={"keys": self._remember_keys(current, digests), "write": token})
            try:
                new_revision = await self._writer.write(key, new_state.model_dump_json().encode(), revision)
            except NoRoom as full:
                raise _store_full(full) from None
            except WrongRevision:
                # Another process wrote first. Re-reading gives its revision; back off only when that
                # keeps happening, so a plain stale cache costs a single extra read.
                self._metrics.cas_retries.inc()
                cached = None
                self._known.pop(session_id, None)
                conflicts += 1
                if conflicts >= CAS_MAX_ATTEMPTS:
                    self._metrics.conflicts.inc()
                    raise Conflict(
                        f"session {session_id} changed concurrently {CAS_MAX_ATTEMPTS} times; retry"
                    ) from None
                if conflicts > 1:
                    await asyncio.sleep(_backoff(conflicts))
                continue
            except UNAVAILABLE as unavailable:
                # The write may or may not have landed: the state itself tells (our token, or every
                # key of the batch), and a retry is then safe.
                self._known.pop(session_id, None)
                cached = None
                landed = await self._landed(session_id, token, digests)
                if landed is None:
                    await _wait_or_give_up(deadline, unavailable)
                    continue
                new_state, new_revision = landed
            self._remember(session_id, new_state, new_revision)
            return outcomes, await self._announce(session_id, new_state, new_revision)

    async def _announce(self, session_id: str, state: ContextState, revision: int) -> bytes:
        """Publish a committed state: its event for every watcher, and its point in the session's history
        (a plain publish each: the state is already safe in the bucket, and a history read ends with the
        state itself, so a point lost on the way loses nothing a reader sees as current)."""
        data = context_usage_json(session_id, state, revision, self._settings)
        await self._nc.publish(subjects.events(session_id), context_event(session_id, data))
        if self._settings.record_history:
            point = history_point_json(state, revision)
            await self._nc.publish(subjects.history(self._settings.kv_bucket, session_id), point)
        self._metrics.events.inc()
        return data

    def _apply(
        self, session_id: str, changes: list[Change], current: ContextState | None
    ) -> tuple[list[Outcome], ContextState | None, list[str]]:
        """Each change in order against ``current``: the outcomes, the new state (None when nothing
        applies) and the digests of the keys applied."""
        kept = current.keys if current is not None else ()
        applied_before = seen(kept)
        state, changed = current, False
        digests: list[str] = []
        outcomes: list[Outcome] = []
        window = self._settings.idempotency_window
        for change in changes:
            key_digest = digest(change.key) if change.key is not None else None
            if key_digest is not None and key_digest in applied_before:
                outcomes.append(_DUPLICATE)
                continue
            newest = state.observed_at if state is not None else None
            if change.observed is not None and newest is not None and change.observed < newest:
                outcomes.append(_STALE)
                continue
            if key_digest is not None and not has_room(kept, len(digests) + 1, window):
                self._metrics.keys_window_full.inc()
                outcomes.append(window_full(session_id, window))
                continue
            try:
                state = change.apply(state)
            except CtxmeterError as refused:
                outcomes.append(refused)
                continue
            if change.observed is not None:
                state = state.model_copy(update={"observed_at": max(change.observed, newest or 0)})
            changed = True
            outcomes.append(_APPLIED)
            if key_digest is not None:
                applied_before.add(key_digest)
                digests.append(key_digest)
        duplicates = outcomes.count(_DUPLICATE)
        if duplicates:
            self._metrics.duplicates.inc(duplicates)
        return outcomes, state if changed else None, digests

    async def _landed(self, session_id: str, token: str, digests: list[str]) -> tuple[ContextState, int] | None:
        """After a write whose outcome is unknown: the stored state if it holds that write, else None."""
        try:
            state, revision = await self._read_context_state(session_id)
        except Exception:
            return None
        if state is None:
            return None
        if state.write == token or (digests and set(digests) <= seen(state.keys)):
            return state, revision
        return None

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

    def _remember_keys(self, current: ContextState | DraftState | None, digests: list[str]) -> tuple[KeyEntry, ...]:
        return remember(current.keys if current else (), digests, self._settings.idempotency_window)

    def _remember(self, session_id: str, state: ContextState, revision: int) -> None:
        self._known[session_id] = (state, revision)
        self._known.move_to_end(session_id)
        while len(self._known) > REVISION_CACHE_SIZE:
            self._known.popitem(last=False)

    # -- drafts -----------------------------------------------------------------------------

    async def put_draft(self, session_id: str, state: DraftState, key: str | None) -> tuple[TokenUsage, bool]:
        """Store a draft count (a snapshot: the newest write wins, its revision orders the events) and
        publish it; ``(usage, duplicate)``. A compare-and-set, so that a retried draft whose key was
        applied is answered, never written over a newer draft."""
        kv_key = subjects.tokens_key(session_id)
        key_digest = digest(key) if key is not None else None
        for attempt in range(CAS_MAX_ATTEMPTS):
            entry = await read_entry(self._kv, kv_key)
            current = decode_draft(entry.value)
            if current is not None and key_digest is not None and key_digest in seen(current.keys):
                self._metrics.duplicates.inc()
                return token_usage(session_id, current, entry.revision, self._settings), True
            window = self._settings.idempotency_window
            if key_digest is not None and not has_room(current.keys if current else (), 1, window):
                self._metrics.keys_window_full.inc()
                raise window_full(session_id, window)
            kept = self._remember_keys(current, [key_digest] if key_digest else [])
            payload = state.model_copy(update={"keys": kept}).model_dump_json().encode()
            try:
                revision = await self._writer.write(kv_key, payload, entry.revision)
            except NoRoom as full:
                raise _store_full(full) from None
            except WrongRevision:
                self._metrics.cas_retries.inc()
                await asyncio.sleep(_backoff(attempt))
                continue
            usage = token_usage(session_id, state, revision, self._settings)
            await self._nc.publish(subjects.events(session_id), draft_event(usage))
            self._metrics.events.inc()
            return usage, False
        self._metrics.conflicts.inc()
        raise Conflict(f"the draft of session {session_id} changed concurrently {CAS_MAX_ATTEMPTS} times; retry")


def _store_full(full: NoRoom) -> StoreFull:
    return StoreFull(
        f"the state store has no room for this change (JetStream: {full}); room comes back as sessions expire"
    )


def _result(results: Results, index: int) -> Committed:
    outcomes, data = results
    outcome = outcomes[index]
    if isinstance(outcome, CtxmeterError):
        raise outcome
    return Committed(data, duplicate=outcome == _DUPLICATE, stale=outcome == _STALE)


async def _wait_or_give_up(deadline: float, unavailable: BaseException) -> None:
    """Back off before the next try while the request has time left; else answer ``internal``."""
    if time.monotonic() >= deadline:
        raise Internal(f"JetStream is unavailable ({type(unavailable).__name__}); retry") from None
    await asyncio.sleep(_backoff(CAS_MAX_ATTEMPTS))


def _backoff(attempt: int) -> float:
    """Full jitter: a random wait up to an exponentially growing, capped bound."""
    return random.uniform(0, min(CAS_BACKOFF_CAP_S, CAS_BACKOFF_BASE_S * 2**attempt))
