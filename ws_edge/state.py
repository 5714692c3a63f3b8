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

from ctxmeter.settings import Settings
from functions.views import context_usage, decode_context, decode_draft, token_usage
from schemas import subjects
from schemas.models import ContextUpdateEvent, TokenCountEvent

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
        context = context_usage(
            session_id, decode_context(_value(context_entry)), _revision(context_entry), self._settings
        )
        frames = [
            Frame(
                CONTEXT_KIND,
                context.revision,
                ContextUpdateEvent(session_id=session_id, data=context, timestamp=now).model_dump_json().encode(),
            )
        ]
        draft_state = decode_draft(_value(draft_entry))
        if draft_state is not None:
            draft = token_usage(session_id, draft_state, _revision(draft_entry), self._settings)
            frames.append(
                Frame(
                    TOKENS_KIND,
                    draft.revision,
                    TokenCountEvent(session_id=session_id, data=draft, timestamp=now).model_dump_json().encode(),
                )
            )
        return frames


async def _get(kv: KeyValue, key: str) -> KeyValue.Entry | None:
    try:
        return await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        # Also a deleted or purged key (its TTL passed): no state.
        return None


def _value(entry: KeyValue.Entry | None) -> bytes | None:
    return entry.value if entry is not None else None


def _revision(entry: KeyValue.Entry | None) -> int:
    return (entry.revision or 0) if entry is not None else 0
