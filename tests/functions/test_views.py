"""The event envelope built around a view serialized once is byte for byte what the event models give."""

from __future__ import annotations

import json
import time

import pytest

from ctxmeter.settings import Settings
from schemas.models import ContextUpdateEvent, Encoding, TokenCountEvent
from schemas.state import ContextState, DraftState, context_event, context_usage, draft_event, token_usage

SETTINGS = Settings()


def _timestamp(frame: bytes) -> float:
    value = json.loads(frame)["timestamp"]
    assert isinstance(value, float)
    return value


@pytest.mark.parametrize("session_id", ["s", "session-1_A", "x" * 128])
@pytest.mark.parametrize(
    "state",
    [
        ContextState(used=0, total=200_000, updated_at="2026-01-01T00:00:00.000Z"),
        ContextState(
            used=2**53 - 1,
            total=128_000,
            model="gpt-4o",
            updated_at="2026-01-01T00:00:00.000Z",
            reserved=8_000,
            compact_at=100_000,
            estimated=True,
            compactions=3,
            compacted_at="2026-01-01T00:00:00.000Z",
        ),
    ],
)
def test_context_envelope_is_what_the_event_model_serializes(session_id: str, state: ContextState) -> None:
    usage = context_usage(session_id, state, 42, SETTINGS)
    for frame in (context_event(usage), context_event(usage, usage.model_dump_json().encode())):
        model = ContextUpdateEvent(session_id=session_id, data=usage, timestamp=_timestamp(frame))
        assert frame == model.model_dump_json().encode()
        assert ContextUpdateEvent.model_validate_json(frame, strict=True) == model


def test_draft_envelope_is_what_the_event_model_serializes() -> None:
    state = DraftState(
        count=12, max=8_000, model=None, encoding=Encoding.O200K_BASE, exact=True, updated_at="2026-01-01T00:00:00.000Z"
    )
    usage = token_usage("s1", state, 7, SETTINGS)
    frame = draft_event(usage)
    assert frame == TokenCountEvent(session_id="s1", data=usage, timestamp=_timestamp(frame)).model_dump_json().encode()


def test_timestamps_serialize_as_pydantic_does() -> None:
    usage = context_usage("s1", None, 0, SETTINGS)
    now = time.time()
    for offset in range(2_000):
        stamp = now + offset * 0.000_137
        expected = ContextUpdateEvent(session_id="s1", data=usage, timestamp=stamp).model_dump_json()
        assert expected.endswith(f'"timestamp":{stamp!r}}}')
