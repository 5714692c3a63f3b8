"""A session's current state, read straight from the KV bucket, as the frames a new socket gets first.

Reading the bucket (one get per key) rather than asking the functions keeps socket opens working, and
cheap, while the functions restart; the views are the functions' own (``schemas.state``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nats.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ctxmeter.bucket import read_entry
from ctxmeter.settings import Settings
from schemas import subjects
from schemas.state import (
    CONTEXT_KIND,
    TOKENS_KIND,
    context_event,
    context_usage_json,
    decode_context,
    decode_draft,
    draft_event,
    token_usage,
)


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

    async def bucket(self) -> KeyValue:
        """The bucket, bound on first use."""
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
            kv = await self.bucket()
            context_entry, draft_entry = await asyncio.gather(
                read_entry(kv, subjects.context_key(session_id)), read_entry(kv, subjects.tokens_key(session_id))
            )
        except (nats.errors.Error, TimeoutError) as error:
            raise StateUnavailable(f"{type(error).__name__}: {error}") from error
        # A deleted key reads as the zero state at its marker's revision: newer than what was deleted.
        context = context_usage_json(
            session_id, decode_context(context_entry.value), context_entry.revision, self._settings
        )
        frames = [Frame(CONTEXT_KIND, context_entry.revision, context_event(session_id, context))]
        draft_state = decode_draft(draft_entry.value)
        if draft_state is not None:
            draft = token_usage(session_id, draft_state, draft_entry.revision, self._settings)
            frames.append(Frame(TOKENS_KIND, draft.revision, draft_event(draft)))
        return frames
