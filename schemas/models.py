"""Pydantic models of every message ctxmeter accepts or emits: the single source of its schema.

Requests are strict: a string is not a number, a float is not an integer, negative counts are
rejected, and unknown top-level fields are rejected (a typo such as ``"totl"`` would otherwise be
dropped silently). Provider usage objects are the exception: OpenAI and Anthropic add fields over
time (``prompt_tokens_details``, ``server_tool_use``...), so unknown fields there are ignored.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.counts import TokenTotal
from schemas.limits import (
    MAX_CHAT_MESSAGES,
    MAX_CONTENT_PARTS,
    MAX_HISTORY_LIMIT,
    MAX_NAME_CHARS,
    MAX_ROLE_CHARS,
    MAX_TOKENS,
    MODEL_NAME_CHARS,
    SESSION_ID_MAX_LENGTH,
)
from schemas.subjects import SESSION_ID_PATTERN, ContextOp, changes_state
from schemas.usage import AnyUsage, check_usage

SessionId = Annotated[
    str,
    Field(
        pattern=f"^{SESSION_ID_PATTERN}$",
        max_length=SESSION_ID_MAX_LENGTH,
        description="1-128 characters of A-Z a-z 0-9 _ -; it becomes a NATS subject token.",
    ),
]


WindowSize = Annotated[int, Field(ge=1, le=MAX_TOKENS, description="A context window in tokens; at least 1.")]
Percentage = Annotated[float, Field(ge=0, le=100, description="0-100, rounded to 2 decimals.")]
Revision = Annotated[
    int,
    Field(ge=0, description="The KV revision of this state; 0 when nothing is stored yet. Drop anything older."),
]
Timestamp = Annotated[str, Field(description="RFC 3339 time of the last change, UTC.")]


class Encoding(StrEnum):
    O200K_BASE = "o200k_base"
    CL100K_BASE = "cl100k_base"


if TYPE_CHECKING:
    # To the type checker a history op is the operation that made the change; at run time it is an enum of
    # its own (the contract's ``HistoryOp``), so a point can never name a read.
    HistoryOp = ContextOp
else:
    # Derived, not repeated: every operation that changes a session, and only those, names a history point.
    HistoryOp = StrEnum("HistoryOp", [(op.name, op.value) for op in ContextOp if changes_state(op)], module=__name__)
    HistoryOp.__doc__ = "The change a history point records: the operation that made it."


class ContextLevel(StrEnum):
    NORMAL = "normal"
    WARNING = "warning"
    CRITICAL = "critical"


class WindowSource(StrEnum):
    """Where a session's ``total`` comes from."""

    MODEL = "model"  # the registry's window of the session's model
    REPORTED = "reported"  # stated by the caller (``set``'s total)
    DEFAULT = "default"  # nobody said: the deployment's default window, a guess


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    INVALID_SESSION_ID = "invalid_session_id"
    UNKNOWN_MODEL = "unknown_model"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    CONFLICT = "conflict"
    INTERNAL = "internal"
    STORE_FULL = "store_full"
    # Answered by the edge (HTTP and WebSocket upgrade), never by the functions.
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    UNSUPPORTED_ENCODING = "unsupported_encoding"


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- chat messages --------------------------------------------------------------------------


class TextPart(Request):
    type: Literal["text"]
    text: str


class ChatMessage(Request):
    """A chat message as sent to OpenAI's chat API; only text content can be counted."""

    role: str = Field(min_length=1, max_length=MAX_ROLE_CHARS)
    content: str | Annotated[list[TextPart], Field(max_length=MAX_CONTENT_PARTS)] | None = None
    name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)

    def content_text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


# -- token counting -------------------------------------------------------------------------


