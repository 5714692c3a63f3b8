"""Reading request parameters: the session id from the path, integers from the query string, which
parameters a route takes, whether a request asks for a WebSocket."""

from __future__ import annotations

from typing import Final

from aiohttp import hdrs, web

from ctxmeter.limits import MAX_INT_DIGITS
from schemas import subjects
from schemas.excerpt import excerpt
from schemas.models import ErrorCode
from ws_edge.security import TOKEN_PARAM, Refused

SESSION_PARAM: Final = "sid"
# Query parameters every API route takes: the browser's token (a WebSocket cannot send headers).
ALWAYS_ALLOWED: Final = frozenset({TOKEN_PARAM})


def session_param(request: web.Request) -> str:
    """The path's session id, validated before it can reach a subject or key (400 otherwise)."""
    try:
        return subjects.validate_session_id(request.match_info.get(SESSION_PARAM, ""))
    except subjects.InvalidSessionId as invalid:
        raise Refused(400, ErrorCode.INVALID_SESSION_ID, str(invalid)) from None


def query_int(request: web.Request, name: str) -> int | None:
    """``?name=123`` as an int; absent → None. ASCII digits only (``int()`` would also take ``" 1_0"`` or
    Arabic-Indic digits); a sign is allowed so that the functions report a negative value as such."""
    raw = request.query.get(name)
    if raw is None:
        return None
    digits = raw[1:] if raw[:1] in {"-", "+"} else raw
    if not (digits.isascii() and digits.isdigit() and len(digits) <= MAX_INT_DIGITS):
        raise Refused(
            400, ErrorCode.INVALID_REQUEST, f"query parameter {name!r} must be an integer, not {excerpt(raw)}"
        )
    return int(raw)


def wants_websocket(request: web.BaseRequest) -> bool:
    """Whether the request asks to be upgraded to a WebSocket (it may still be refused)."""
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def check_query(request: web.Request, *allowed: str) -> None:
    """Unknown or repeated query parameters are refused, as unknown body fields are: a typo such as
    ``?totl=`` must not be dropped silently, nor ``?used=1&used=2`` settled by picking one."""
    for name in request.query:
        if name not in allowed and name not in ALWAYS_ALLOWED:
            raise Refused(400, ErrorCode.INVALID_REQUEST, f"unknown query parameter {excerpt(name)}")
        if len(request.query.getall(name)) > 1:
            raise Refused(400, ErrorCode.INVALID_REQUEST, f"query parameter {excerpt(name)} is given more than once")
