"""Domain errors raised by handlers; one wrapper (``functions.service``) turns them into replies."""

from __future__ import annotations

from typing import ClassVar

from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ctxmeter.limits import MAX_MESSAGE_CHARS, MAX_PROBLEMS_LISTED, PROBLEM_CHARS
from schemas.excerpt import excerpt, shorten
from schemas.models import ErrorCode, ErrorDetail, ErrorReply
from schemas.usage import OWN_ERRORS


class CtxmeterError(Exception):
    """An error a caller can act on; ``status`` is the HTTP-like code sent in the micro header."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        # Messages are built with ``excerpt`` wherever they quote input; this is the last guard for a
        # CR or LF, which would end the Nats-Service-Error header early or inject another.
        message = shorten(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message

    def reply(self) -> ErrorReply:
        return ErrorReply(error=ErrorDetail(code=self.code, message=self.message))

    def reply_bytes(self) -> bytes:
        return self.reply().model_dump_json().encode()

    def headers(self) -> dict[str, str]:
        return {ERROR_HEADER: self.message, ERROR_CODE_HEADER: str(self.status)}


class InvalidJson(CtxmeterError):
    code = ErrorCode.INVALID_JSON
    status = 400


class InvalidRequest(CtxmeterError):
    code = ErrorCode.INVALID_REQUEST
    status = 400


class Untokenizable(InvalidRequest):
    """tiktoken's pre-tokenizer gave up on the text (its regex ran out of backtracking stack)."""


class InvalidSessionId(CtxmeterError):
    code = ErrorCode.INVALID_SESSION_ID
    status = 400


class UnknownModel(CtxmeterError):
    code = ErrorCode.UNKNOWN_MODEL
    status = 404


class PayloadTooLarge(CtxmeterError):
    code = ErrorCode.PAYLOAD_TOO_LARGE
    status = 413


class Conflict(CtxmeterError):
    """Compare-and-set kept losing: the key is too contended right now. Safe to retry."""

    code = ErrorCode.CONFLICT
    status = 409


class StoreFull(CtxmeterError):
    """JetStream has no room for the write: the bucket's byte limit, or the server's storage. Not worth
    an immediate retry; room comes back as sessions expire (or an operator raises the limit)."""

    code = ErrorCode.STORE_FULL
    status = 507


class Internal(CtxmeterError):
    code = ErrorCode.INTERNAL
    status = 500


def _location(parts: tuple[int | str, ...]) -> str:
    """Where a problem is (``usage.prompt_tokens``), each part bounded: a field name is client input."""
    return ".".join(str(part) if isinstance(part, int) else excerpt(part)[1:-1] for part in parts) or "body"


def _describe(problem: ErrorDetails) -> str:
    """A problem's message: ctxmeter's own words whole (they quote only excerpts of the input), pydantic's
    cut to a bounded excerpt (they may quote a pattern, a literal list or the input)."""
    if problem["type"] in OWN_ERRORS:
        return problem["msg"]
    return excerpt(problem["msg"], PROBLEM_CHARS)[1:-1]


def from_validation_error(error: ValidationError) -> CtxmeterError:
    """Map pydantic's report on a request body to ``invalid_json`` or ``invalid_request``.

    Only bounded excerpts of the input reach the message (never a whole field name or value), so the
    reply stays small whatever the request held.
    """
    problems = error.errors(include_url=False, include_input=False, include_context=False)
    if any(problem["type"] == "json_invalid" for problem in problems):
        return InvalidJson(f"body is not valid JSON: {excerpt(problems[0]['msg'], PROBLEM_CHARS)[1:-1]}")
    parts = [f"{_location(problem['loc'])}: {_describe(problem)}" for problem in problems[:MAX_PROBLEMS_LISTED]]
    more = f" (and {len(problems) - MAX_PROBLEMS_LISTED} more)" if len(problems) > MAX_PROBLEMS_LISTED else ""
    return InvalidRequest("; ".join(parts) + more)
