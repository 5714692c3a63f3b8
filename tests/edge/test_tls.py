"""The edge's own TLS: HTTPS and ``wss://`` with ``--tls-cert``/``--tls-key`` (a private CA made here)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from tests.edge.conftest import EdgeFactory
from tests.edge.helpers import WAIT_S, eventually, next_frame, running_up
from tests.tlsca import EdgeCertificate, edge_certificate
from ws_edge.sockets import SOCKETS


@pytest.fixture
def certificate(tmp_path: Path) -> EdgeCertificate:
    return edge_certificate(tmp_path / "tls")


async def test_https_and_wss_on_the_edge_itself(
    make_edge: EdgeFactory, functions: FunctionsRuntime, certificate: EdgeCertificate, session_id: str
) -> None:
    async with (
        make_edge(tls_cert=certificate.cert_file, tls_key=certificate.key_file) as edge,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=certificate.client_context())) as http,
    ):
        assert edge.url.startswith("https://127.0.0.1:")
        async with http.get(f"{edge.url}/healthz") as r:
            assert r.status == 200
        url = edge.url.replace("https://", "wss://", 1) + f"/api/ws/counters/{session_id}"
        async with http.ws_connect(url) as ws:
            assert (await next_frame(ws))["type"] == "context_update"
            async with http.post(f"{edge.url}/api/counters/context/{session_id}", json={"used": 9, "total": 10}) as r:
                assert r.status == 200
            assert (await next_frame(ws))["data"]["used"] == 9
            await ws.send_str("ping")
            assert await next_frame(ws) == {"type": "pong"}
            # A violation over TLS: the close frame, then the edge ends the connection (no half-close in TLS).
            await ws.send_bytes(b"x" * 5000)
            async with asyncio.timeout(WAIT_S):
                message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 1009
        await eventually(lambda: not edge.app[SOCKETS].peers)


async def test_a_tls_edge_does_not_speak_plain_http(
    make_edge: EdgeFactory, functions: FunctionsRuntime, certificate: EdgeCertificate
) -> None:
    async with make_edge(tls_cert=certificate.cert_file, tls_key=certificate.key_file) as edge:
        host, port = edge.url.removeprefix("https://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(WAIT_S):
                answer = await reader.read(1024)
            assert not answer.startswith(b"HTTP/"), answer
        finally:
            writer.close()


def test_a_certificate_needs_its_key(certificate: EdgeCertificate) -> None:
    with pytest.raises(ValidationError, match="tls_cert and tls_key go together"):
        Settings(tls_cert=certificate.cert_file)
    with pytest.raises(ValidationError, match="tls_cert and tls_key go together"):
        Settings(tls_key=certificate.key_file)


async def test_an_unreadable_certificate_fails_the_start(make_edge: EdgeFactory, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-certificate.pem"
    bad.write_text("hello")
    with pytest.raises(OSError):  # ssl.SSLError: reported by ``ctxmeter`` without a traceback
        async with make_edge(tls_cert=bad, tls_key=bad):
            pass


@pytest.mark.slow
async def test_up_serves_https_and_wss(tmp_path: Path, certificate: EdgeCertificate) -> None:
    tls = ("--tls-cert", str(certificate.cert_file), "--tls-key", str(certificate.key_file))
    async with running_up(tmp_path, *tls) as up:
        assert f"demo https://127.0.0.1:{up.port}/\n" in up.printed, up.printed
        connector = aiohttp.TCPConnector(ssl=certificate.client_context())
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.ws_connect(f"wss://127.0.0.1:{up.port}/api/ws/counters/up-tls") as ws,
        ):
            assert (await next_frame(ws))["type"] == "context_update"
