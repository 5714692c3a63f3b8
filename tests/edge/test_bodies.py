"""Bodies the edge refuses before reading them: a compressed body where no route inflates one (415; aiohttp
inflates nothing, so 1 MB that inflates to 1 GiB stalls no socket), and a body announced over the limit
with ``Expect: 100-continue`` (413 at once, never ``100 Continue``)."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from tests.edge.conftest import EdgeFactory, edge_settings
from tests.edge.test_http import expect_error
from ws_edge import middleware
from ws_edge.app import EdgeServer

MAX_TEXT_BYTES = 64 * 1024
# Within the limit on the wire (about 65 KB); 64 MiB, a thousand times the limit, once inflated.
BOMB_BYTES = 64 * 1024 * 1024
BOMB = gzip.compress(b"0" * BOMB_BYTES, compresslevel=9)
# A safety net for a response that must come at once; never a performance bound.
ANSWER_S = 10.0


def post_paths(edge: EdgeServer, session_id: str, *, compressed: bool = True) -> list[str]:
    """Every route that takes a body, with a session id where it has one; without ``compressed``, not
    those that opted in to compressed bodies."""
    paths = (
        route.resource.canonical.replace("{sid}", session_id)
        for route in edge.app.router.routes()
        if route.method == "POST" and route.resource is not None
    )
    return sorted(path for path in paths if compressed or not path.startswith(middleware.COMPRESSED_BODY_PREFIXES))


@pytest.fixture
async def small_edge(functions: FunctionsRuntime, make_edge: EdgeFactory) -> AsyncIterator[EdgeServer]:
    async with make_edge(max_text_bytes=MAX_TEXT_BYTES) as edge:
        yield edge


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "x-unknown", "identity, gzip", "GZIP"])
async def test_a_compressed_body_is_415_on_every_route(
    small_edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, encoding: str
) -> None:
    for path in post_paths(small_edge, session_id, compressed=False):
        headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
        async with http.post(f"{small_edge.url}{path}", data=BOMB, headers=headers) as r:
            reply = await expect_error(r, 415, "unsupported_encoding")
        assert encoding in reply.error.message


async def test_identity_is_taken(small_edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    headers = {"Content-Encoding": "identity"}
    async with http.post(f"{small_edge.url}/api/counters/context/{session_id}", json={"used": 3}, headers=headers) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["used"] == 3


async def test_aiohttp_inflates_nothing_even_where_a_route_opts_in(
    settings: Settings, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route under ``COMPRESSED_BODY_PREFIXES`` gets the bytes as sent, to inflate them its own way
    (this fails if aiohttp stops honouring the runner's ``auto_decompress=False``)."""
    monkeypatch.setattr(middleware, "COMPRESSED_BODY_PREFIXES", ("/v1/",))
    seen: list[bytes] = []

    async def take(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(status=204)

    edge = EdgeServer(edge_settings(settings, max_text_bytes=MAX_TEXT_BYTES))
    edge.app.router.add_post("/v1/raw", take)
    async with edge:
        small = gzip.compress(b"hello " * 10)
        async with http.post(f"{edge.url}/v1/raw", data=small, headers={"Content-Encoding": "gzip"}) as r:
            assert r.status == 204
        deflated = zlib.compress(b"x" * 100)
        async with http.post(f"{edge.url}/v1/raw", data=deflated, headers={"Content-Encoding": "deflate"}) as r:
            assert r.status == 204
        # Under the prefix, but the bomb is judged by its size on the wire: taken as sent, uninflated.
        async with http.post(f"{edge.url}/v1/raw", data=BOMB[:MAX_TEXT_BYTES], headers={"Content-Encoding": "gzip"}):
            pass
    assert seen[:2] == [small, deflated]
    assert seen[2] == BOMB[:MAX_TEXT_BYTES]


async def head_then(edge: EdgeServer, head: str) -> tuple[str, bytes]:
    """Send a request head alone (no body): the status line of the first answer, and its body."""
    address = urlsplit(edge.url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(head.encode())
        await writer.drain()
        async with asyncio.timeout(ANSWER_S):
            status = (await reader.readline()).decode().strip()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
        return status, body
    finally:
        writer.close()


async def test_expect_continue_over_the_limit_is_413_at_once(small_edge: EdgeServer, session_id: str) -> None:
    too_long = 2 * MAX_TEXT_BYTES + 1
    for path in post_paths(small_edge, session_id):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {too_long}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        status, body = await head_then(small_edge, head)
        assert status == "HTTP/1.1 413 Request Entity Too Large", (path, status)
        assert json.loads(body)["error"]["code"] == "payload_too_large"


async def test_expect_continue_refuses_a_compressed_body_at_once(small_edge: EdgeServer, session_id: str) -> None:
    head = (
        f"POST /api/counters/context/{session_id} HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
        "Content-Length: 100\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    status, _ = await head_then(small_edge, head)
    assert status == "HTTP/1.1 415 Unsupported Media Type"


async def test_expect_continue_within_the_limit_continues(
    small_edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with http.post(f"{small_edge.url}/api/counters/context/{session_id}", json={"used": 9}, expect100=True) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["used"] == 9
