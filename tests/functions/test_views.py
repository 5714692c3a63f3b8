"""The event envelope built around a view serialized once is byte for byte what the event models give."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxmeter.settings import Settings
from schemas.models import (
    ContextUpdateEvent,
    ContextUsage,
    Encoding,
    HistoryOp,
    HistoryPoint,
    TokenCountEvent,
    WindowSource,
)
from schemas.state import (
    ContextState,
    DraftState,
    context_event,
    context_level,
    context_usage_json,
    draft_event,
    history_point,
    history_point_json,
    percentage,
    token_usage,
    utc_now,
)

SETTINGS = Settings()


def context_usage(session_id: str, state: ContextState | None, revision: int, rules: Settings) -> ContextUsage:
    """The view as a model: what clients read back (strictly validated)."""
    return ContextUsage.model_validate_json(context_usage_json(session_id, state, revision, rules), strict=True)


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
    frame = context_event(session_id, context_usage_json(session_id, state, 42, SETTINGS))
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


@given(
    used=st.integers(0, 2**53 - 1),
    total=st.integers(1, 10_000_000),
    reserved=st.integers(0, 10_000_000),
    compact_at=st.none() | st.integers(1, 10_000_000),
    model=st.none() | st.text(min_size=1, max_size=128),
    reasoning=st.none() | st.integers(0, 2**53 - 1),
    window=st.none() | st.sampled_from(WindowSource),
    op=st.sampled_from(HistoryOp),
    revision=st.integers(0, 2**63),
    updated_at=st.just("2026-01-01T00:00:00.000Z") | st.text(max_size=40),
    compactions=st.integers(0, 2**53 - 1),
    compacted_at=st.none() | st.text(max_size=40),
)
def test_views_built_without_validation_are_the_validated_views(
    used: int,
    total: int,
    reserved: int,
    compact_at: int | None,
    model: str | None,
    reasoning: int | None,
    window: WindowSource | None,
    op: HistoryOp,
    revision: int,
    updated_at: str,
    compactions: int,
    compacted_at: str | None,
) -> None:
    # The views skip validation (their inputs are a validated state): what they serialize must be what a
    # validated model of the same fields serializes, and must validate strictly.
    reserved = min(reserved, total - 1)
    state = ContextState(
        used=used, total=total, reserved=reserved, compact_at=compact_at, model=model, reasoning=reasoning,
        window=window, op=op, updated_at=updated_at, estimated=used % 2 == 0, compactions=compactions,
        compacted_at=compacted_at,
    )  # fmt: skip
    for view, kind in (
        (context_usage("s1", state, revision, SETTINGS), ContextUsage),
        (history_point(state, revision), HistoryPoint),
    ):
        data = view.model_dump_json()
        validated = kind.model_validate_json(data, strict=True)
        assert validated.model_dump_json() == data
        assert kind(**view.model_dump()).model_dump_json() == data
    assert history_point_json(state, revision) == history_point(state, revision).model_dump_json().encode()
    data = context_usage_json("s1", state, revision, SETTINGS)
    assert data == ContextUsage.model_validate_json(data, strict=True).model_dump_json().encode()
    # Each field is the state's, or what the contract derives from it (docs/functions.md).
    threshold = min(state.compact_at, max(1, total - reserved)) if compact_at is not None else max(1, total - reserved)
    assert ContextUsage.model_validate_json(data) == ContextUsage(
        session_id="s1", used=used, total=total, percentage=percentage(used, total),
        level=context_level(percentage(used, threshold), SETTINGS), model=model, revision=revision,
        updated_at=updated_at, reserved=reserved, compact_at=threshold, left=max(0, threshold - used),
        estimated=used % 2 == 0, compactions=compactions, compacted_at=compacted_at, reasoning=reasoning,
        window_source=window or state.window_source(SETTINGS.default_context_window),
    )  # fmt: skip


def test_the_zero_state_serializes_as_its_view() -> None:
    data = context_usage_json("s1", None, 7, SETTINGS)
    usage = ContextUsage.model_validate_json(data, strict=True)
    assert (usage.used, usage.total, usage.revision, usage.window_source) == (
        0,
        SETTINGS.default_context_window,
        7,
        WindowSource.DEFAULT,
    )
    assert data == usage.model_dump_json().encode()


@given(limit=st.integers(1, 2**53 - 1), share=st.fractions(0, 1) | st.integers(1, 3))
def test_percentages_are_the_exact_ratio_rounded_half_to_even(limit: int, share: Fraction | int) -> None:
    count = int(limit * share)
    assert percentage(count, limit) == (100.0 if count >= limit else float(round(Fraction(count * 100, limit), 2)))


def test_a_percentage_tie_rounds_to_even_not_by_the_floats_error() -> None:
    # 0.005 % and 0.015 %: ties; as floats 0.005 is a little above and 0.015 a little below.
    assert (percentage(1, 20_000), percentage(3, 20_000), percentage(1, 3)) == (0.0, 0.02, 33.33)


def test_utc_now_is_rfc3339_to_the_millisecond_and_follows_the_clock() -> None:
    before = datetime.now(UTC)
    stamps = [utc_now() for _ in range(2_000)]
    after = datetime.now(UTC)
    for stamp in stamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= parsed <= after
    assert stamps == sorted(stamps)
