"""Browser fixtures: Debian's Chromium driven by Playwright (async API), a real edge on a free port.

Chromium is ``/usr/bin/chromium`` (``CTXMETER_CHROMIUM`` overrides it); Playwright never downloads a
browser. When it is missing the browser tests skip, except under ``CI=true``, where they fail: CI
installs Chromium, so a missing one there is a broken setup, not a reason to skip.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import BrowserContext, Page, Playwright, async_playwright, expect

from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from tests.browser.site import Site, npm_missing, site_app
from tests.browser.support import (
    CHROMIUM_ARGS,
    CHROMIUM_ENV,
    DEFAULT_CHROMIUM,
    DESKTOP,
    BrowserLog,
    EdgeFactory,
    chromium_executable,
)
from tests.tools import require, tool_missing
from ws_edge.app import EdgeServer

# Waits for the DOM, never timing assertions: generous, so a loaded CI machine does not flake.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = chromium_executable()
    if path is not None:
        return path
    wanted = os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)
    tool_missing(
        f"Chromium not found at {wanted} (apt-get install chromium, as .ci/run does, or set CTXMETER_CHROMIUM)",
        "the browser tests must run",
    )


@pytest.fixture
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as driver:
        yield driver


@pytest.fixture
async def browser(playwright: Playwright, chromium_path: str, tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A fresh Chromium with a profile of the test's own (a persistent context in tmp_path)."""
    context = await playwright.chromium.launch_persistent_context(
        user_data_dir=tmp_path / "chromium-profile",
        executable_path=chromium_path,
        args=CHROMIUM_ARGS,
        headless=True,
        viewport=DESKTOP,
        locale="en-US",
    )
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
async def page(browser: BrowserContext) -> AsyncIterator[Page]:
    page = browser.pages[0] if browser.pages else await browser.new_page()
    yield page


@pytest.fixture
def log(page: Page) -> BrowserLog:
    log = BrowserLog()
    page.on("console", log.on_console)
    page.on("pageerror", lambda error: log.errors.append(f"pageerror: {error}"))
    page.on("request", lambda request: log.requests.append((request.method, request.url, request.post_data)))
    page.on("websocket", lambda socket: log.sockets.append(socket.url))
    return log


@pytest.fixture
async def start_edge(settings: Settings, functions: FunctionsRuntime) -> AsyncIterator[EdgeFactory]:
    """Starts edges against the test's NATS and bucket (the functions run in this process).

    ``await start_edge(port=..., jwt_secret=...)``: any Settings field can be overridden; port 0 (the
    default) picks a free port. Every edge still running is stopped at the end of the test.
    """
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> EdgeServer:
            edge_settings = settings.model_copy(update={"port": 0, **overrides})
            return await stack.enter_async_context(EdgeServer(edge_settings))

        yield start


@pytest.fixture
async def edge(start_edge: EdgeFactory) -> EdgeServer:
    return await start_edge()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    """Another origin (an app that embeds the meters), with React 19 and axe-core from tests/browser/npm."""
    require(npm_missing(), "the embedding tests must run (.ci/run installs tests/browser/npm)")
    served = Site()
    runner = web.AppRunner(site_app(served), access_log=None)
    await runner.setup()
    try:
        tcp = web.TCPSite(runner, "127.0.0.1", 0)
        await tcp.start()
        served.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield served
    finally:
        await runner.cleanup()
