"""What is stored per session, and the replies and events built from it.

The functions write this state and the edge reads it straight from the bucket for a socket's first
frames, so both build their views here: one definition of the zero state, the percentages and levels,
and the event envelope.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Final, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.models import (
    ContextLevel,
    Encoding,
    HistoryOp,
    HistoryPoint,
    TokenUsage,
    WindowSource,
)

PERCENT_DECIMALS: Final = 2
# A percentage in units of 10^-PERCENT_DECIMALS of a percent.
_PERCENT_UNITS: Final = 100 * 10**PERCENT_DECIMALS

# The event envelope's ``type`` per kind of state.
CONTEXT_KIND: Final = "context_update"
TOKENS_KIND: Final = "token_count"


class MeterRules(Protocol):
    """The settings the views depend on (``ctxmeter.settings.Settings`` satisfies it)."""

    @property
    def default_context_window(self) -> int: ...
    @property
    def warning_percent(self) -> float: ...
    @property
    def critical_percent(self) -> float: ...
    @property
    def draft_critical_percent(self) -> float: ...


class ContextState(BaseModel):
    """What is stored under ``context.<sid>``; the revision comes from the KV entry.

    Fields added since the first version have defaults, so state written before them still reads.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    used: int
    total: int
    model: str | None = None
    updated_at: str
    reserved: int = 0
    # The compaction threshold as set; None follows the window (total - reserved).
    compact_at: int | None = None
    estimated: bool = False
    compactions: int = 0
    compacted_at: str | None = None
    # (digest, Unix seconds) of the idempotency keys of the last changes, oldest first
    # (``functions.idempotency``).
    keys: tuple[tuple[str, int], ...] = ()
    # The change that made this state, and a token of the write that stored it: after a write whose
    # acknowledgement was lost, finding our token here says the write landed.
    op: HistoryOp = HistoryOp.SET
    write: str | None = None
    # The newest observed time (Unix ns) of the changes applied that stated one: an older one is stale.
    observed_at: int | None = None
    # Reasoning tokens of the last usage report (shown beside used), and the input side of that report (for
    # the rest of the response, an Anthropic message_delta, which lacks it).
    reasoning: int | None = None
    last_input: int | None = None
    # Where ``total`` comes from; None in state written before it was recorded (see ``window_source``).
    window: WindowSource | None = None

    def window_source(self, default_window: int) -> WindowSource:
        """Where ``total`` comes from; state written before this was recorded says so by its total alone."""
        if self.window is not None:
            return self.window
        return WindowSource.DEFAULT if self.total == default_window else WindowSource.REPORTED

    @property
    def threshold(self) -> int:
        """The used count at which the agent compacts: as set (never above total - reserved), else
        total - reserved."""
        ceiling = max(1, self.total - self.reserved)
        return ceiling if self.compact_at is None else min(self.compact_at, ceiling)


class DraftState(BaseModel):
    """What is stored under ``tokens.<sid>``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    count: int
    max: int
    model: str | None
    encoding: Encoding
    exact: bool
    updated_at: str
    # (digest, Unix seconds) of the idempotency keys of the last drafts, oldest first.
    keys: tuple[tuple[str, int], ...] = ()


StoredT = TypeVar("StoredT", ContextState, DraftState)


# The formatted second of the last ``utc_now`` call: every change stamps its time, and formatting a
# datetime took a tenth of a change's own work; within one second only the milliseconds differ.
_second: tuple[int, str] = (-1, "")


def utc_now() -> str:
    """Now in UTC, RFC 3339 to the millisecond (``2026-01-01T00:00:00.000Z``)."""
    global _second
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((now - second) * 1000):03d}Z"


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


# -- percentages and levels -------------------------------------------------------------------


def percentage(count: int, limit: int) -> float:
    """0-100 rounded to 2 decimals, half to even, from the exact ratio; a count over its limit shows as 100
    (the count itself is kept). In integers: ``round(x, 2)`` of a float took five times as long (two per
    change), and rounded the float's binary error rather than the ratio (0.005 % became 0.01)."""
    if count >= limit:
        return 100.0
    units, rest = divmod(count * _PERCENT_UNITS, limit)
    if 2 * rest > limit or (2 * rest == limit and units % 2):
        units += 1
    return units / 10**PERCENT_DECIMALS


def context_level(percent: float, rules: MeterRules) -> ContextLevel:
    if percent >= rules.critical_percent:
        return ContextLevel.CRITICAL
    if percent >= rules.warning_percent:
        return ContextLevel.WARNING
    return ContextLevel.NORMAL


def draft_level(percent: float, rules: MeterRules) -> ContextLevel:
    if percent >= rules.draft_critical_percent:
        return ContextLevel.CRITICAL
    if percent >= rules.warning_percent:
        return ContextLevel.WARNING
    return ContextLevel.NORMAL


# -- replies ----------------------------------------------------------------------------------


