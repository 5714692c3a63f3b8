"""Every NATS subject and KV key ctxmeter uses, built in one place.

A session id becomes a subject token and a KV key part, so it is validated here before any subject
is built: a ``.`` would add a token, ``*``/``>`` would be wildcards and a space would end the subject,
each letting one session's traffic reach another.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

from schemas.excerpt import excerpt
from schemas.limits import SESSION_ID_MAX_LENGTH

PREFIX: Final = "ctxmeter"
SERVICE_NAME: Final = "ctxmeter"
QUEUE_GROUP: Final = "ctxmeter"

SESSION_ID_PATTERN: Final = rf"[A-Za-z0-9_-]{{1,{SESSION_ID_MAX_LENGTH}}}"
_SESSION_ID_RE: Final = re.compile(SESSION_ID_PATTERN)


class InvalidSessionId(ValueError):
    """The text cannot be a session id; it must never reach a subject or key."""


class ContextOp(StrEnum):
    GET = "get"
    SET = "set"
    ADD = "add"
    FREE = "free"
    USAGE = "usage"
    RESET = "reset"
    COMPACT = "compact"
    HISTORY = "history"


class TokensOp(StrEnum):
    COUNT = "count"
    DRAFT = "draft"


class CatalogOp(StrEnum):
    MODELS = "models"


# Every request/reply endpoint of the functions, named by its subject's operation.
Operation = ContextOp | TokensOp | CatalogOp

TOKENS_GROUP: Final = f"{PREFIX}.tokens"
CONTEXT_GROUP: Final = f"{PREFIX}.context"
CATALOG_GROUP: Final = PREFIX

# Operations that only read; every other one changes state and also takes a plain publish.
READ_ONLY: Final[frozenset[Operation]] = frozenset({ContextOp.GET, ContextOp.HISTORY, TokensOp.COUNT, CatalogOp.MODELS})
# Operations that take no session id.
SESSIONLESS: Final[frozenset[Operation]] = frozenset({TokensOp.COUNT, CatalogOp.MODELS})


def group_of(op: Operation) -> str:
    """The micro service group (subject prefix) an operation's endpoint lives in."""
    if isinstance(op, ContextOp):
        return CONTEXT_GROUP
    return TOKENS_GROUP if isinstance(op, TokensOp) else CATALOG_GROUP


def is_per_session(op: Operation) -> bool:
    return op not in SESSIONLESS


def changes_state(op: Operation) -> bool:
    return op not in READ_ONLY


def is_session_id(candidate: object) -> bool:
    return isinstance(candidate, str) and _SESSION_ID_RE.fullmatch(candidate) is not None


def validate_session_id(candidate: object) -> str:
    """Return ``candidate`` if it is a valid session id, else raise :class:`InvalidSessionId`."""
    if not is_session_id(candidate):
        raise InvalidSessionId(
            f"session id {excerpt(candidate)} is invalid: use 1-{SESSION_ID_MAX_LENGTH} characters of A-Z a-z 0-9 _ -"
        )
    assert isinstance(candidate, str)
    return candidate


# -- request/reply subjects -------------------------------------------------------------------


def request(op: Operation, session_id: str | None = None) -> str:
    """The subject a request for ``op`` goes to; per-session operations need a valid session id."""
    if not is_per_session(op):
        return f"{group_of(op)}.{op}"
    if session_id is None:
        raise InvalidSessionId(f"{op} needs a session id")
    return f"{group_of(op)}.{op}.{validate_session_id(session_id)}"


def tokens_count() -> str:
    """``ctxmeter.tokens.count``."""
    return request(TokensOp.COUNT)


def tokens_draft(session_id: str) -> str:
    """``ctxmeter.tokens.draft.<sid>``."""
    return request(TokensOp.DRAFT, session_id)


def context(op: ContextOp, session_id: str) -> str:
    """``ctxmeter.context.<op>.<sid>``."""
    return request(op, session_id)


def models() -> str:
    """``ctxmeter.models``."""
    return request(CatalogOp.MODELS)


def operation_label(subject: str) -> str:
    """``context.add`` for ``ctxmeter.context.add.<sid>``: a metric label with no session id in it."""
    tokens = subject.split(".")
    return ".".join(tokens[1:3]) if len(tokens) >= 3 else ".".join(tokens[1:])


def history(bucket: str, session_id: str) -> str:
    """``ctxmeter.history.<bucket>.<sid>``: where a session's history points are stored (the
    bucket in it keeps two deployments, or two test buckets, from sharing one stream's subjects)."""
    return f"{PREFIX}.history.{bucket}.{validate_session_id(session_id)}"


def history_wildcard(bucket: str) -> str:
    """``ctxmeter.history.<bucket>.*``: every session's history points (the history stream's subjects)."""
    return f"{PREFIX}.history.{bucket}.*"


def events(session_id: str) -> str:
    """``ctxmeter.events.<sid>``: every change of a session, for the edges (and anyone) to relay."""
    return f"{PREFIX}.events.{validate_session_id(session_id)}"


def is_inbox(subject: str, prefix: str) -> bool:
    """Whether ``subject`` is a requester's inbox under ``prefix`` (``_INBOX``): the only kind of reply
    subject the functions answer, so a request cannot make them publish into the bucket, the history,
    events or the JetStream API by naming one of those as its reply subject."""
    return subject.startswith(prefix + ".") and len(subject) > len(prefix) + 1


def service_ping() -> str:
    """The micro service discovery subject every ctxmeter functions process answers."""
    return f"$SRV.PING.{SERVICE_NAME}"


# -- micro service endpoints ----------------------------------------------------------------


def endpoint_subject(op: Operation) -> str:
    """The subject of an endpoint inside its group; per-session ones take the id as last token."""
    return f"{op}.*" if is_per_session(op) else str(op)


def session_from_subject(subject: str) -> str:
    """The session id carried as the last token of a per-session subject, validated."""
    return validate_session_id(subject.rsplit(".", 1)[-1])


# -- KV keys --------------------------------------------------------------------------------


CONTEXT_KEY_PREFIX: Final = "context."


def kv_key_subject(bucket: str, key: str) -> str:
    """``$KV.<bucket>.<key>``: where a write to a key of the bucket is published (JetStream's KV layout)."""
    return f"$KV.{bucket}.{key}"


def context_key(session_id: str) -> str:
    """``context.<sid>``: a session's context state in the bucket (``$KV.<bucket>.context.<sid>``)."""
    return f"{CONTEXT_KEY_PREFIX}{validate_session_id(session_id)}"


def every_context_key() -> str:
    """The KV key filter of every session's context (the sessions overview watches it)."""
    return f"{CONTEXT_KEY_PREFIX}*"


def tokens_key(session_id: str) -> str:
    """``tokens.<sid>``: a session's draft count in the bucket."""
    return f"tokens.{validate_session_id(session_id)}"
