"""Which records move a meter, and how: pure rules from a ``Record`` to one change of one session.

- A GenAI inference span (``gen_ai.operation.name`` ``chat``, ``generate_content``, ``text_completion``)
  with token counts: a ``usage`` report (the conventions' input already holds cached tokens). With
  ``gen_ai.conversation.compacted = true`` it records a compaction instead. Agent, tool and workflow spans
  (``invoke_agent``'s usage is a whole run's aggregate) never move a meter.
- Claude Code's ``claude_code.api_request`` event of the main conversation (not its side requests: titles,
  subagents, the compaction summary): a ``usage`` report in Anthropic's shape. Its ``claude_code.compaction``
  event, when it succeeded: a compaction to ``post_tokens``.
- Codex's ``codex.sse_event`` of kind ``response.completed`` with token counts: a ``usage`` report in
  OpenAI Responses' shape; ``codex.conversation_starts`` with a ``context_window``: the window (and
  ``auto_compact_token_limit`` as ``compact_at``) of a conversation that starts empty.

Anything else is ``None`` (accepted, moves nothing); a record that would move a meter but cannot (an invalid
session id, a count that is not one) is ``Rejected``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from ctxmeter.limits import OTLP_COUNT_DIGITS
from schemas import subjects
from schemas.excerpt import excerpt
from schemas.limits import MAX_TOKENS, MODEL_NAME_CHARS
from schemas.subjects import ContextOp
from ws_edge.otlp.decode import Record, Scalar, Signal

# -- attribute names ------------------------------------------------------------------------------

OPERATION: Final = "gen_ai.operation.name"
INFERENCE_OPERATIONS: Final = frozenset({"chat", "generate_content", "text_completion"})
# Current names first, then those of earlier versions of the conventions (still emitted by many SDKs).
INPUT_TOKENS: Final = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS: Final = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ_TOKENS: Final = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
CACHE_WRITE_TOKENS: Final = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
)
REASONING_TOKENS: Final = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
MODEL: Final = ("gen_ai.response.model", "gen_ai.request.model")
PROVIDER: Final = ("gen_ai.provider.name", "gen_ai.system")
COMPACTED: Final = "gen_ai.conversation.compacted"

CLAUDE_API_REQUEST: Final = "claude_code.api_request"
CLAUDE_COMPACTION: Final = "claude_code.compaction"
# Claude Code names its events ``claude_code.<name>`` in the body and ``<name>`` in ``event.name``.
CLAUDE_PREFIX: Final = "claude_code."
# Claude Code's own rule for "the main conversation" (its ``query_source`` values): the REPL's main thread,
# the SDK and print mode; every other source is a side request (a title, a subagent, the compaction summary).
CLAUDE_MAIN_SOURCES: Final = frozenset({"sdk", "main"})
CLAUDE_MAIN_PREFIX: Final = "repl_main_thread"
CLAUDE_ATTRIBUTES: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "model",
    "query_source",
    "agent_id",
    "success",
    "post_tokens",
)

CODEX_SSE_EVENT: Final = "codex.sse_event"
CODEX_CONVERSATION_STARTS: Final = "codex.conversation_starts"
CODEX_COMPLETED: Final = "response.completed"
CODEX_ATTRIBUTES: Final = (
    "event.kind",
    "input_token_count",
    "output_token_count",
    "cached_token_count",
    "reasoning_token_count",
    "context_window",
    "auto_compact_token_limit",
    "slug",
)

# Claude Code's events that move no meter, told by their body alone (the prompt, the response, tool calls...):
# their attributes are never read. Several come with every api_request.
CLAUDE_UNREAD: Final = frozenset(
    {
        "claude_code.user_prompt",
        "claude_code.assistant_response",
        "claude_code.tool_result",
        "claude_code.tool_decision",
        "claude_code.api_error",
    }
)

EVENT_NAME: Final = "event.name"
DEFAULT_SESSION_ATTRIBUTES: Final = ("gen_ai.conversation.id", "session.id", "conversation.id")


def wanted_attributes(session_attributes: Iterable[str]) -> frozenset[str]:
    """Every attribute name a rule reads: the rest of a record is never copied out of the export."""
    return frozenset(
        {
            OPERATION,
            *INPUT_TOKENS,
            *OUTPUT_TOKENS,
            *CACHE_READ_TOKENS,
            *CACHE_WRITE_TOKENS,
            *REASONING_TOKENS,
            *MODEL,
            *PROVIDER,
            COMPACTED,
            EVENT_NAME,
            *CLAUDE_ATTRIBUTES,
            *CODEX_ATTRIBUTES,
            *session_attributes,
        }
    )


# -- results --------------------------------------------------------------------------------------


class Reason(StrEnum):
    """Why a record that would move a meter was rejected."""

    INVALID_SESSION_ID = "invalid_session_id"
    INVALID_VALUE = "invalid_value"


@dataclass(frozen=True, slots=True)
class MeterChange:
    """One change to one session: the operation and its request body, from ``record``."""

    session_id: str
    op: ContextOp
    body: dict[str, Any]
    record: Record


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A record that moves no meter, and why (for the ingest metrics)."""

    reason: str


