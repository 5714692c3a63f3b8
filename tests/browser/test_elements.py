"""<ctxmeter-context> and <ctxmeter-draft> embedded in another origin's pages, plain and React 19, in a real
Chromium against a real edge, functions and NATS.

Every wait is for a DOM value (Playwright's ``expect``), never a timing assertion.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, WebSocket, expect

from tests.browser.site import Site
from tests.browser.support import (
    JWT_SECRET,
    BrowserLog,
    EdgeFactory,
    change_context,
    hue_name,
    make_token,
    post_json,
    record_texts,
    recorded_texts,
    screenshot,
)
from tests.edge.helpers import eventually
from ws_edge.app import EdgeServer

pytestmark = pytest.mark.browser

GREEN = "rgb(0, 128, 0)"


class Sockets:
    """The page's WebSockets by URL path, and which of them have closed."""

    def __init__(self, page: Page) -> None:
        self.opened: list[str] = []
        self.closed: list[str] = []
        page.on("websocket", self._opened)

    def _opened(self, socket: WebSocket) -> None:
        path = socket.url.split("?")[0]
        self.opened.append(path)
        socket.on("close", lambda _: self.closed.append(path))

    def to(self, session_id: str, *, closed: bool = False) -> int:
        paths = self.closed if closed else self.opened
        return sum(path.endswith(f"/api/ws/counters/{session_id}") for path in paths)


async def axe_violations(page: Page, site: Site) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (WCAG 2.x A and AA, and best practices)."""
    await page.add_script_tag(url=f"{site.url}/axe.js")
    violations: list[dict[str, Any]] = await page.evaluate(
        """async () => {
          const result = await axe.run(document, { resultTypes: ["violations"] });
          return result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target) }));
        }"""
    )
    return violations


def plain_page(edge_url: str, session_id: str) -> str:
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <link rel="icon" href="data:," />
    <title>An app with ctxmeter's meters</title>
    <script type="module" src="{edge_url}/static/ctxmeter-elements.js"></script>
    <style>
      #a {{ --ctxmeter-normal: {GREEN}; }}
      #a::part(percent) {{ color: {GREEN}; }}
    </style>
  </head>
  <body>
    <main>
      <h1>Agent chat</h1>
      <ctxmeter-context id="a" session-id="{session_id}" url="{edge_url}"></ctxmeter-context>
      <ctxmeter-context id="b" session-id="{session_id}" url="{edge_url}" label="The same session"></ctxmeter-context>
      <ctxmeter-context id="other" session-id="{session_id}-other" url="{edge_url}" label="Another session">
      </ctxmeter-context>
      <ctxmeter-context id="bad" session-id="not a session id" url="{edge_url}" label="Bad"></ctxmeter-context>
      <label for="msg">Message</label>
      <textarea id="msg"></textarea>
      <ctxmeter-draft id="draft" session-id="{session_id}" url="{edge_url}" for="msg" max-tokens="50"
                      debounce-ms="150"></ctxmeter-draft>
    </main>
    <script>
      window.__events = [];
      document.addEventListener("ctxmeter-context", (e) => window.__events.push([e.target.id, e.detail.used]));
      document.addEventListener("ctxmeter-draft", (e) => window.__events.push([e.target.id, e.detail.count]));
    </script>
  </body>
</html>"""


async def count_tokens(http: aiohttp.ClientSession, edge_url: str, text: str) -> int:
    return int((await post_json(http, f"{edge_url}/api/counters/tokens", {"text": text}))["count"])


