"""``ctxmeter.context.{get,set,add,free,usage,reset}.<sid>``: a session's context window usage."""

from __future__ import annotations

from collections.abc import Callable

from functions.operation import Call, Deps, Operation
from functions.registry import require_model
from functions.store import ContextChange
from schemas.models import MAX_TOKENS, ContextSetRequest, ContextUsage, EmptyRequest, TokensDelta, UsageRequest
from schemas.state import ContextState, utc_now
from schemas.subjects import ContextOp


def _model_window(model: str | None) -> int | None:
    return require_model(model).context_window if model is not None else None


def _change(
    deps: Deps, new_used: Callable[[int], int], *, total: int | None = None, model: str | None = None
) -> ContextChange:
    """A change of ``used``, computed from the current value (0 when nothing is stored); the session's
    window and model are kept unless given (a new session starts with the default window)."""
    default_total = deps.store.settings.default_context_window

    def change(current: ContextState | None) -> ContextState:
        return ContextState(
            used=new_used(current.used if current else 0),
            total=total or (current.total if current else default_total),
            model=model or (current.model if current else None),
            updated_at=utc_now(),
        )

    return change


async def get(call: Call[EmptyRequest], deps: Deps) -> ContextUsage:
    return await deps.store.read_context(call.session_id)


async def set_(call: Call[ContextSetRequest], deps: Deps) -> ContextUsage:
    request = call.body
    # An unknown model is fine when the caller also says how large its window is.
    window = request.total or _model_window(request.model)
    change = _change(deps, lambda _: request.used, total=window, model=request.model)
    return await deps.store.update_context(call.session_id, change)


async def add(call: Call[TokensDelta], deps: Deps) -> ContextUsage:
    tokens = call.body.tokens
    # Saturates rather than overflows: every stored count stays a valid (JSON-safe) one.
    change = _change(deps, lambda used: min(MAX_TOKENS, used + tokens))
    return await deps.store.update_context(call.session_id, change)


async def free(call: Call[TokensDelta], deps: Deps) -> ContextUsage:
    tokens = call.body.tokens
    change = _change(deps, lambda used: max(0, used - tokens))
    return await deps.store.update_context(call.session_id, change)


async def usage(call: Call[UsageRequest], deps: Deps) -> ContextUsage:
    """A provider's usage report is what the model saw and wrote: it becomes the context used."""
    request = call.body
    used = min(MAX_TOKENS, request.usage.context_tokens())
    change = _change(deps, lambda _: used, total=_model_window(request.model), model=request.model)
    return await deps.store.update_context(call.session_id, change)


async def reset(call: Call[EmptyRequest], deps: Deps) -> ContextUsage:
    """Back to zero used; the session's window and model are kept."""
    return await deps.store.update_context(call.session_id, _change(deps, lambda _: 0))


OPERATIONS = (
    Operation(ContextOp.GET, EmptyRequest, get, "A session's context usage (zero state if none)."),
    Operation(ContextOp.SET, ContextSetRequest, set_, "Set used (and total or model)."),
    Operation(ContextOp.ADD, TokensDelta, add, "Add tokens to the context used."),
    Operation(ContextOp.FREE, TokensDelta, free, "Free tokens (e.g. after compression); floors at 0."),
    Operation(ContextOp.USAGE, UsageRequest, usage, "Set used from an OpenAI or Anthropic usage report."),
    Operation(ContextOp.RESET, EmptyRequest, reset, "Zero the context used; window and model are kept."),
)