def zero_state(rules: MeterRules) -> ContextState:
    """A session with nothing stored: empty, with the default window (a guess, and it says so)."""
    return ContextState(used=0, total=rules.default_context_window, updated_at=utc_now(), window=WindowSource.DEFAULT)


def context_usage_json(session_id: str, state: ContextState | None, revision: int, rules: MeterRules) -> bytes:
    """The reply for a session's context (a ``ContextUsage``), serialized; the zero state with the default
    window when none is stored.

    ``revision`` is the key's revision even when nothing readable is stored (a delete or purge leaves a
    marker with a revision of its own), so the zero state after a delete is newer than what was deleted,
    and clients holding the old state take it.

    Built as bytes, not as a model: every change and every socket's first frame needs these bytes, and
    building the model (validated) and serializing it were a tenth of a change's work. Byte for byte what
    the model serializes (``tests/functions/test_views.py`` holds it to that). ``session_id`` is a valid
    session id (``A-Z a-z 0-9 _ -``: no escaping) and the fields come from a validated state. The enums are
    ``StrEnum``s: each is its value, so ``encode`` needs no ``.value`` (a slow descriptor)."""
    if state is None:
        state = zero_state(rules)
    threshold = state.threshold
    used = state.used
    return (
        b'{"session_id":"%s","used":%d,"total":%d,"percentage":%s,"level":"%s","model":%s,"revision":%d,'
        b'"updated_at":%s,"reserved":%d,"compact_at":%d,"left":%d,"estimated":%s,"compactions":%d,'
        b'"compacted_at":%s,"reasoning":%s,"window_source":"%s"}'
    ) % (
        session_id.encode(),
        used,
        state.total,
        repr(percentage(used, state.total)).encode(),
        context_level(percentage(used, threshold), rules).encode(),
        _json_string(state.model),
        revision,
        _json_string(state.updated_at),
        state.reserved,
        threshold,
        max(0, threshold - used),
        b"true" if state.estimated else b"false",
        state.compactions,
        _json_string(state.compacted_at),
        b"null" if state.reasoning is None else b"%d" % state.reasoning,
        state.window_source(rules.default_context_window).encode(),
    )


def _json_string(value: str | None) -> bytes:
    """A string as JSON, non-ASCII kept (as pydantic writes it), or null."""
    return b"null" if value is None else encode_basestring(value).encode()


def history_point(state: ContextState, revision: int) -> HistoryPoint:
    """The point a committed state adds to its session's history."""
    return HistoryPoint(
        at=state.updated_at,
        op=state.op,
        used=state.used,
        total=state.total,
        compact_at=state.threshold,
        revision=revision,
    )


def history_point_json(state: ContextState, revision: int) -> bytes:
    """``history_point(state, revision)`` serialized, byte for byte (``tests/functions/test_views.py`` holds
    it to that), without building the model: every change publishes one, and the model and its
    serialization were a twentieth of a change's work. The fields come from a validated state."""
    return b'{"at":%s,"op":"%s","used":%d,"total":%d,"compact_at":%d,"revision":%d}' % (
        _json_string(state.updated_at),
        state.op.encode(),
        state.used,
        state.total,
        state.threshold,
        revision,
    )


def token_usage(session_id: str, state: DraftState, revision: int, rules: MeterRules) -> TokenUsage:
    percent = percentage(state.count, state.max)
    return TokenUsage(
        session_id=session_id,
        count=state.count,
        max=state.max,
        percentage=percent,
        warning=percent >= rules.warning_percent,
        level=draft_level(percent, rules),
        model=state.model,
        encoding=state.encoding,
        exact=state.exact,
        revision=revision,
        updated_at=state.updated_at,
    )


# -- events -----------------------------------------------------------------------------------


def envelope(kind: str, session_id: str, data: bytes) -> bytes:
    """The event envelope ``{"type", "session_id", "data", "timestamp"}`` around ``data``, a view serialized
    already: byte for byte what ``ContextUpdateEvent``/``TokenCountEvent`` serialize to (a test holds it
    to that), without building the event model or serializing the view again. ``session_id`` is a valid
    session id (``A-Z a-z 0-9 _ -``), so it needs no escaping; a timestamp's ``repr`` is its JSON."""
    return b'{"type":"%s","session_id":"%s","data":%s,"timestamp":%s}' % (
        kind.encode(),
        session_id.encode(),
        data,
        repr(time.time()).encode(),
    )


def context_event(session_id: str, data: bytes) -> bytes:
    """The ``context_update`` envelope around ``data``, the session's ``ContextUsage`` serialized
    (``context_usage_json``), as it goes on ``ctxmeter.events.<sid>``."""
    return envelope(CONTEXT_KIND, session_id, data)


def draft_event(usage: TokenUsage) -> bytes:
    """The ``token_count`` envelope, serialized as it goes on ``ctxmeter.events.<sid>``."""
    return envelope(TOKENS_KIND, usage.session_id, usage.model_dump_json().encode())