async def test_plain_page_meters_share_a_socket_and_follow_changes(
    page: Page,
    log: BrowserLog,
    edge: EdgeServer,
    site: Site,
    http: aiohttp.ClientSession,
    session_id: str,
    tmp_path: Path,
) -> None:
    site.pages["/plain.html"] = plain_page(edge.url, session_id)
    sockets = Sockets(page)
    await page.goto(f"{site.url}/plain.html")
    a_ring, b_ring = page.locator("#a #context-ring"), page.locator("#b #context-ring")
    for host in ("#a", "#b", "#other", "#draft"):
        await expect(page.locator(host)).to_have_attribute("state", "open")
    await expect(a_ring).to_have_attribute("aria-valuenow", "0")

    await change_context(http, edge.url, session_id, "", {"used": 30_000, "total": 100_000})
    for ring in (a_ring, b_ring):
        await expect(ring).to_have_attribute("role", "meter")
        await expect(ring).to_have_attribute("aria-valuenow", "30000")
        await expect(ring).to_have_attribute("aria-valuemin", "0")
        await expect(ring).to_have_attribute("aria-valuemax", "100000")
        await expect(ring).to_have_attribute("aria-valuetext", re.compile(r"^30% used: 30,000 of 100,000 tokens"))
    await expect(page.locator("#a")).to_have_attribute("level", "normal")
    await expect(b_ring).to_have_attribute("aria-label", "The same session")

    await change_context(
        http, edge.url, session_id, "", {"used": 85_000, "total": 100_000, "reserved": 5_000, "compact_at": 90_000}
    )
    await expect(a_ring).to_have_attribute("aria-valuenow", "85000")
    await expect(a_ring).to_have_attribute("aria-valuetext", re.compile(r"5,000 tokens left before compaction"))
    await expect(page.locator("#a")).to_have_attribute("level", "critical")  # 85,000 of 90,000
    await expect(page.locator("#a #context-left")).to_have_attribute("data-left", "5000")
    await expect(page.locator("#a #context-reserved")).to_have_text("5,000 tokens reserved for the reply")

    # Two elements of one session share one socket; another session has its own; a bad id has none.
    assert sockets.to(session_id) == 1
    assert sockets.to(f"{session_id}-other") == 1
    await expect(page.locator("#bad")).to_have_attribute("state", "closed")
    await expect(page.locator("#bad #context-status")).to_have_text("Invalid session id")
    assert len(sockets.opened) == 2, sockets.opened

    # Properties and events.
    assert await page.evaluate("() => document.getElementById('b').usage.used") == 85_000
    assert await page.evaluate("() => document.getElementById('a').client === document.getElementById('b').client")
    events = await page.evaluate("() => window.__events")
    assert ["a", 85_000] in events and ["b", 85_000] in events

    # Styling hooks: a custom property and a part, on one element only.
    await change_context(http, edge.url, session_id, "", {"used": 10_000, "total": 100_000})
    await expect(a_ring).to_have_attribute("aria-valuenow", "10000")
    await page.emulate_media(reduced_motion="reduce")
    assert await page.locator("#a #context-arc").evaluate("(node) => getComputedStyle(node).stroke") == GREEN
    assert await page.locator("#a #context-percent").evaluate("(node) => getComputedStyle(node).color") == GREEN
    assert hue_name(await page.locator("#b #context-arc").evaluate("(node) => getComputedStyle(node).stroke")) == "blue"
    await screenshot(page, tmp_path, "plain-page")

    # An element that leaves the page closes its session's socket when it was the last one of it.
    await page.evaluate("() => document.getElementById('other').remove()")
    await eventually(lambda: sockets.to(f"{session_id}-other", closed=True) == 1)
    await page.evaluate("() => document.getElementById('a').remove()")
    await change_context(http, edge.url, session_id, "", {"used": 20_000, "total": 100_000})
    await expect(b_ring).to_have_attribute("aria-valuenow", "20000")
    assert sockets.to(session_id, closed=True) == 0
    log.assert_clean()


async def test_draft_counter_states_at_80_and_95_percent(
    page: Page,
    log: BrowserLog,
    edge: EdgeServer,
    site: Site,
    http: aiohttp.ClientSession,
    session_id: str,
    tmp_path: Path,
) -> None:
    site.pages["/plain.html"] = plain_page(edge.url, session_id)
    await page.goto(f"{site.url}/plain.html")
    draft, box = page.locator("#draft"), page.locator("#msg")
    bar, state = page.locator("#draft #draft-bar"), page.locator("#draft #draft-state")
    await expect(draft).to_have_attribute("state", "open")
    await expect(page.locator("#draft #draft-max")).to_have_text("50")
    await record_texts(page, "#draft-state")
    await page.emulate_media(reduced_motion="reduce")

    cases = [
        (10, "normal", "blue", r"^\d+(\.\d)?% of the 50-token limit\.$"),
        (42, "warning", "orange", r"^Warning: \d+(\.\d)?% of the 50-token limit\.$"),
        (48, "critical", "red", r"^Critical: .*Shorten the message\.$"),
    ]
    for words, level, colour, message in cases:
        text = "hello" + " hello" * (words - 1)
        tokens = await count_tokens(http, edge.url, text)
        await box.fill(text)
        await expect(page.locator("#draft #draft-count")).to_have_text(f"{tokens:,}")
        await expect(state).to_have_attribute("data-pending", "false")
        await expect(draft).to_have_attribute("level", level)
        await expect(bar).to_have_attribute("data-level", level)
        await expect(bar).to_have_attribute("role", "meter")
        await expect(bar).to_have_attribute("aria-valuenow", str(tokens))
        await expect(bar).to_have_attribute("aria-valuemax", "50")
        await expect(state).to_have_text(re.compile(message))
        fill = await bar.locator(".bar-fill").evaluate("(node) => getComputedStyle(node).backgroundColor")
        assert hue_name(fill) == colour, f"{level}: bar colour {fill}"
        await screenshot(page, tmp_path, f"draft-{level}")
    assert "Calculating…" in await recorded_texts(page, "#draft-state")
    assert ["draft", tokens] in await page.evaluate("() => window.__events")
    # Each pause made one request, with the element's limit.
    requests = log.requests_to(f"/api/counters/tokens/{session_id}")
    assert len(requests) == len(cases), requests
    assert all('"max":50' in (body or "").replace(" ", "") for _, _, body in requests)

    # The `text` property counts too (for frameworks that hold the text themselves).
    await page.evaluate("() => { document.getElementById('draft').text = 'hello hello'; }")
    await expect(page.locator("#draft #draft-count")).to_have_text("2")
    log.assert_clean()


