"""Who may connect: JWT grants, the Origin check, per-IP connect rate and token buckets.

Everything here runs before a socket is upgraded, so a refused client costs one HTTP response.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web

from ctxmeter.limits import MAX_TRACKED_IPS
from schemas.excerpt import excerpt
from schemas.models import ErrorCode
from ws_edge.proxies import client_of

JWT_ALGORITHM: Final = "HS256"
SESSIONS_CLAIM: Final = "sessions"
# The query parameter a browser's token comes in (a WebSocket cannot send an Authorization header).
TOKEN_PARAM: Final = "token"
ANY_SESSION: Final = "*"

# Hosts always allowed as an Origin when no list is configured: a developer's browser on this machine.
LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
# Listen addresses that stand for every address: no origin can be "the address the edge is bound to".
WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})
ORIGIN_SCHEMES: Final = frozenset({"http", "https"})
# Methods that change nothing; any other (POST) must come from an allowed origin when a browser sends it.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


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
    return request.query.get(TOKEN_PARAM) or None


def verify_token(token: str | None, secret: str) -> Grant:
    if not token:
        raise Refused(401, ErrorCode.UNAUTHORIZED, "a token is required (Authorization: Bearer, or ?token=)")
    # Imported when auth is on: PyJWT loads ``cryptography`` (about 8 MB resident), which an edge without
    # a secret never needs.
    import jwt

    try:
        # ``exp`` is required: a token that never expires could never be taken back.
        claims = jwt.decode(token, secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise Refused(401, ErrorCode.UNAUTHORIZED, "the token has expired") from None
    except jwt.InvalidTokenError as invalid:
        raise Refused(401, ErrorCode.UNAUTHORIZED, f"invalid token: {excerpt(str(invalid))[1:-1]}") from None
    sessions = claims.get(SESSIONS_CLAIM)
    expires_at = _expiry(claims["exp"])
    if sessions == ANY_SESSION or sessions == [ANY_SESSION]:
        return Grant(sessions=None, expires_at=expires_at)
    if isinstance(sessions, list) and all(isinstance(item, str) for item in sessions):
        return Grant(sessions=frozenset(sessions), expires_at=expires_at)
    raise Refused(401, ErrorCode.UNAUTHORIZED, 'invalid token: the "sessions" claim must be a list of ids or "*"')


def _expiry(exp: object) -> float:
    """``exp`` as Unix seconds. PyJWT has compared it with the clock, but it takes any integer (10**400)
    and digit strings too; the edge keeps it as a float and sleeps until it, so it must be a finite number."""
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise Refused(401, ErrorCode.UNAUTHORIZED, 'invalid token: the "exp" claim must be a number')
    try:
        expires_at = float(exp)
    except OverflowError:
        expires_at = math.inf
    if not math.isfinite(expires_at):
        raise Refused(401, ErrorCode.UNAUTHORIZED, 'invalid token: the "exp" claim is out of range')
    return expires_at


def authorize(request: web.Request, secret: str | None, session_id: str | None) -> Grant | None:
    """The caller's grant (None when auth is off); 401 without a valid token, 403 for another session."""
    if secret is None:
        return None
    grant = verify_token(bearer_token(request), secret)
    if session_id is not None and not grant.allows(session_id):
        raise Refused(403, ErrorCode.FORBIDDEN, f"the token does not grant session {excerpt(session_id)}")
    return grant


def authorize_all(request: web.Request, secret: str | None) -> Grant | None:
    """As ``authorize``, for what shows every session (the sessions overview): a token that grants only
    some sessions is 403."""
    grant = authorize(request, secret, None)
    if grant is not None and grant.sessions is not None:
        raise Refused(403, ErrorCode.FORBIDDEN, 'this needs a token whose "sessions" claim is ["*"]')
    return grant


# -- Origin -----------------------------------------------------------------------------------


def _normalize(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str, allowed: list[str], bound_host: str, *, secure: bool = False) -> bool:
    """An explicit list is exact (scheme, host and port). Without one: this machine's loopback names and
    the address the edge is bound to (unless a wildcard), on any port; when the client came over HTTPS
    (``secure``), that address only from an https page (plain HTTP from another machine could have been
    rewritten on its way; browsers trust http://localhost as they trust HTTPS).

    Never the request's own ``Host``: a page on evil.example whose name is made to resolve to this edge
    (DNS rebinding) sends ``Host`` and ``Origin`` alike, so "same as Host" would let it in."""
    if allowed:
        return _normalize(origin) in {_normalize(entry) for entry in allowed}
    try:
        parts = urlsplit(_normalize(origin))
        host = parts.hostname
        parts.port  # noqa: B018 - validates the port (a ValueError when it is not one)
    except ValueError:
        return False
    # An origin is scheme://host[:port] and nothing more.
    if parts.scheme not in ORIGIN_SCHEMES or host is None or parts.username is not None or parts.path or parts.query:
        return False
    bound = bound_host.strip("[]").lower()
    if host in LOCAL_HOSTS:
        return True
    return bound not in WILDCARD_HOSTS and host == bound and (parts.scheme == "https" or not secure)


def check_origin(request: web.Request, allowed: list[str], bound_host: str) -> None:
    # Only browsers send Origin; a missing one is another program, which a forged header would fool anyway.
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin, allowed, bound_host, secure=client_of(request).secure):
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


def admit_write(limiter: IpRateLimiter, ip: str) -> None:
    """A request that changes state, within its address's rate (each one can create a session's state)."""
    if not limiter.allow(ip):
        raise Refused(429, ErrorCode.RATE_LIMITED, "too many changes from your address; slow down")


class ConnectionGate:
    """Admission for new sockets: the per-IP connect rate, checked before upgrading. (The cap on open
    connections, sockets or not, is the connection guard's: ``ws_edge.guard``.)"""

    def __init__(self, limiter: IpRateLimiter) -> None:
        self.limiter = limiter

    def admit_rate(self, ip: str) -> None:
        if not self.limiter.allow(ip):
            raise Refused(429, ErrorCode.RATE_LIMITED, "too many new connections from your address; slow down")
