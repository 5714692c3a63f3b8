"""JWT on the HTTP API and the socket, expiry of an open socket, and the Origin check on upgrade."""

from __future__ import annotations

import time

import aiohttp
import jwt
import pytest

from functions.runner import FunctionsRuntime
from tests.edge.conftest import EdgeFactory
from tests.edge.helpers import close_code, next_frame, token, ws_url
from tests.edge.test_limits import handshake_status
from ws_edge.app import EdgeServer

SECRET = "test-secret-with-enough-length-for-hs256"


@pytest.fixture
async def secured(make_edge: EdgeFactory, functions: FunctionsRuntime) -> object:
    async with make_edge(jwt_secret=SECRET) as edge:
        yield edge


def bad_tokens(session_id: str) -> dict[str, str]:
    return {
        "expired": token(SECRET, [session_id], expires_in=-10),
        "wrong signature": token("another-secret-of-the-same-length-000", [session_id]),
        "garbage": "not.a.jwt",
        "no exp": jwt.encode({"sessions": [session_id]}, SECRET, algorithm="HS256"),
        "sessions not a list": token(SECRET, session_id),
        "sessions of numbers": token(SECRET, [1, 2]),
        "no sessions": jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),
        "alg none": jwt.encode({"sessions": "*", "exp": int(time.time()) + 60}, None, algorithm="none"),
    }


async def test_http_needs_a_valid_token(secured: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    url = f"{secured.url}/api/counters/context/{session_id}"
    async with http.get(url) as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "unauthorized"
    for name, bad in bad_tokens(session_id).items():
        async with http.get(url, headers={"Authorization": f"Bearer {bad}"}) as r:
            assert r.status == 401, name
    async with http.get(url, headers={"Authorization": f"Bearer {token(SECRET, ['someone-else'])}"}) as r:
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "forbidden"
    for sessions in ([session_id], ["x", session_id], "*", ["*"]):
        async with http.get(url, headers={"Authorization": f"Bearer {token(SECRET, sessions)}"}) as r:
            assert r.status == 200, sessions
    async with http.get(url, params={"token": token(SECRET, [session_id])}) as r:
        assert r.status == 200
    # The stateless count needs a token too, whichever sessions it grants.
    async with http.post(f"{secured.url}/api/counters/tokens", json={"text": "hi", "model": "gpt-4o"}) as r:
        assert r.status == 401
    headers = {"Authorization": f"Bearer {token(SECRET, ['anything'])}"}
    async with http.post(
        f"{secured.url}/api/counters/tokens", json={"text": "hi", "model": "gpt-4o"}, headers=headers
    ) as r:
        assert r.status == 200
    # Health and metrics are for operators' probes, not behind the token.
    for path in ("/healthz", "/readyz", "/metrics"):
        async with http.get(f"{secured.url}{path}") as r:
            assert r.status == 200, path


async def test_socket_needs_a_valid_token(secured: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    url = ws_url(secured.url, session_id)
    assert await handshake_status(http, url) == 401
    for name, bad in bad_tokens(session_id).items():
        assert await handshake_status(http, ws_url(secured.url, session_id, token=bad)) == 401, name
    assert await handshake_status(http, ws_url(secured.url, session_id, token=token(SECRET, ["other"]))) == 403
    for sessions in ([session_id], "*", ["*"]):
        async with http.ws_connect(ws_url(secured.url, session_id, token=token(SECRET, sessions))) as ws:
            assert (await next_frame(ws))["type"] == "context_update"
    headers = {"Authorization": f"Bearer {token(SECRET, [session_id])}"}
    async with http.ws_connect(url, headers=headers) as ws:
        assert (await next_frame(ws))["type"] == "context_update"


async def test_open_socket_is_closed_when_its_token_expires(
    secured: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    short = token(SECRET, [session_id], expires_in=2)
    async with http.ws_connect(ws_url(secured.url, session_id, token=short)) as ws:
        await next_frame(ws)
        assert await close_code(ws) == 1008
    assert time.time() >= jwt.decode(short, options={"verify_signature": False})["exp"]


async def test_origin_allow_list(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with make_edge(allowed_origins="https://app.example, https://other.example") as edge:
        url = ws_url(edge.url, session_id)
        for origin in ("https://app.example", "https://other.example", "HTTPS://APP.EXAMPLE/"):
            async with http.ws_connect(url, headers={"Origin": origin}) as ws:
                await next_frame(ws)
        # Not a browser: no Origin, not refused for that.
        async with http.ws_connect(url) as ws:
            await next_frame(ws)
        for origin in ("https://evil.example", "http://app.example", "https://app.example:8443", "http://localhost"):
            assert await handshake_status(http, url, headers={"Origin": origin}) == 403, origin


async def test_origin_default_is_own_and_loopback(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    url = ws_url(edge.url, session_id)
    for origin in (edge.url, "http://localhost:5173", "http://127.0.0.1:9", "https://localhost", "http://[::1]:8000"):
        async with http.ws_connect(url, headers={"Origin": origin}) as ws:
            await next_frame(ws)
    for origin in ("https://evil.example", "http://localhost.evil.example", "null", "http://127.0.0.2"):
        assert await handshake_status(http, url, headers={"Origin": origin}) == 403, origin
