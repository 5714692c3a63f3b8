"""What a NATS function is: a request model, a pure handler, and how it is exposed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from functions.counting import TokenCounter
from functions.store import SessionStore
from schemas.models import Reply, Request


@dataclass(frozen=True)
class Deps:
    """Everything a handler may touch."""

    store: SessionStore
    counter: TokenCounter


# handler(session_id or None, parsed request, deps) -> reply model
Handler = Callable[[Any, Any, Deps], Awaitable[Reply]]


@dataclass(frozen=True)
class Operation:
    group: str
    name: str
    request_model: type[Request]
    handler: Handler
    per_session: bool
    # State-changing operations also accept a plain publish (no reply subject).
    changes_state: bool
    description: str
