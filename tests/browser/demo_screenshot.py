"""Writes docs/demo.png, the README's picture of the demo page: ``python -m tests.browser.demo_screenshot``.

Runs the real thing: a nats-server of its own (temp store), the functions, the edge, and Debian's
Chromium on the demo page, with a session part-way through its context window and a draft being typed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
from pathlib import Path

import aiohttp
from playwright.async_api import async_playwright, expect

from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from tests.browser.support import CHROMIUM_ARGS, DESKTOP, chromium_executable
from tests.natsproc import NatsProcess
from ws_edge.app import EdgeServer

ROOT = Path(__file__).resolve().parents[2]
SESSION_ID = "demo-session"
DEFAULT_PORT = 8000
DRAFT = (
    "Summarise the design review below in five bullet points, then list the open questions and who owns "
    "each one. Keep it under 200 words and flag anything that blocks the release."
)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def capture(output: Path, store: Path) -> None:
    chromium = chromium_executable()
    if chromium is None:
        sys.exit("Chromium not found: apt-get install chromium (or set CTXMETER_CHROMIUM)")
    server = NatsProcess(store)
    server.start()
    try:
        # The edge's usual port when it is free, so the curl line in the picture reads as it will for readers.
        settings = Settings(
            nats_url=server.url, port=DEFAULT_PORT if port_is_free(DEFAULT_PORT) else 0, kv_bucket="DEMO"
        )
        functions = FunctionsRuntime(settings)
        await functions.start()
        try:
            async with EdgeServer(settings) as edge, aiohttp.ClientSession() as http:
                body = json.dumps({"used": 86_400, "total": 128_000})
                url = f"{edge.url}/api/counters/context/{SESSION_ID}"
                async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as reply:
                    reply.raise_for_status()
                await shoot(edge.url, chromium, output, store)
        finally:
            await functions.stop()
    finally:
        server.stop()


async def shoot(edge_url: str, chromium: str, output: Path, store: Path) -> None:
    async with async_playwright() as driver:
        context = await driver.chromium.launch_persistent_context(
            user_data_dir=store / "chromium-profile",
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": DESKTOP["width"], "height": 820},
            device_scale_factor=1,
            locale="en-US",
            reduced_motion="reduce",
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            await page.goto(f"{edge_url}/?session={SESSION_ID}")
            await expect(page.locator("#status")).to_have_attribute("data-state", "open")
            await expect(page.locator("#context-percent")).to_have_text("67.5%")
            await page.locator("#draft").fill(DRAFT)
            await expect(page.locator("#draft-state")).to_have_attribute("data-pending", "false")
            await page.locator("#draft").blur()
            output.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=output, full_page=True)
        finally:
            await context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "demo.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctxmeter-demo-") as store:
        asyncio.run(capture(args.output, Path(store)))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
