"""Subjects of ctxmeter's functions, and the checks that keep caller input out of them."""

from __future__ import annotations

import re
from typing import Final

from ctxmeter_client._errors import CtxMeterError
from ctxmeter_client._models import ErrorCode

PREFIX: Final = "ctxmeter"
SESSION_ID_MAX_LENGTH: Final = 128
# A session id becomes a subject token: a ".", "*", ">" or space would reach other sessions' subjects.
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Idempotency keys travel in a NATS header: visible ASCII only (no CR/LF that could end the header,
# no spaces a header parser might trim), at most 128 characters as the server accepts.
_IDEMPOTENCY_KEY: Final = re.compile(r"[\x21-\x7e]{1,128}")

MSG_ID_HEADER: Final = "Nats-Msg-Id"
DUPLICATE_HEADER: Final = "Ctxmeter-Duplicate"
# NATS micro's error headers: the status (400, 404, 409, 413, 500) and the message.
ERROR_CODE_HEADER: Final = "Nats-Service-Error-Code"
ERROR_HEADER: Final = "Nats-Service-Error"


def _excerpt(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_session_id(session_id: object) -> str:
    if not isinstance(session_id, str) or _SESSION_ID.fullmatch(session_id) is None:
        raise CtxMeterError(
            ErrorCode.INVALID_SESSION_ID.value,
            f"session id {_excerpt(session_id)} is invalid: "
            f"use 1-{SESSION_ID_MAX_LENGTH} characters of A-Z a-z 0-9 _ -",
        )
    return session_id


def check_idempotency_key(key: object) -> str:
    if not isinstance(key, str) or _IDEMPOTENCY_KEY.fullmatch(key) is None:
        raise CtxMeterError(
            ErrorCode.INVALID_REQUEST.value,
            f"idempotency key {_excerpt(key)} is invalid: use 1-128 visible ASCII characters",
        )
    return key


def context(op: str, session_id: str) -> str:
    return f"{PREFIX}.context.{op}.{check_session_id(session_id)}"


def tokens_draft(session_id: str) -> str:
    return f"{PREFIX}.tokens.draft.{check_session_id(session_id)}"


TOKENS_COUNT: Final = f"{PREFIX}.tokens.count"
MODELS: Final = f"{PREFIX}.models"
