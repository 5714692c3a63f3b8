"""What is stored per session, and the replies built from it: one definition for functions and edge."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ctxmeter.settings import Settings
from functions.levels import context_level, draft_level, percentage
from schemas.models import ContextUsage, Encoding, TokenUsage


class ContextState(BaseModel):
    """What is stored under ``context.<sid>``; the revision comes from the KV entry."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    used: int
    total: int
    model: str | None = None
    updated_at: str


class DraftState(BaseModel):
    """What is stored under ``tokens.<sid>``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    count: int
    max: int
    model: str | None
    encoding: Encoding
    exact: bool
    updated_at: str


StoredT = TypeVar("StoredT", ContextState, DraftState)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _decode(model: type[StoredT], value: bytes | None) -> StoredT | None:
    """The stored value, or None when absent or unreadable (the next change replaces it)."""
    if not value:
        return None
    try:
        return model.model_validate_json(value)
    except ValidationError:
        return None


def decode_context(value: bytes | None) -> ContextState | None:
    return _decode(ContextState, value)


def decode_draft(value: bytes | None) -> DraftState | None:
    return _decode(DraftState, value)


def context_usage(session_id: str, state: ContextState | None, revision: int, settings: Settings) -> ContextUsage:
    """The reply for a session's context; the zero state with the default window when none is stored."""
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


def token_usage(session_id: str, state: DraftState, revision: int, settings: Settings) -> TokenUsage:
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
        revision=revision,
        updated_at=state.updated_at,
    )
