"""ctxmeter.js itself, run in a real Chromium: its pure logic, and its socket handling against a real edge.

The module is imported in a page of the edge's origin (``/static/ctxmeter.js``), so it loads exactly as
it is served.
"""

from __future__ import annotations

import json
import math
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Page, WebSocket

from tests.browser.support import BrowserLog, post_json, screenshot
from ws_edge.app import EdgeServer

pytestmark = pytest.mark.browser

MODULE = "/static/ctxmeter.js"
STATIC_DIR = Path(__file__).resolve().parents[2] / "ws_edge" / "static"


async def load_module(page: Page, edge: EdgeServer) -> None:
    # A page of the edge's origin with nothing else in it (no favicon request: the edge has none).
    await page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    await page.goto(f"{edge.url}{MODULE}")
    await page.evaluate(f"async () => {{ window.ctxmeter = await import('{MODULE}'); }}")


async def run(page: Page, script: str, arg: Any = None) -> Any:
    """Evaluates ``script`` (an async arrow function of (module, arg)) with the loaded module."""
    return await page.evaluate(f"async (arg) => ({script})(window.ctxmeter, arg)", arg)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_backoff_is_exponential_with_full_jitter(page: Page, log: BrowserLog, edge: EdgeServer) -> None:
    await load_module(page, edge)
    result = await run(
        page,
        """async (m) => {
          const r = { baseMs: 500, capMs: 30000 };
          const attempts = [1, 2, 3, 4, 5, 6, 7, 8, 20, 2000];
          return {
            ceilings: attempts.map((n) => m.backoffCeiling(n, r)),
            lowest: attempts.map((n) => m.backoffDelay(n, r, () => 0)),
            highest: attempts.map((n) => m.backoffDelay(n, r, () => 0.999999)),
            half: m.backoffDelay(4, r, () => 0.5),
            defaults: m.DEFAULTS,
          };
        }""",
    )
    assert result["ceilings"] == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
    assert result["lowest"] == [0] * 10  # full jitter: anywhere from zero...
    assert result["highest"] == [ceiling - 1 for ceiling in result["ceilings"]]  # ...to just under the ceiling
    assert result["half"] == 2000
    defaults = result["defaults"]
    assert defaults["debounceMs"] == 300 and defaults["pingIntervalMs"] == 30_000
    assert defaults["reconnect"]["maxAttempts"] == math.inf  # unlimited unless asked (the seed's 5 is an option)
    log.assert_clean()


async def test_endpoints_follow_the_page_scheme_and_carry_the_token(
    page: Page, log: BrowserLog, edge: EdgeServer
) -> None:
    await load_module(page, edge)
    result = await run(
        page,
        """async (m) => ({
          https: m.endpoints({ sessionId: "s1", token: "a b&c" }, "https://meter.example/?session=s1"),
          http: m.endpoints({ sessionId: "s1" }, "http://127.0.0.1:8000/"),
          prefixed: m.endpoints({ sessionId: "s1", url: "https://example.org/ctx" }, "http://elsewhere/"),
          wss: m.endpoints({ sessionId: "s1", url: "wss://example.org/" }),
          page: m.endpoints({ sessionId: "s1" }),
        })""",
    )
    assert result["https"] == {
        "socket": "wss://meter.example/api/ws/counters/s1?token=a+b%26c",
        "context": "https://meter.example/api/counters/context/s1",
        "draft": "https://meter.example/api/counters/tokens/s1",
    }
    assert result["http"]["socket"] == "ws://127.0.0.1:8000/api/ws/counters/s1"
    assert result["prefixed"]["socket"] == "wss://example.org/ctx/api/ws/counters/s1"
    assert result["prefixed"]["draft"] == "https://example.org/ctx/api/counters/tokens/s1"
    assert result["wss"]["context"] == "https://example.org/api/counters/context/s1"
    assert result["page"]["socket"] == edge.url.replace("http://", "ws://") + "/api/ws/counters/s1"
    log.assert_clean()


async def test_rejects_invalid_session_ids(page: Page, log: BrowserLog, edge: EdgeServer) -> None:
    await load_module(page, edge)
    errors = await run(
        page,
        """async (m) => ["", "a.b", "a b", "a*", "x".repeat(129), null].map((sessionId) => {
          try { new m.CtxMeter({ sessionId, autoConnect: false }); return null; } catch (e) { return e.name; }
        })""",
    )
    assert errors == ["TypeError"] * 6
    accepted = await run(
        page, """async (m) => new m.CtxMeter({ sessionId: "A-z_0".padEnd(128, "9"), autoConnect: false }).sessionId"""
    )
    assert len(accepted) == 128
    log.assert_clean()


