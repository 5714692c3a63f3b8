"""Helpers of the browser tests: the page's log, HTTP calls to the edge, opening the demo, screenshots."""

from __future__ import annotations

import colorsys
import json
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from playwright.async_api import ConsoleMessage, Page, ViewportSize, expect

from ws_edge.app import EdgeServer

CHROMIUM_ENV = "CTXMETER_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_executable() -> str | None:
    candidate = os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)
    path = Path(candidate) if os.path.isabs(candidate) else Path(shutil.which(candidate) or candidate)
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


DESKTOP: ViewportSize = {"width": 1100, "height": 900}
PHONE: ViewportSize = {"width": 375, "height": 740}
NARROW_PHONE: ViewportSize = {"width": 360, "height": 740}

JWT_SECRET = "browser-test-secret-0123456789abcdef"


def make_token(secret: str, sessions: list[str], lifetime_s: float = 600) -> str:
    """An HS256 token for ``sessions`` that expires ``lifetime_s`` from now (``exp`` is whole seconds)."""
    return jwt.encode({"sessions": sessions, "exp": int(time.time() + lifetime_s)}, secret, algorithm="HS256")


# ``await start_edge(port=..., jwt_secret=...)``: an edge with some settings overridden.
EdgeFactory = Callable[..., Awaitable[EdgeServer]]


@dataclass
class BrowserLog:
    """Console errors and uncaught exceptions of a page, and every request it made."""

    errors: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, url, body)
    sockets: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def requests_to(self, path_part: str, method: str = "POST") -> list[tuple[str, str, str | None]]:
        return [request for request in self.requests if request[0] == method and path_part in request[1]]

    def assert_clean(self, allowed: Iterable[str] = ()) -> None:
        """No console error and no uncaught exception, except messages matching an ``allowed`` regex."""
        patterns = [re.compile(pattern) for pattern in allowed]
        unexpected = [error for error in self.errors if not any(p.search(error) for p in patterns)]
        assert unexpected == [], f"console errors or page errors: {unexpected}"


async def post_json(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], token: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, data=json.dumps(body), headers={"Content-Type": "application/json", **headers}) as resp:
        payload: dict[str, Any] = await resp.json()
        assert resp.status == 200, payload
        return payload


async def get_json(http: aiohttp.ClientSession, url: str, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as resp:
        payload: dict[str, Any] = await resp.json()
        assert resp.status == 200, payload
        return payload


async def change_context(
    http: aiohttp.ClientSession, edge_url: str, session_id: str, op: str, body: dict[str, Any], token: str | None = None
) -> dict[str, Any]:
    """``POST /api/counters/context/<sid>/<op>`` (``op`` "" is the seed's set route): the new ContextUsage."""
    url = f"{edge_url}/api/counters/context/{session_id}" + (f"/{op}" if op else "")
    return await post_json(http, url, body, token)


async def open_demo(page: Page, edge_url: str, session_id: str, token: str | None = None) -> None:
    """Opens the demo page on a session and waits until its socket is open."""
    query = f"?session={session_id}" + (f"&token={token}" if token else "")
    await page.goto(f"{edge_url}/{query}")
    await expect(page.locator("#status")).to_have_attribute("data-state", "open")


async def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    await page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 0
    return path


# The first element matching a selector in the page or in any open shadow root (the meters' parts).
DEEP_QUERY = """(selector) => {
  const find = (root) => {
    const node = root.querySelector(selector);
    if (node) return node;
    for (const host of root.querySelectorAll("*")) {
      const inner = host.shadowRoot && find(host.shadowRoot);
      if (inner) return inner;
    }
    return null;
  };
  return find(document);
}"""

# A MutationObserver that keeps every text an element showed, in order (window.__texts[selector]).
RECORD_TEXTS = f"""(selector) => {{
  const node = ({DEEP_QUERY})(selector);
  window.__texts ??= {{}};
  const seen = (window.__texts[selector] = [node.textContent]);
  new MutationObserver(() => {{
    if (seen[seen.length - 1] !== node.textContent) seen.push(node.textContent);
  }}).observe(node, {{ childList: true, characterData: true, subtree: true }});
}}"""


async def record_texts(page: Page, selector: str) -> None:
    await page.evaluate(RECORD_TEXTS, selector)


async def recorded_texts(page: Page, selector: str) -> list[str]:
    texts: list[str] = await page.evaluate("(selector) => window.__texts[selector]", selector)
    return texts


async def record_statuses(page: Page) -> None:
    """Keeps every status event of the demo's client in window.__statuses."""
    await page.evaluate(
        "() => { window.__statuses = []; window.ctxmeterDemo.client.on('status', (s) => window.__statuses.push(s)); }"
    )


async def recorded_statuses(page: Page) -> list[dict[str, Any]]:
    statuses: list[dict[str, Any]] = await page.evaluate("() => window.__statuses")
    return statuses


def hue_name(css_colour: str) -> str:
    """'blue', 'orange', 'red' or 'other' for a computed ``rgb(r, g, b)`` colour, by its hue."""
    red, green, blue = (int(part) for part in re.findall(r"\d+", css_colour)[:3])
    hue, saturation, _ = colorsys.rgb_to_hsv(red / 255, green / 255, blue / 255)
    degrees = hue * 360
    if saturation < 0.5:
        return "other"
    if 200 <= degrees <= 250:
        return "blue"
    if 18 <= degrees <= 45:
        return "orange"
    if degrees <= 8 or degrees >= 350:
        return "red"
    return "other"
