"""What aiohttp logs about requests it cannot parse: one INFO line, the client's fault, with no part of a
token in it (it used to be an ERROR traceback quoting the first 100 bytes of the line, ``?token=`` too)."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import urlsplit

import pytest

from tests.logcapture import written_log
from ws_edge.app import EdgeServer

SECRET = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXNlc3Npb25z.U0lHTkFUVVJFU0lHTkFUVVJF"
# Over aiohttp's 8,190-byte limit on a request line or a header.
OVERSIZED = 9_000


async def raw_request(edge: EdgeServer, request: bytes) -> bytes:
    address = urlsplit(edge.url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        f"GET /api/ws/counters/s?token={SECRET}{'A' * OVERSIZED} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        f"GET /api/counters/context/s?token={SECRET} HTTP/1.1\r\nHost: x\r\nX-Pad: {'B' * OVERSIZED}\r\n\r\n".encode(),
        f"GET /api/counters/context/s?token={SECRET} HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n".encode(),
    ],
    ids=["request-line", "header", "framing"],
)
async def test_a_malformed_request_is_one_line_without_its_token(
    edge: EdgeServer, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with written_log() as out, caplog.at_level(logging.INFO, logger="aiohttp.server"):
        answer = await raw_request(edge, request_bytes)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    about = [line for line in lines if line["logger"] == "aiohttp.server"]
    assert len(about) == 1, lines
    assert about[0]["level"] == "info" and "malformed request from 127.0.0.1" in about[0]["msg"]
    assert "exc" not in about[0]
    assert SECRET[:8] not in out.getvalue()
    # Other handlers (this capture, say) get the line as rewritten: no traceback, no token.
    records = [record for record in caplog.records if record.name == "aiohttp.server"]
    assert [record.levelno for record in records] == [logging.INFO]
    assert records[0].exc_info is None and SECRET[:8] not in records[0].getMessage()
