"""What a NATS function is: a request model, a pure handler, and the subject operation it serves.

A handler is ``async def op(call, deps) -> reply``: it sees the parsed request and what it may touch,
never NATS, so it is tested by calling it. Adding an endpoint is the request model, the operation in
``schemas.subjects``, the handler, and one line ``Operation(op, Model, handler, "description")``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from functions.counting import TokenCounter
from functions.registry import ModelRegistry
from functions.store import SessionStore
from schemas import subjects
from schemas.models import Reply, Request

RequestT = TypeVar("RequestT", bound=Request)


@dataclass(frozen=True)
class Deps:
    """Everything a handler may touch."""

    store: SessionStore
    counter: TokenCounter
    models: ModelRegistry


@dataclass(frozen=True, slots=True)
class Call(Generic[RequestT]):
    """One request as a handler sees it."""

    body: RequestT
    session: str | None = None
    # The caller's idempotency key (validated), for state-changing operations.
    key: str | None = None
    # When what the change reports was observed (Unix ns, from ``Ctxmeter-Observed-At``), if the caller says.
    observed: int | None = None

    @property
    def session_id(self) -> str:
        """The validated session id of a per-session operation."""
        assert self.session is not None, "a per-session operation always has a session id"
        return self.session


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply with what the adapter must say beside it: ``duplicate`` when the change's idempotency key
        had been applied before, ``stale`` when it was observed before the session's newest applied change (either
    way nothing changed; the reply is the current state)."""

    # The reply, or its JSON when serialized already (a change's reply is the bytes its event carried).
    reply: Reply | bytes
    duplicate: bool = False
    # The change was older than the newest observed time applied to its session: nothing changed.
    stale: bool = False


Handler = Callable[[Call[RequestT], Deps], Awaitable[Reply | Answer]]


@dataclass(frozen=True)
class Operation(Generic[RequestT]):
    op: subjects.Operation
    request_model: type[RequestT]
    handler: Handler[RequestT]
    description: str

    @property
    def group(self) -> str:
        return subjects.group_of(self.op)

    @property
    def per_session(self) -> bool:
        return subjects.is_per_session(self.op)

    @property
    def changes_state(self) -> bool:
        """State-changing operations also accept a plain publish (no reply subject)."""
        return subjects.changes_state(self.op)