NOT_METERED: Final = Ignored("not_metered")
NO_SESSION: Final = Ignored("no_session")
SIDE_REQUEST: Final = Ignored("side_request")
Result = MeterChange | Rejected | Ignored


class _Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _count(attributes: Mapping[str, Scalar], names: tuple[str, ...] | str) -> int | None:
    """The first of ``names`` present as a token count; ``_Invalid`` when it is not one."""
    for name in (names,) if isinstance(names, str) else names:
        value = attributes.get(name)
        if value is None:
            continue
        if isinstance(value, bool):
            raise _Invalid(f"{name} is not a token count")
        integral = isinstance(value, float) and value.is_integer()
        if integral or (
            isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= OTLP_COUNT_DIGITS
        ):
            value = int(value)
        if not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
            raise _Invalid(f"{name} {excerpt(str(value))} is not a token count")
        return value
    return None


def _text(attributes: Mapping[str, Scalar], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = attributes.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _model(attributes: Mapping[str, Scalar], names: tuple[str, ...]) -> dict[str, str]:
    model = _text(attributes, names)
    if model is None:
        return {}
    if len(model) > MODEL_NAME_CHARS:
        raise _Invalid(f"the model name {excerpt(model)} is longer than {MODEL_NAME_CHARS} characters")
    return {"model": model}


def _is_true(value: Scalar | None) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def session_of(record: Record, session_attributes: Iterable[str]) -> str | Rejected | None:
    """The first session attribute present, on the record and then on its resource."""
    for attributes in (record.attributes, record.resource):
        for name in session_attributes:
            value = attributes.get(name)
            if value is None or isinstance(value, bool | float):
                continue
            session_id = str(value)
            if not subjects.is_session_id(session_id):
                return Rejected(
                    Reason.INVALID_SESSION_ID,
                    f"{name} {excerpt(session_id)} is not a valid session id (1-128 of A-Z a-z 0-9 _ -)",
                )
            return session_id
    return None


# -- the rules --------------------------------------------------------------------------------------


def _genai_span(attributes: Mapping[str, Scalar]) -> tuple[ContextOp, dict[str, Any]] | None:
    if attributes.get(OPERATION) not in INFERENCE_OPERATIONS:
        return None
    input_tokens = _count(attributes, INPUT_TOKENS)
    output_tokens = _count(attributes, OUTPUT_TOKENS)
    if input_tokens is None and output_tokens is None:
        return None
    cached = _count(attributes, CACHE_READ_TOKENS)
    _count(attributes, CACHE_WRITE_TOKENS)  # inside the input too: checked, not added
    reasoning = _count(attributes, REASONING_TOKENS)
    model = _model(attributes, MODEL)
    if _is_true(attributes.get(COMPACTED)):
        return ContextOp.COMPACT, {"used": min(MAX_TOKENS, (input_tokens or 0) + (output_tokens or 0))}
    # OpenAI Responses' shape states input and output as the conventions define them (cached tokens inside
    # the input, reasoning inside the output).
    usage: dict[str, Any] = {"input_tokens": input_tokens or 0, "output_tokens": output_tokens or 0}
    if cached is not None:
        usage["input_tokens_details"] = {"cached_tokens": cached}
    if reasoning is not None:
        usage["output_tokens_details"] = {"reasoning_tokens": reasoning}
    return ContextOp.USAGE, {"usage": usage, **model}


def _claude_event(record: Record) -> str | None:
    """``api_request``/``compaction`` for Claude Code's events (named in the body or ``event_name``)."""
    for name in (record.name, record.body, record.event_name):
        if name in (CLAUDE_API_REQUEST, CLAUDE_COMPACTION):
            return name
    return None


def _claude(event: str, attributes: Mapping[str, Scalar]) -> tuple[ContextOp, dict[str, Any]] | Ignored:
    if event == CLAUDE_COMPACTION:
        post = _count(attributes, "post_tokens")
        if not _is_true(attributes.get("success")) or post is None:
            return NOT_METERED
        return ContextOp.COMPACT, {"used": post}
    source = attributes.get("query_source")
    main = source is None or source in CLAUDE_MAIN_SOURCES or str(source).startswith(CLAUDE_MAIN_PREFIX)
    if not main or "agent_id" in attributes:
        return SIDE_REQUEST
    input_tokens = _count(attributes, "input_tokens")
    if input_tokens is None:
        return NOT_METERED
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": _count(attributes, "output_tokens") or 0,
        "cache_read_input_tokens": _count(attributes, "cache_read_tokens") or 0,
        "cache_creation_input_tokens": _count(attributes, "cache_creation_tokens") or 0,
    }
    return ContextOp.USAGE, {"usage": usage, **_model(attributes, ("model",))}


