"""``ctxmeter.context.<op>.<sid>``: a session's context window usage, policy, compactions and history.

Subjects (request/reply; the changes also take a plain publish): ``ctxmeter.context.get.<sid>``,
``ctxmeter.context.set.<sid>``, ``ctxmeter.context.add.<sid>``, ``ctxmeter.context.free.<sid>``,
``ctxmeter.context.usage.<sid>``, ``ctxmeter.context.reset.<sid>``, ``ctxmeter.context.compact.<sid>``,
``ctxmeter.context.history.<sid>``. Each committed change is published on ``ctxmeter.events.<sid>``.

A session's state is ``used`` of ``total`` tokens, with the agent's compaction policy (``reserved``
tokens kept for the reply, ``compact_at`` the used count at which it compacts), whether ``used`` is an
estimate, and its compactions. ``add``/``free`` are the runtime's estimates; a provider's ``usage``
report and an exact ``set`` are counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from functions.errors import InvalidRequest
from functions.operation import Answer, Call, Deps, Operation
from functions.store import Change
from schemas.limits import MAX_TOKENS
from schemas.models import (
    CompactRequest,
    ContextHistory,
    ContextSetRequest,
    EmptyRequest,
    HistoryOp,
    HistoryRequest,
    TokensDelta,
    UsageRequest,
    WindowSource,
)
from schemas.state import ContextState, utc_now, zero_state
from schemas.subjects import ContextOp

# What a change sets, from the state before it: one copy of the state per change, not one per step.
StateUpdate = Callable[[ContextState], dict[str, Any]]


def _valid(state: ContextState) -> ContextState:
    """``state`` with its policy checked against its window; a smaller window clamps ``compact_at``."""
    if state.reserved >= state.total:
        raise InvalidRequest(f"reserved ({state.reserved}) must be below total ({state.total})")
    ceiling = state.total - state.reserved
    if state.compact_at is not None and state.compact_at > ceiling:
        return state.model_copy(update={"compact_at": ceiling})
    return state


async def _commit(call: Call[Any], deps: Deps, op: HistoryOp, update: StateUpdate) -> Answer:
    def apply(current: ContextState | None) -> ContextState:
        state = current or zero_state(deps.store.settings)
        return _valid(state.model_copy(update={**update(state), "updated_at": utc_now(), "op": op}))

    committed = await deps.store.update_context(
        call.session_id, Change(apply=apply, key=call.key, observed=call.observed)
    )
    return Answer(committed.data, duplicate=committed.duplicate, stale=committed.stale)


async def get(call: Call[EmptyRequest], deps: Deps) -> Answer:
    return Answer(await deps.store.read_context(call.session_id))


async def set_(call: Call[ContextSetRequest], deps: Deps) -> Answer:
    request = call.body
    # An unknown model is fine when the caller also says how large its window is.
    window = request.total or (deps.models.require(request.model).context_window if request.model else None)

    def update(state: ContextState) -> dict[str, Any]:
        changes: dict[str, Any] = {"used": request.used, "estimated": request.estimated, "reasoning": None}
        if window is not None:
            changes["total"] = window
            changes["window"] = WindowSource.REPORTED if request.total else WindowSource.MODEL
        if request.model is not None:
            changes["model"] = request.model
        if request.reserved is not None:
            changes["reserved"] = request.reserved
        if request.compact_at is not None:
            # An explicit compact_at beyond the window is refused; one carried over is clamped (``_valid``).
            ceiling = changes.get("total", state.total) - changes.get("reserved", state.reserved)
            if request.compact_at > ceiling:
                raise InvalidRequest(f"compact_at ({request.compact_at}) must be at most total - reserved ({ceiling})")
            changes["compact_at"] = request.compact_at
        return changes

    return await _commit(call, deps, HistoryOp.SET, update)


async def add(call: Call[TokensDelta], deps: Deps) -> Answer:
    tokens = call.body.tokens
    # Saturates rather than overflows: every stored count stays a valid (JSON-safe) one.
    return await _commit(
        call, deps, HistoryOp.ADD, lambda state: {"used": min(MAX_TOKENS, state.used + tokens), "estimated": True}
    )


async def free(call: Call[TokensDelta], deps: Deps) -> Answer:
    tokens = call.body.tokens
    return await _commit(
        call, deps, HistoryOp.FREE, lambda state: {"used": max(0, state.used - tokens), "estimated": True}
    )


async def usage(call: Call[UsageRequest], deps: Deps) -> Answer:
    """A provider's usage report: what the next request carries of this response becomes the context used,
    exactly (its input and output, less the reasoning the model drops from context: ``schemas.usage``)."""
    request = call.body
    counts = request.usage.counts()
    continues = request.continues or counts.input is None
    named = deps.models.find(request.model) if request.model is not None else None
    default_window = deps.store.settings.default_context_window

    def update(state: ContextState) -> dict[str, Any]:
        changes: dict[str, Any] = {"estimated": request.estimated, "reasoning": counts.reasoning}
        model, spec = request.model, named
        if continues and model is None:
            # The rest of the response reported just before: its model and window stand.
            model = state.model
            spec = deps.models.find(model) if model is not None else None
        else:
            changes["model"] = model
            if spec is not None:
                changes["total"], changes["window"] = spec.context_window, WindowSource.MODEL
            elif state.window_source(default_window) is WindowSource.MODEL:
                # Another model's window would be a wrong figure shown as a right one: the default says it is a guess.
                changes["total"], changes["window"] = default_window, WindowSource.DEFAULT
        input_tokens = counts.input if counts.input is not None else state.last_input
        if input_tokens is None:
            raise InvalidRequest(
                "usage has no input_tokens and continues no earlier report of this session: report the "
                "response's start first (Anthropic: the message_start event, then its message_delta)"
            )
        changes["last_input"] = input_tokens
        changes["used"] = counts.context(input_tokens, keeps_reasoning=spec is not None and spec.keeps_reasoning)
        return changes

    return await _commit(call, deps, HistoryOp.USAGE, update)


async def reset(call: Call[EmptyRequest], deps: Deps) -> Answer:
    """Back to zero used; the window, the model and the compaction policy are kept."""
    cleared = {"used": 0, "estimated": False, "reasoning": None, "last_input": None}
    return await _commit(call, deps, HistoryOp.RESET, lambda state: cleared)


async def compact(call: Call[CompactRequest], deps: Deps) -> Answer:
    """The agent compacted its context: ``used`` is its size now; one more compaction is recorded."""
    used = call.body.used

    def update(state: ContextState) -> dict[str, Any]:
        return {
            "used": used,
            "estimated": False,
            "compactions": state.compactions + 1,
            "compacted_at": utc_now(),
            "reasoning": None,
            "last_input": None,
        }

    return await _commit(call, deps, HistoryOp.COMPACT, update)


async def history(call: Call[HistoryRequest], deps: Deps) -> ContextHistory:
    return await deps.store.read_history(call.session_id, call.body.limit)


OPERATIONS = (
    Operation(ContextOp.GET, EmptyRequest, get, "A session's context usage (zero state if none)."),
    Operation(ContextOp.SET, ContextSetRequest, set_, "Set used (and total, model, reserved, compact_at)."),
    Operation(ContextOp.ADD, TokensDelta, add, "Add tokens to the context used (an estimate)."),
    Operation(ContextOp.FREE, TokensDelta, free, "Free tokens (an estimate); floors at 0."),
    Operation(ContextOp.USAGE, UsageRequest, usage, "Set used from a provider's or framework's usage report."),
    Operation(ContextOp.RESET, EmptyRequest, reset, "Zero the context used; window, model and policy are kept."),
    Operation(ContextOp.COMPACT, CompactRequest, compact, "Record a compaction: used becomes the compacted size."),
    Operation(ContextOp.HISTORY, HistoryRequest, history, "The newest points of the session's history."),
)
