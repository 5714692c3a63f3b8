"""The replies of ctxmeter, as typed models.

Hand-written copies of the server's reply models (``schemas/models.py`` in the ctxmeter repository,
exported to ``schemas/json/``); a test compares their JSON Schema with the committed files, field by
field, so they cannot drift apart unnoticed.

Two deliberate differences make an older client survive a newer server:

- unknown fields are ignored (``extra="ignore"``), where the server's own models forbid them;
- fields the schema types as an enum (``level``, ``encoding``, ``op``, ``window_source``) are plain strings
  here, so a value added later (a new encoding, say) is passed through instead of failing the whole reply. The enums
  below list the values known today; they are ``str`` subclasses, so ``usage.level ==
  ContextLevel.WARNING`` works.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class _StrEnum(str, Enum):
    # enum.StrEnum is 3.11+; this is the same for comparisons and str() on 3.10.
    def __str__(self) -> str:
        return str(self.value)


class ContextLevel(_StrEnum):
    NORMAL = "normal"
    WARNING = "warning"
    CRITICAL = "critical"


class Encoding(_StrEnum):
    O200K_BASE = "o200k_base"
    CL100K_BASE = "cl100k_base"


class HistoryOp(_StrEnum):
    SET = "set"
    ADD = "add"
    FREE = "free"
    USAGE = "usage"
    RESET = "reset"
    COMPACT = "compact"


class WindowSource(_StrEnum):
    """Where a session's ``total`` comes from."""

    MODEL = "model"
    REPORTED = "reported"
    DEFAULT = "default"


class ErrorCode(_StrEnum):
    """Codes of :class:`~ctxmeter_client.CtxMeterError`; the first eight come from the server."""

    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    INVALID_SESSION_ID = "invalid_session_id"
    UNKNOWN_MODEL = "unknown_model"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    CONFLICT = "conflict"
    INTERNAL = "internal"
    # The state store has no room for the change (not retried: it frees only as sessions expire).
    STORE_FULL = "store_full"
    # Answered by the HTTP edge only; listed because the schema's ErrorReply lists them.
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    # No functions answered (no responders, timeouts) until the deadline, or the connection is closed.
    UNAVAILABLE = "unavailable"
    # HTTP edge only: a compressed body where none is taken.
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    # Client only: a reply this client's models cannot read (a server too far ahead or behind).
    INVALID_REPLY = "invalid_reply"


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _ChangeReply(_Reply):
    # Set from the reply header, not the body: a private attribute stays out of the JSON Schema.
    _duplicate: bool = PrivateAttr(default=False)

    @property
    def duplicate(self) -> bool:
        """True when the server had already applied this change (a retry of it, or a reused
        idempotency key): nothing changed now, and this is the session's current state."""
        return self._duplicate


class TokenCount(_Reply):
    count: int
    model: str | None = Field(description="The model counted for, or null when only an encoding was given.")
    encoding: str = Field(description="An Encoding value.")
    exact: bool


class TokenUsage(_ChangeReply):
    """A session's draft message count."""

    session_id: str
    count: int
    max: int
    percentage: float
    warning: bool
    level: str = Field(description="A ContextLevel value.")
    model: str | None
    encoding: str = Field(description="An Encoding value.")
    exact: bool
    revision: int
    updated_at: str


class ContextUsage(_ChangeReply):
    """A session's context usage."""

    session_id: str
    used: int
    total: int
    percentage: float = Field(description="used / total, 0-100.")
    level: str = Field(description="A ContextLevel value, from used / compact_at.")
    model: str | None
    revision: int = Field(description="The KV revision; drop anything older than what you hold.")
    updated_at: str = Field(description="RFC 3339.")
    reserved: int = 0
    compact_at: int
    left: int = Field(description="Tokens left before the agent compacts: max(0, compact_at - used).")
    estimated: bool = False
    compactions: int = 0
    compacted_at: str | None = None
    reasoning: int | None = Field(
        default=None,
        description="Reasoning tokens of the last reported response, beside used (in it only if the model keeps them).",
    )
    window_source: str = Field(
        default="default", description="A WindowSource value: the model's window, a reported total, or the default."
    )


class HistoryPoint(_Reply):
    at: str
    op: str = Field(description="A HistoryOp value.")
    used: int
    total: int
    compact_at: int
    revision: int


class ContextHistory(_Reply):
    session_id: str
    points: list[HistoryPoint] = Field(description="Oldest first; the last is the current state.")


class ModelInfo(_Reply):
    name: str
    aliases: list[str]
    encoding: str = Field(description="An Encoding value.")
    context_window: int
    max_output: int | None
    exact: bool


class ModelsReply(_Reply):
    models: list[ModelInfo]


class ErrorDetail(_Reply):
    code: str = Field(description="An ErrorCode value.")
    message: str


class ErrorReply(_Reply):
    error: ErrorDetail


# The client's reply models by the name of their schema file in ctxmeter's schemas/json/.
REPLY_MODELS: dict[str, type[BaseModel]] = {
    "TokenCount": TokenCount,
    "TokenUsage": TokenUsage,
    "ContextUsage": ContextUsage,
    "ContextHistory": ContextHistory,
    "ModelsReply": ModelsReply,
    "ErrorReply": ErrorReply,
}