async def test_drops_older_revisions_per_type(page: Page, log: BrowserLog, edge: EdgeServer) -> None:
    await load_module(page, edge)
    result = await run(
        page,
        """async (m) => {
          const c = new m.CtxMeter({ sessionId: "s1", autoConnect: false });
          const seen = [];
          c.on("context", (d) => seen.push(["context", d.used, d.revision]));
          const off = c.on("tokens", (d) => seen.push(["tokens", d.count, d.revision]));
          const ctx = (used, revision, extra = {}) =>
            c.receive({ type: "context_update", session_id: "s1", data: { used, revision }, ...extra });
          const tok = (count, revision) =>
            c.receive(JSON.stringify({ type: "token_count", data: { count, revision } }));
          const applied = [
            ctx(10, 5),          // first: applied
            ctx(11, 4),          // older: dropped
            ctx(12, 5),          // same revision: applied (the same state again)
            ctx(13, 7),          // newer: applied
            tok(1, 3),           // tokens hold their own revision: applied although 3 < 7
            tok(2, 2),           // older draft: dropped
            ctx(14, 9, { session_id: "other" }),  // another session's frame: dropped
            c.receive("not json"),
            c.receive({ type: "something_new", data: {} }),
            c.receive({ type: "pong" }),
          ];
          off();
          tok(3, 10);            // applied, but the listener is gone
          return { applied, seen, context: c.context, tokens: c.tokens };
        }""",
    )
    assert result["applied"] == [True, False, True, True, True, False, False, False, False, True]
    assert result["seen"] == [["context", 10, 5], ["context", 12, 5], ["context", 13, 7], ["tokens", 1, 3]]
    assert result["context"] == {"used": 13, "revision": 7}
    assert result["tokens"] == {"count": 3, "revision": 10}
    log.assert_clean()


