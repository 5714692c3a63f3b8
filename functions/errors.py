"""Domain errors raised by handlers; one wrapper (``functions.service``) turns them into replies."""

from __future__ import annotations

from typing import ClassVar, Final

from pydantic import ValidationError

from schemas.models import ErrorCode, ErrorDetail, ErrorReply

# The NATS micro error headers, as nats.micro and every other micro client read them.
ERROR_HEADER: Final = "Nats-Service-Error"
ERROR_CODE_HEADER: Final = "Nats-Service-Error-Code"


def _printable(text: str) -> str:
    """``text`` with unprintable characters escaped (``\\r``, ``\\n``, ``\\x00``...).

    A message can quote what a client sent (a field name, a model name) and is also sent as the
    ``Nats-Service-Error`` header, where a raw CR or LF would end the header early or inject another.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


class CtxmeterError(Exception):
    """An error a caller can act on; ``status`` is the HTTP-like code sent in the micro header."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        message = _printable(message)
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


class Internal(CtxmeterError):
    code = ErrorCode.INTERNAL
    status = 500


def from_validation_error(error: ValidationError) -> CtxmeterError:
    """Map pydantic's report on a request body to ``invalid_json`` or ``invalid_request``."""
    problems = error.errors(include_url=False, include_input=False)
    if any(problem["type"] == "json_invalid" for problem in problems):
        return InvalidJson(f"body is not valid JSON: {problems[0]['msg']}")
    parts = []
    for problem in problems[:5]:
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        parts.append(f"{where}: {problem['msg']}")
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return InvalidRequest("; ".join(parts) + more)
