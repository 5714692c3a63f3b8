"""JSON responses in the contract's shapes."""

from __future__ import annotations

from aiohttp import web

from schemas.models import ErrorCode, ErrorDetail, ErrorReply

JSON = "application/json"


def error_body(code: ErrorCode, message: str) -> bytes:
    return ErrorReply(error=ErrorDetail(code=code, message=message)).model_dump_json().encode()


def error_response(status: int, code: ErrorCode, message: str) -> web.Response:
    return web.Response(status=status, body=error_body(code, message), content_type=JSON)


def json_response(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type=JSON)