async def test_first_frame_after_connect_replaces_what_is_held(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    """After a (re)connect the server's state wins even at a lower revision (a reset bucket, an expired key)."""
    current = await post_json(http, f"{edge.url}/api/counters/context/{session_id}", {"used": 7, "total": 10})
    await load_module(page, edge)
    result = await run(
        page,
        """async (m, sid) => {
          const c = new m.CtxMeter({ sessionId: sid, autoConnect: false });
          c.receive({ type: "context_update", data: { used: 99, revision: 1e9 } });   // held from "before"
          const first = new Promise((resolve) => c.on("context", resolve));
          c.connect();
          const usage = await first;
          const later = c.receive({ type: "context_update", data: { used: 1, revision: usage.revision - 1 } });
          c.close();
          return { usage, later, status: c.status };
        }""",
        session_id,
    )
    assert result["usage"]["used"] == 7 and result["usage"]["revision"] == current["revision"]
    assert result["later"] is False  # after the first frame, older ones are dropped again
    assert result["status"] == {"state": "closed", "reason": "client"}
    log.assert_clean()


async def test_gives_up_after_max_attempts(page: Page, log: BrowserLog, edge: EdgeServer, tmp_path: Path) -> None:
    await load_module(page, edge)
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every attempt is refused
    statuses = await run(
        page,
        """async (m, url) => {
          const c = new m.CtxMeter({ sessionId: "s1", url, reconnect: { baseMs: 20, capMs: 40, maxAttempts: 3 } });
          const statuses = [];
          await new Promise((resolve) => c.on("status", (s) => {
            statuses.push(s);
            if (s.state === "closed") resolve();
          }));
          return statuses;
        }""",
        nobody,
    )
    states = [status["state"] for status in statuses]
    assert states == ["connecting"] + ["reconnecting", "connecting"] * 3 + ["closed"]
    waits = [status for status in statuses if status["state"] == "reconnecting"]
    assert [wait["attempt"] for wait in waits] == [1, 2, 3]
    assert [wait["ceilingMs"] for wait in waits] == [20, 40, 40]
    assert statuses[-1] == {"state": "closed", "reason": "gave_up", "attempt": 3, "code": 1006}
    await screenshot(page, tmp_path, "gave-up")
    log.assert_clean(allowed=(r"WebSocket connection to '.*' failed", r"net::ERR_CONNECTION_REFUSED"))


async def test_pings_are_answered_by_the_edge(page: Page, log: BrowserLog, edge: EdgeServer, session_id: str) -> None:
    sent: list[str] = []
    received: list[str] = []

    def watch(ws: WebSocket) -> None:
        ws.on("framesent", lambda payload: sent.append(str(payload)))
        ws.on("framereceived", lambda payload: received.append(str(payload)))

    page.on("websocket", watch)
    await load_module(page, edge)
    # Wait on the frames Playwright saw: three pings out, three pongs back, on one socket.
    async with page.expect_websocket() as socket_info:
        await run(
            page,
            """async (m, sid) => {
              window.__client = new m.CtxMeter({ sessionId: sid, pingIntervalMs: 100, pongTimeoutMs: 5000 });
              window.__statuses = [];
              window.__client.on("status", (s) => window.__statuses.push(s.state));
            }""",
            session_id,
        )
    ws = await socket_info.value
    await ws.wait_for_event("framereceived", predicate=lambda _: received.count('{"type":"pong"}') >= 3)
    statuses = await page.evaluate("() => { window.__client.close(); return window.__statuses; }")
    assert sent.count('{"type":"ping"}') >= 3
    assert received.count('{"type":"pong"}') >= 3
    assert statuses == ["connecting", "open", "closed"]  # never a reconnect
    assert len(log.sockets) == 1
    log.assert_clean()


@pytest.fixture
async def silent_peer() -> AsyncIterator[str]:
    """A WebSocket server that accepts and then never answers: what a half-open connection looks like."""
    connections: list[web.WebSocketResponse] = []

    async def accept(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        connections.append(ws)
        async for _ in ws:  # read and ignore every frame, pings included
            pass
        return ws

    app = web.Application()
    app.router.add_get("/api/ws/counters/{sid}", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for ws in connections:
            await ws.close()
        await runner.cleanup()


async def test_reconnects_when_no_pong_arrives(page: Page, log: BrowserLog, edge: EdgeServer, silent_peer: str) -> None:
    await load_module(page, edge)
    statuses = await run(
        page,
        """async (m, url) => {
          const c = new m.CtxMeter({
            sessionId: "s1", url, pingIntervalMs: 50, pongTimeoutMs: 150, reconnect: { baseMs: 10, capMs: 10 },
          });
          const statuses = [];
          await new Promise((resolve) => c.on("status", (s) => {
            statuses.push(s);
            if (s.state === "open" && statuses.filter((x) => x.state === "open").length === 2) resolve();
          }));
          c.close();
          return statuses;
        }""",
        silent_peer,
    )
    states = [status["state"] for status in statuses]
    assert states[:4] == ["connecting", "open", "reconnecting", "connecting"]
    assert statuses[2]["reason"] == "pong_timeout" and statuses[2]["attempt"] == 1
    assert states[-1] == "closed"
    log.assert_clean()


async def test_draft_calls_of_one_pause_share_one_request(
    page: Page, log: BrowserLog, edge: EdgeServer, session_id: str
) -> None:
    await load_module(page, edge)
    result = await run(
        page,
        """async (m, sid) => {
          const c = new m.CtxMeter({ sessionId: sid, autoConnect: false, debounceMs: 50 });
          const tokens = [];
          c.on("tokens", (t) => tokens.push(t.count));
          const a = c.countDraft("hello", { model: "gpt-4" });
          const b = c.countDraft("hello world", { model: "gpt-4" });
          const pendingBefore = c.draftPending;
          const usage = await b;
          const pendingAfter = c.draftPending;
          const closing = c.countDraft("never sent");
          c.close();
          const closed = await closing.then(() => null, (e) => [e.name, e.code]);
          let unknown = null;
          try { c.on("nope", () => {}); } catch (e) { unknown = e.name; }
          return { same: a === b, usage, tokens, pendingBefore, pendingAfter, closed, unknown };
        }""",
        session_id,
    )
    assert result["same"] is True
    assert result["usage"]["count"] == 2 and result["usage"]["model"] == "gpt-4" and result["usage"]["max"] == 8192
    assert result["tokens"] == [2]
    assert result["pendingBefore"] is True and result["pendingAfter"] is False
    assert result["closed"] == ["CtxMeterError", "closed"]
    assert result["unknown"] == "TypeError"
    bodies = [json.loads(body or "") for _, _, body in log.requests_to("/api/counters/tokens/")]
    assert bodies == [{"text": "hello world", "model": "gpt-4"}]
    log.assert_clean()


async def test_type_declarations_cover_every_export(page: Page, log: BrowserLog, edge: EdgeServer) -> None:
    await load_module(page, edge)
    exported = sorted(await page.evaluate("() => Object.keys(window.ctxmeter)"))
    declarations = (STATIC_DIR / "ctxmeter.d.ts").read_text()
    declared = sorted(set(re.findall(r"^export (?:const|class|function) (\w+)", declarations, re.MULTILINE)))
    assert exported == declared
    async with aiohttp.ClientSession() as http, http.get(f"{edge.url}/static/ctxmeter.d.ts") as reply:
        assert reply.status == 200 and await reply.text() == declarations
    log.assert_clean()
