"""Writes docs/demo.png and docs/demo-phone.png, the README's pictures of the demo page:
``python -m tests.browser.demo_screenshot``.

Runs the real thing: a nats-server of its own (temp store), the functions, the edge, and Debian's
Chromium on the demo page. The session is an agent's, told through the HTTP API as a runtime would: a
compaction policy (16,000 tokens reserved for the reply, compaction at 160,000 of 200,000), provider
usage reports that fill the window, one compaction, then estimates since the last report; and a draft
being typed, with what sending it would do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Browser, async_playwright, expect

from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from tests.browser.support import CHROMIUM_ARGS, DESKTOP, chromium_executable
from tests.natsproc import NatsProcess
from ws_edge.app import EdgeServer

ROOT = Path(__file__).resolve().parents[2]
SESSION_ID = "demo-session"
DEFAULT_PORT = 8000
PHONE_WIDTH = 360
DRAFT = (
    "Summarise the design review below in five bullet points, then list the open questions and who owns "
    "each one. Keep it under 200 words and flag anything that blocks the release."
)
# (operation, body): the session's story, one change each, a little apart so the timeline's times differ.
STORY: list[tuple[str, dict[str, Any]]] = [
    ("", {"used": 12_000, "total": 200_000, "reserved": 16_000, "compact_at": 160_000}),
    ("usage", {"usage": {"input_tokens": 29_400, "output_tokens": 2_100}}),
    ("usage", {"usage": {"input_tokens": 55_000, "output_tokens": 3_200}}),
    ("usage", {"usage": {"input_tokens": 82_300, "output_tokens": 2_600}}),
    ("usage", {"usage": {"input_tokens": 113_900, "output_tokens": 3_400}}),
    ("usage", {"usage": {"input_tokens": 143_100, "output_tokens": 3_700}}),
    ("usage", {"usage": {"input_tokens": 155_600, "output_tokens": 3_300}}),
    ("compact", {"used": 42_000}),
    ("usage", {"usage": {"input_tokens": 61_200, "output_tokens": 2_500}}),
    ("usage", {"usage": {"input_tokens": 85_400, "output_tokens": 2_700}}),
    ("add", {"tokens": 12_400}),
]
FINAL_USED = 100_500
STEP_S = 0.25


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def tell_story(http: aiohttp.ClientSession, edge_url: str) -> None:
    base = f"{edge_url}/api/counters/context/{SESSION_ID}"
    for op, body in STORY:
        url = f"{base}/{op}" if op else base
        async with http.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}) as reply:
            reply.raise_for_status()
            state = await reply.json()
        await asyncio.sleep(STEP_S)
    assert state["used"] == FINAL_USED, state


async def capture(desktop: Path, phone: Path, store: Path) -> None:
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
                await tell_story(http, edge.url)
                async with async_playwright() as driver:
                    browser = await driver.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
                    try:
                        await shoot(browser, edge.url, desktop, width=DESKTOP["width"], scale=1)
                        await shoot(browser, edge.url, phone, width=PHONE_WIDTH, scale=2)
                    finally:
                        await browser.close()
        finally:
            await functions.stop()
    finally:
        server.stop()


async def shoot(browser: Browser, edge_url: str, output: Path, *, width: int, scale: int) -> None:
    context = await browser.new_context(
        viewport={"width": width, "height": 800},
        device_scale_factor=scale,
        locale="en-US",
        timezone_id="UTC",
        reduced_motion="reduce",
    )
    try:
        page = await context.new_page()
        await page.goto(f"{edge_url}/?session={SESSION_ID}")
        await expect(page.locator("#status")).to_have_attribute("data-state", "open")
        await expect(page.locator("#context-used")).to_have_text(f"{FINAL_USED:,}")
        await expect(page.locator("#timeline")).to_have_attribute("data-points", str(len(STORY)))
        await expect(page.locator("#timeline")).to_have_attribute("data-compactions", "1")
        await page.locator("#draft").fill(DRAFT)
        await expect(page.locator("#draft-state")).to_have_attribute("data-pending", "false")
        await expect(page.locator("#draft-after")).to_be_visible()
        await page.locator("#draft").blur()
        output.parent.mkdir(parents=True, exist_ok=True)
        if width > PHONE_WIDTH:
            await page.screenshot(path=output, full_page=True)
            return
        # A phone's page is long: the picture ends under the timeline (the session card is the desktop's).
        box = await page.locator("#timeline").locator("xpath=ancestor::section[1]").bounding_box()
        assert box is not None
        clip = {"x": 0, "y": 0, "width": width, "height": box["y"] + box["height"] + 12}
        await page.screenshot(path=output, full_page=True, clip=clip)
    finally:
        await context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "demo.png")
    parser.add_argument("--phone-output", type=Path, default=ROOT / "docs" / "demo-phone.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctxmeter-demo-") as store:
        asyncio.run(capture(args.output, args.phone_output, Path(store)))
    print(f"wrote {args.output} and {args.phone_output}")


if __name__ == "__main__":
    main()
