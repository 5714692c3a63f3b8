"""A session's current state, read straight from the KV bucket, as the frames a new socket gets first.

Reading the bucket (one get per key) rather than asking the functions keeps socket opens working, and
cheap, while the functions restart; the views match the functions' own (same levels and zero state).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ValidationError

from ctxmeter.settings import Settings
from functions.levels import context_level, draft_level, percentage
from functions.store import ContextState, DraftState, utc_now
from schemas import subjects
from schemas.models import ContextUpdateEvent, ContextUsage, TokenCountEvent, TokenUsage

CONTEXT_KIND = "context_update"
TOKENS_KIND = "token_count"


class StateUnavailable(Exception):
    """The bucket cannot be read right now (NATS down, JetStream not ready, no bucket yet)."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: str
    revision: int
    data: bytes


class StateReader:
    def __init__(self, js: JetStreamContext, settings: Settings) -> None:
        self._js = js
        self._settings = settings
        self._kv: KeyValue | None = None
        self._binding = asyncio.Lock()

    async def _bucket(self) -> KeyValue:
        if self._kv is not None:
            return self._kv
        async with self._binding:
            if self._kv is None:
                # The functions create the bucket; binding lazily lets the edge start before them.
                self._kv = await self._js.key_value(self._settings.kv_bucket)
        return self._kv

    async def snapshot(self, session_id: str) -> list[Frame]:
        """The context frame (zero state when none is stored), then the draft frame when one is stored."""
        try:
            kv = await self._bucket()
            context_entry, draft_entry = await asyncio.gather(
                _get(kv, subjects.context_key(session_id)), _get(kv, subjects.tokens_key(session_id))
            )
        except (nats.errors.Error, TimeoutError) as error:
            raise StateUnavailable(f"{type(error).__name__}: {error}") from error
        now = time.time()
        context = self._context_usage(session_id, context_entry)
        frames = [
            Frame(
                CONTEXT_KIND,
                context.revision,
                ContextUpdateEvent(session_id=session_id, data=context, timestamp=now).model_dump_json().encode(),
            )
        ]
        draft = self._token_usage(session_id, draft_entry)
        if draft is not None:
            frames.append(
                Frame(
                    TOKENS_KIND,
                    draft.revision,
                    TokenCountEvent(session_id=session_id, data=draft, timestamp=now).model_dump_json().encode(),
                )
            )
        return frames

    def _context_usage(self, session_id: str, entry: KeyValue.Entry | None) -> ContextUsage:
        settings = self._settings
        state: ContextState | None = None
        revision = 0
        if entry is not None and entry.value is not None:
            revision = entry.revision or 0
            try:
                state = ContextState.model_validate_json(entry.value)
            except ValidationError:
                state = None  # the functions replace an unreadable value on the next change
        if state is None:
            state = ContextState(used=0, total=settings.default_context_window, updated_at=utc_now())
        percent = percentage(state.used, state.total)
        return ContextUsage(
            session_id=session_id,
            used=state.used,
            total=state.total,
            percentage=percent,
            level=context_level(percent, settings),
            model=state.model,
            revision=revision,
            updated_at=state.updated_at,
        )

    def _token_usage(self, session_id: str, entry: KeyValue.Entry | None) -> TokenUsage | None:
        if entry is None or entry.value is None:
            return None
        try:
            state = DraftState.model_validate_json(entry.value)
        except ValidationError:
            return None
        settings = self._settings
        percent = percentage(state.count, state.max)
        return TokenUsage(
            session_id=session_id,
            count=state.count,
            max=state.max,
            percentage=percent,
            warning=percent >= settings.warning_percent,
            level=draft_level(percent, settings),
            model=state.model,
            encoding=state.encoding,
            exact=state.exact,
            revision=entry.revision or 0,
            updated_at=state.updated_at,
        )


async def _get(kv: KeyValue, key: str) -> KeyValue.Entry | None:
    try:
        return await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        # Also a deleted or purged key (its TTL passed): no state.
        return None
