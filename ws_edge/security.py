"""Who may connect: JWT grants, the Origin check, per-IP connect rate and token buckets.

Everything here runs before a socket is upgraded, so a refused client costs one HTTP response.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import jwt
from aiohttp import web

from ctxmeter.limits import MAX_TRACKED_IPS
from schemas.excerpt import excerpt
from schemas.models import ErrorCode

JWT_ALGORITHM: Final = "HS256"
SESSIONS_CLAIM: Final = "sessions"
ANY_SESSION: Final = "*"

# Hosts always allowed as an Origin when no list is configured: a developer's browser on this machine.
LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


class Refused(Exception):
    """A request refused before it reaches a handler's work: HTTP status, error code, message."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# -- JWT --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: some sessions (None: all of them) until ``expires_at`` (Unix s)."""

    sessions: frozenset[str] | None
    expires_at: float

    def allows(self, session_id: str) -> bool:
        return self.sessions is None or session_id in self.sessions


def bearer_token(request: web.Request) -> str | None:
    """``Authorization: Bearer <token>``, else ``?token=`` (browsers cannot set headers on a WebSocket)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token") or None


def verify_token(token: str | None, secret: str) -> Grant:
    if not token:
        raise Refused(401, ErrorCode.UNAUTHORIZED, "a token is required (Authorization: Bearer, or ?token=)")
    try:
        # ``exp`` is required: a token that never expires could never be taken back.
        claims = jwt.decode(token, secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise Refused(401, ErrorCode.UNAUTHORIZED, "the token has expired") from None
    except jwt.InvalidTokenError as invalid:
        raise Refused(401, ErrorCode.UNAUTHORIZED, f"invalid token: {excerpt(str(invalid))[1:-1]}") from None
    sessions = claims.get(SESSIONS_CLAIM)
    expires_at = float(claims["exp"])
    if sessions == ANY_SESSION or sessions == [ANY_SESSION]:
        return Grant(sessions=None, expires_at=expires_at)
    if isinstance(sessions, list) and all(isinstance(item, str) for item in sessions):
        return Grant(sessions=frozenset(sessions), expires_at=expires_at)
    raise Refused(401, ErrorCode.UNAUTHORIZED, 'invalid token: the "sessions" claim must be a list of ids or "*"')


def authorize(request: web.Request, secret: str | None, session_id: str | None) -> Grant | None:
    """The caller's grant (None when auth is off); 401 without a valid token, 403 for another session."""
    if secret is None:
        return None
    grant = verify_token(bearer_token(request), secret)
    if session_id is not None and not grant.allows(session_id):
        raise Refused(403, ErrorCode.FORBIDDEN, f"the token does not grant session {session_id}")
    return grant


# -- Origin -----------------------------------------------------------------------------------


def _normalize(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_allowed(request: web.Request, origin: str, allowed: list[str]) -> bool:
    """An explicit list is exact (scheme, host and port); without one, the edge's own origin and any
    port on this machine's loopback names."""
    if allowed:
        return _normalize(origin) in {_normalize(entry) for entry in allowed}
    origin = _normalize(origin)
    if origin == _normalize(f"{request.scheme}://{request.host}"):
        return True
    try:
        parts = urlsplit(origin)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and host is not None and host in LOCAL_HOSTS


def check_origin(request: web.Request, allowed: list[str]) -> None:
    # Only browsers send Origin; a missing one is another program, which a forged header would fool anyway.
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(request, origin, allowed):
        raise Refused(403, ErrorCode.FORBIDDEN, f"origin {excerpt(origin)} is not allowed")


# -- rate limits ------------------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; each take costs one."""

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._updated = now

    def take(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class IpRateLimiter:
    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = MAX_TRACKED_IPS,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._max_tracked = max_tracked
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, ip: str) -> bool:
        now = self._clock()
        bucket = self._buckets.get(ip)
        if bucket is None:
            bucket = self._buckets[ip] = TokenBucket(self._rate, self._burst, now)
            if len(self._buckets) > self._max_tracked:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(ip)
        return bucket.take(now)


class ConnectionGate:
    """Admission for new sockets: the per-IP connect rate and the total cap, counted before upgrading."""

    def __init__(self, limiter: IpRateLimiter, max_connections: int) -> None:
        self.limiter = limiter
        self.max_connections = max_connections
        # Sockets open or being opened; a slot is held from admission to the handler's end.
        self.open = 0

    def admit_rate(self, ip: str) -> None:
        if not self.limiter.allow(ip):
            raise Refused(429, ErrorCode.RATE_LIMITED, "too many new connections from your address; slow down")

    def admit_capacity(self) -> None:
        if self.open >= self.max_connections:
            raise Refused(503, ErrorCode.UNAVAILABLE, "this edge is at its connection limit; try another or retry")