class TokenCountRequest(Request):
    """``ctxmeter.tokens.count``: a text or chat messages, counted with a model's or an encoding's tokenizer."""

    text: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, max_length=MAX_CHAT_MESSAGES)
    model: str | None = Field(default=None, min_length=1, max_length=MODEL_NAME_CHARS)
    encoding: Encoding | None = None

    @model_validator(mode="after")
    def _exactly_one_input(self) -> TokenCountRequest:
        if (self.text is None) == (self.messages is None):
            raise ValueError('give exactly one of "text" or "messages"')
        return self


class TokenCount(Reply):
    count: TokenTotal
    model: str | None = Field(description="The model counted for, or null when only an encoding was given.")
    encoding: Encoding
    exact: bool = Field(description="True when the encoding is the model's own tokenizer.")


class DraftRequest(Request):
    """``ctxmeter.tokens.draft.<sid>``: the message a person is typing."""

    text: str
    model: str | None = Field(default=None, min_length=1, max_length=MODEL_NAME_CHARS)
    max: WindowSize | None = Field(default=None, description="The limit to measure against.")


class TokenUsage(Reply):
    """A session's draft message count (``count``/``max``/``percentage``/``warning`` as front ends read them)."""

    session_id: SessionId
    count: TokenTotal
    max: WindowSize
    percentage: Percentage
    warning: bool = Field(description="True from the warning threshold (80 % by default).")
    level: ContextLevel
    model: str | None
    encoding: Encoding
    exact: bool
    revision: Revision
    updated_at: Timestamp


# -- context state --------------------------------------------------------------------------


class EmptyRequest(Request):
    """``get`` and ``reset`` take no fields; an empty body is accepted too."""


class ContextSetRequest(Request):
    used: TokenTotal
    total: WindowSize | None = Field(default=None, description="Kept as stored (or the model's window) when omitted.")
    model: str | None = Field(default=None, min_length=1, max_length=MODEL_NAME_CHARS)
    reserved: TokenTotal | None = Field(
        default=None, description="Tokens kept free for the model's reply; kept as stored when omitted (0 at first)."
    )
    compact_at: WindowSize | None = Field(
        default=None,
        description="The used count at which the agent compacts; kept as stored when omitted (total - reserved).",
    )
    estimated: bool = Field(default=False, description="True when `used` is the caller's estimate, not a count.")


class TokensDelta(Request):
    """``add`` (context used) and ``free`` (context freed, e.g. by compression)."""

    tokens: TokenTotal


class CompactRequest(Request):
    """``compact``: the agent compacted its context; ``used`` is its size now."""

    used: TokenTotal


class HistoryRequest(Request):
    limit: int = Field(default=200, ge=1, le=MAX_HISTORY_LIMIT, description="Newest points to return, 1-1000.")


class UsageRequest(Request):
    """A provider's usage report: what the next request carries of this response becomes the context used."""

    usage: AnyUsage
    model: str | None = Field(default=None, min_length=1, max_length=MODEL_NAME_CHARS)
    continues: bool = Field(
        default=False,
        description=(
            "True for the rest of the response reported just before (Anthropic's message_delta after its "
            "message_start): the model and window stand, and an input count it lacks is that report's."
        ),
    )
    estimated: bool = Field(
        default=False,
        description=(
            "True when the counts include reasoning of unreported size that leaves the context (Anthropic "
            "thinking without output_tokens_details): used is then an upper bound, shown as an estimate."
        ),
    )

    @field_validator("usage", mode="before")
    @classmethod
    def _known_usage(cls, usage: Any) -> Any:
        check_usage(usage)
        return usage