async def test_meters_have_no_accessibility_violations(
    page: Page, log: BrowserLog, edge: EdgeServer, site: Site, http: aiohttp.ClientSession, session_id: str
) -> None:
    site.pages["/plain.html"] = plain_page(edge.url, session_id).replace(
        '<ctxmeter-context id="bad" session-id="not a session id" url', '<ctxmeter-context id="bad" hidden url'
    )
    await change_context(http, edge.url, session_id, "", {"used": 90_000, "total": 100_000, "reserved": 1_000})
    await page.goto(f"{site.url}/plain.html")
    await expect(page.locator("#a #context-ring")).to_have_attribute("aria-valuenow", "90000")
    await page.locator("#msg").fill("hello " * 45)
    await expect(page.locator("#draft")).to_have_attribute("level", "warning")
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme, reduced_motion="reduce")
        assert await axe_violations(page, site) == [], scheme
    log.assert_clean()


def react_page(site_url: str, edge_url: str, session_id: str, token: str) -> str:
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <link rel="icon" href="data:," />
    <title>A React 19 app with ctxmeter's meters</title>
  </head>
  <body>
    <div id="root"></div>
    <script type="module">
      import {{ React, ReactDOMClient }} from "{site_url}/react.js";
      import "{edge_url}/static/ctxmeter-elements.js";
      const h = React.createElement;
      const getToken = async () => "{token}";
      function App() {{
        const [used, setUsed] = React.useState(null);
        const [text, setText] = React.useState("");
        const [ring, setRing] = React.useState(true);
        window.__hideRing = () => setRing(false);
        return h("main", null,
          h("h1", null, "Agent chat"),
          h("p", {{ id: "react-used" }}, used === null ? "none" : String(used)),
          ring && h("ctxmeter-context", {{
            id: "ring", "session-id": "{session_id}", url: "{edge_url}", getToken,
            "onctxmeter-context": (event) => setUsed(event.detail.used),
          }}),
          h("label", {{ htmlFor: "msg" }}, "Message"),
          h("textarea", {{ id: "msg", value: text, onChange: (event) => setText(event.target.value) }}),
          h("ctxmeter-draft", {{
            id: "draft", "session-id": "{session_id}", url: "{edge_url}", for: "msg", "max-tokens": "100", getToken,
          }}),
        );
      }}
      window.__react = React.version;
      ReactDOMClient.createRoot(document.getElementById("root")).render(h(App));
    </script>
  </body>
</html>"""


async def test_react_19_app_passes_properties_and_hears_events(
    page: Page,
    log: BrowserLog,
    start_edge: EdgeFactory,
    site: Site,
    http: aiohttp.ClientSession,
    session_id: str,
    tmp_path: Path,
) -> None:
    # With auth on, the token can only come from the getToken property React sets.
    edge = await start_edge(jwt_secret=JWT_SECRET)
    token = make_token(JWT_SECRET, [session_id])
    site.pages["/react.html"] = react_page(site.url, edge.url, session_id, token)
    sockets = Sockets(page)
    await page.goto(f"{site.url}/react.html")
    assert str(await page.evaluate("() => window.__react")).startswith("19.")
    await expect(page.locator("#ring")).to_have_attribute("state", "open")
    await expect(page.locator("#react-used")).to_have_text("0")  # React heard the element's event

    await change_context(http, edge.url, session_id, "", {"used": 64_000, "total": 128_000}, token)
    await expect(page.locator("#react-used")).to_have_text("64000")
    await expect(page.locator("#ring #context-ring")).to_have_attribute("aria-valuenow", "64000")
    await expect(page.locator("#ring #context-percent")).to_have_text("50%")

    # A controlled textarea: React owns its value, the element hears its input events.
    await page.locator("#msg").press_sequentially("hello world", delay=20)
    await expect(page.locator("#draft #draft-count")).to_have_text("2")
    await expect(page.locator("#draft #draft-max")).to_have_text("100")
    await screenshot(page, tmp_path, "react")

    # React unmounts the ring: the draft still holds the session's one socket.
    await page.evaluate("() => window.__hideRing()")
    await expect(page.locator("#ring")).to_have_count(0)
    await change_context(http, edge.url, session_id, "", {"used": 1_000, "total": 128_000}, token)
    await page.locator("#msg").press_sequentially("!", delay=20)
    await expect(page.locator("#draft #draft-state")).to_have_attribute("data-pending", "false")
    assert sockets.to(session_id) == 1
    assert sockets.to(session_id, closed=True) == 0
    log.assert_clean()