def _codex(record: Record) -> tuple[ContextOp, dict[str, Any]] | None:
    attributes = record.attributes
    if record.name == CODEX_SSE_EVENT and attributes.get("event.kind") == CODEX_COMPLETED:
        input_tokens = _count(attributes, "input_token_count")
        if input_tokens is None:
            return None  # Codex logs each completion twice; only one carries the counts
        usage: dict[str, Any] = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": _count(attributes, "cached_token_count") or 0},
            "output_tokens": _count(attributes, "output_token_count") or 0,
            "output_tokens_details": {"reasoning_tokens": _count(attributes, "reasoning_token_count") or 0},
        }
        return ContextOp.USAGE, {"usage": usage, **_model(attributes, ("model", "slug"))}
    if record.name == CODEX_CONVERSATION_STARTS:
        window = _count(attributes, "context_window")
        if not window:
            return None
        body: dict[str, Any] = {"used": 0, "total": window, **_model(attributes, ("model", "slug"))}
        limit = _count(attributes, "auto_compact_token_limit")
        if limit and limit <= window:
            body["compact_at"] = limit
        return ContextOp.SET, body
    return None


def map_record(record: Record, session_attributes: Iterable[str] = DEFAULT_SESSION_ATTRIBUTES) -> Result:
    """What ``record`` does to a meter."""
    try:
        rule: tuple[ContextOp, dict[str, Any]] | Ignored | None
        if record.signal is Signal.TRACES:
            rule = _genai_span(record.attributes)
        elif (event := _claude_event(record)) is not None:
            rule = _claude(event, record.attributes)
        else:
            rule = _codex(record)
    except _Invalid as invalid:
        return Rejected(Reason.INVALID_VALUE, invalid.message)
    if rule is None:
        return NOT_METERED
    if isinstance(rule, Ignored):
        return rule
    session = session_of(record, session_attributes)
    if session is None:
        return NO_SESSION
    if isinstance(session, Rejected):
        return session
    op, body = rule
    return MeterChange(session, op, body, record)