class ContextUsage(Reply):
    session_id: SessionId
    used: TokenTotal
    total: WindowSize
    percentage: Percentage = Field(description="used / total, 0-100 (shown as 100 above the window).")
    level: ContextLevel = Field(description="From used / compact_at: normal, warning (80 %), critical (90 %).")
    model: str | None
    revision: Revision
    updated_at: Timestamp
    reserved: TokenTotal = Field(default=0, description="Tokens kept free for the model's reply.")
    compact_at: WindowSize = Field(
        description="The used count at which the agent compacts (total - reserved by default)."
    )
    left: TokenTotal = Field(description="Tokens left before the agent compacts: max(0, compact_at - used).")
    estimated: bool = Field(
        default=False, description="True when used includes add/free estimates since the last usage report."
    )
    compactions: TokenTotal = Field(default=0, description="Compactions recorded for this session.")
    compacted_at: Timestamp | None = Field(default=None, description="When the last compaction was recorded.")
    reasoning: TokenTotal | None = Field(
        default=None,
        description=(
            "Reasoning (thinking) tokens of the last reported response, beside used: counted in it only when the "
            "model keeps them in context; null when not reported apart."
        ),
    )
    window_source: WindowSource = Field(
        default=WindowSource.DEFAULT,
        description="Where total comes from: the model's window, a reported total, or the default (a guess).",
    )


class HistoryPoint(Reply):
    at: Timestamp
    op: HistoryOp
    used: TokenTotal
    total: WindowSize
    compact_at: WindowSize
    revision: Revision


class ContextHistory(Reply):
    session_id: SessionId
    points: list[HistoryPoint] = Field(description="Oldest first; the last is the current state.")


# -- models ---------------------------------------------------------------------------------


class ModelInfo(Reply):
    name: str
    aliases: list[str]
    encoding: Encoding
    context_window: WindowSize
    max_output: WindowSize | None = Field(description="Most tokens one reply may have; null when not published.")
    exact: bool = Field(description="True when the encoding is the model's own tokenizer.")


class ModelsReply(Reply):
    models: list[ModelInfo]


# -- events (the envelope front ends read) ----------------------------------------------------


class ContextUpdateEvent(Reply):
    type: Literal["context_update"] = "context_update"
    session_id: SessionId
    data: ContextUsage
    timestamp: float = Field(description="Unix seconds when the event was published.")


class TokenCountEvent(Reply):
    type: Literal["token_count"] = "token_count"
    session_id: SessionId
    data: TokenUsage
    timestamp: float = Field(description="Unix seconds when the event was published.")


# -- the sessions overview (the edge's HTTP API and its socket, no NATS subject) ------------------


class SessionsReply(Reply):
    sessions: list[ContextUsage] = Field(description="Nearest to compaction first (fewest tokens left).")
    total: TokenTotal = Field(description="Live sessions in all (the list may hold fewer).")


class SessionRemovedEvent(Reply):
    type: Literal["session_removed"] = "session_removed"
    session_id: SessionId


# -- errors ---------------------------------------------------------------------------------


class ErrorDetail(Reply):
    code: ErrorCode
    message: str


class ErrorReply(Reply):
    error: ErrorDetail


# Every model exported as JSON Schema, by file name.
EXPORTED_MODELS: dict[str, type[BaseModel]] = {
    "TokenCountRequest": TokenCountRequest,
    "TokenCount": TokenCount,
    "DraftRequest": DraftRequest,
    "TokenUsage": TokenUsage,
    "EmptyRequest": EmptyRequest,
    "ContextSetRequest": ContextSetRequest,
    "TokensDelta": TokensDelta,
    "UsageRequest": UsageRequest,
    "CompactRequest": CompactRequest,
    "HistoryRequest": HistoryRequest,
    "ContextUsage": ContextUsage,
    "ContextHistory": ContextHistory,
    "ModelsReply": ModelsReply,
    "ContextUpdateEvent": ContextUpdateEvent,
    "TokenCountEvent": TokenCountEvent,
    "ErrorReply": ErrorReply,
}

# The edge's own payloads (HTTP and WebSocket only): in the TypeScript declarations, not in the AsyncAPI
# document of the NATS subjects.
EDGE_MODELS: dict[str, type[BaseModel]] = {
    "SessionsReply": SessionsReply,
    "SessionRemovedEvent": SessionRemovedEvent,
}
