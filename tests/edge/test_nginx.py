"""A real nginx terminating TLS in front of the edge (the shipped deploy/nginx files): clients behind it
are limited apart, and what a client writes in forwarding headers itself never counts."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import aiohttp
import pytest

from ctxmeter.natsserver import free_port
from functions.runner import FunctionsRuntime
from tests.edge.conftest import EdgeFactory
from tests.edge.helpers import WAIT_S, metric, next_frame
from tests.tlsca import EdgeCertificate, edge_certificate
from tests.tools import tool_missing
from ws_edge.app import EdgeServer

DEPLOY: Final = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
# Two clients on this machine, told apart by their source addresses (all of 127/8 is loopback on Linux).
ALICE: Final = "127.0.0.2"
BOB: Final = "127.0.0.3"
# The edge's own address: not a loopback name, so the origin check's rule for it shows.
EDGE_HOST: Final = "127.0.0.5"
# A burst of 2 and a refill too slow to matter: the third upgrade from one address within a test is 429.
BURST: Final = 2


def nginx_config(directory: Path, port: int, edge_port: int, certificate: EdgeCertificate) -> str:
    return textwrap.dedent(f"""\
        daemon off;
        master_process off;
        worker_processes 1;
        pid {directory}/nginx.pid;
        error_log {directory}/error.log warn;
        events {{ worker_connections 128; }}
        http {{
            access_log off;
            client_body_temp_path {directory}/body;
            proxy_temp_path {directory}/proxy;
            fastcgi_temp_path {directory}/fastcgi;
            uwsgi_temp_path {directory}/uwsgi;
            scgi_temp_path {directory}/scgi;
            include {DEPLOY}/ctxmeter-http.conf;
            upstream ctxmeter_edge {{ server {EDGE_HOST}:{edge_port}; }}
            server {{
                listen 127.0.0.1:{port} ssl;
                ssl_certificate {certificate.cert_file};
                ssl_certificate_key {certificate.key_file};
                include {DEPLOY}/ctxmeter-edge.conf;
            }}
        }}
        """)


@pytest.fixture
async def proxied(
    make_edge: EdgeFactory, functions: FunctionsRuntime, tmp_path: Path
) -> AsyncIterator[tuple[EdgeServer, str, EdgeCertificate]]:
    """An edge trusting 127.0.0.1 (where nginx connects from: loopback's own address), and nginx's https://
    URL in front of it."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        tool_missing("nginx not found (apt-get install nginx-light, as .ci/run does)", "the proxy tests")
    certificate = edge_certificate(tmp_path / "tls")
    async with make_edge(
        host=EDGE_HOST, trusted_proxies="127.0.0.1", ip_connect_rate=0.001, ip_connect_burst=BURST
    ) as edge:
        port = free_port()
        config = tmp_path / "nginx.conf"
        config.write_text(nginx_config(tmp_path, port, int(edge.url.rsplit(":", 1)[1]), certificate))
        process = await asyncio.create_subprocess_exec(
            nginx, "-e", "stderr", "-p", str(tmp_path), "-c", str(config), stderr=asyncio.subprocess.PIPE
        )
        try:
            await _listening(port, process)
            yield edge, f"https://127.0.0.1:{port}", certificate
        finally:
            process.terminate()
            await process.wait()


async def _listening(port: int, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(WAIT_S):
        while True:
            if process.returncode is not None:
                assert process.stderr is not None
                pytest.fail(f"nginx exited: {(await process.stderr.read()).decode()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


def client(source: str, certificate: EdgeCertificate | None = None) -> aiohttp.ClientSession:
    """A client connecting from ``source`` (and trusting the test's CA)."""
    ssl = certificate.client_context() if certificate is not None else True
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0), ssl=ssl))


async def upgrade(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> int:
    """The status of an upgrade to ``url`` (101 when the socket opened and sent its first state)."""
    try:
        async with http.ws_connect(url, headers=headers) as ws:
            await next_frame(ws)
            return 101
    except aiohttp.WSServerHandshakeError as refused:
        return refused.status


def ws(base: str, session_id: str) -> str:
    return base.replace("https://", "wss://").replace("http://", "ws://") + f"/api/ws/counters/{session_id}"


async def test_clients_behind_nginx_are_limited_apart(
    proxied: tuple[EdgeServer, str, EdgeCertificate], session_id: str
) -> None:
    edge, public, certificate = proxied
    async with client(ALICE, certificate) as alice, client(BOB, certificate) as bob:
        # What Alice writes in the header herself is kept by nginx, left of what it appends: not her address.
        spoof = {"X-Forwarded-For": BOB}
        assert [await upgrade(alice, ws(public, session_id), spoof) for _ in range(BURST)] == [101] * BURST
        assert await upgrade(alice, ws(public, session_id)) == 429
        # Bob shares nginx's address with Alice, not her limit.
        assert [await upgrade(bob, ws(public, session_id)) for _ in range(BURST)] == [101] * BURST
        assert await upgrade(bob, ws(public, session_id)) == 429
    assert metric(edge, "upgrades_rejected_total", reason="rate_limited") == 2


async def test_forwarding_headers_from_a_client_itself_change_nothing(
    proxied: tuple[EdgeServer, str, EdgeCertificate], session_id: str
) -> None:
    """Straight to the edge (not through the trusted proxy), a client cannot claim another address."""
    edge, _, _ = proxied
    async with client(ALICE) as alice:
        statuses = [
            await upgrade(
                alice,
                ws(edge.url, session_id),
                {"X-Forwarded-For": f"198.51.100.{n}", "Forwarded": f"for=198.51.100.{n}"},
            )
            for n in range(BURST + 1)
        ]
    assert statuses == [101] * BURST + [429]


async def test_the_scheme_behind_nginx_is_the_clients(
    proxied: tuple[EdgeServer, str, EdgeCertificate], session_id: str
) -> None:
    """The origin check sees the scheme the client used: through nginx that is https, so a plain-http page
    of the edge's address may not open a socket (it could have been rewritten on its way). Straight to the
    edge over plain HTTP it may, whatever the client claims in ``X-Forwarded-Proto``."""
    edge, public, certificate = proxied
    async with client(ALICE, certificate) as alice:
        assert await upgrade(alice, ws(public, session_id), {"Origin": f"https://{EDGE_HOST}"}) == 101
        assert await upgrade(alice, ws(public, session_id), {"Origin": f"http://{EDGE_HOST}"}) == 403
    async with client(BOB) as bob:
        claim = {"Origin": f"http://{EDGE_HOST}", "X-Forwarded-Proto": "https"}
        assert await upgrade(bob, ws(edge.url, session_id), claim) == 101
