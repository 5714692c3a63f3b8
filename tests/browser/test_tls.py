"""The demo page in Chromium over HTTPS and ``wss://`` straight to the edge, trusting a private CA made in
the test (in an NSS database of the browser's own, as a company CA would be installed), never told to
ignore certificate errors."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Playwright, expect

from tests.browser.support import CHROMIUM_ARGS, DESKTOP, EdgeFactory, open_demo, post_json
from tests.tlsca import edge_certificate
from tests.tools import tool_missing

pytestmark = pytest.mark.browser


async def trust_in_nss(certutil: str, home: Path, ca_file: Path) -> None:
    """A browser whose HOME is ``home`` trusts ``ca_file`` to identify web sites."""
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True)
    for args in (
        ["-N", "--empty-password"],
        ["-A", "-t", "C,,", "-n", "ctxmeter test CA", "-i", str(ca_file)],
    ):
        process = await asyncio.create_subprocess_exec(certutil, "-d", f"sql:{database}", *args)
        assert await process.wait() == 0, args


async def test_the_demo_over_wss_trusting_a_private_ca(
    playwright: Playwright, chromium_path: str, start_edge: EdgeFactory, session_id: str, tmp_path: Path
) -> None:
    certutil = shutil.which("certutil")
    if certutil is None:
        tool_missing("certutil not found (apt-get install libnss3-tools, as .ci/run does)", "the TLS browser test")
    certificate = edge_certificate(tmp_path / "tls")
    home = tmp_path / "home"
    await trust_in_nss(certutil, home, certificate.ca_file)
    edge = await start_edge(tls_cert=certificate.cert_file, tls_key=certificate.key_file)
    base = edge.url.replace("127.0.0.1", "localhost", 1)
    context = await playwright.chromium.launch_persistent_context(
        user_data_dir=tmp_path / "chromium-profile",
        executable_path=chromium_path,
        args=CHROMIUM_ARGS,
        headless=True,
        viewport=DESKTOP,
        env={**os.environ, "HOME": str(home)},
    )
    try:
        page = context.pages[0] if context.pages else await context.new_page()
        sockets: list[str] = []
        page.on("websocket", lambda socket: sockets.append(socket.url))
        await open_demo(page, base, session_id)
        connector = aiohttp.TCPConnector(ssl=certificate.client_context())
        async with aiohttp.ClientSession(connector=connector) as http:
            await post_json(http, f"{base}/api/counters/context/{session_id}", {"used": 1234, "total": 10_000})
        await expect(page.locator("#context-used")).to_have_text("1,234")
        assert sockets and all(url.startswith(f"wss://localhost:{edge.url.rsplit(':', 1)[1]}/") for url in sockets)
    finally:
        await context.close()
