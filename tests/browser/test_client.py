"""ctxmeter.js itself, run in a real Chromium: its pure logic, and its socket handling against a real edge.

The module is imported in a page of the edge's origin (``/static/ctxmeter.js``), so it loads exactly as
it is served.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from playwright.async_api import Page, WebSocket

from tests.browser.support import (
    JWT_SECRET,
    BrowserLog,
    EdgeFactory,
    change_context,
    make_token,
    post_json,
    screenshot,
)
from tests.tools import tool_missing
from ws_edge.app import EdgeServer

pytestmark = pytest.mark.browser

MODULE = "/static/ctxmeter.js"
ROOT = Path(__file__).resolve().parents[2]
STATIC_DIR = ROOT / "ws_edge" / "static"


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
        "history": "https://meter.example/api/counters/context/s1/history",
        "models": "https://meter.example/api/counters/models",
    }
    assert result["http"]["socket"] == "ws://127.0.0.1:8000/api/ws/counters/s1"
    assert result["prefixed"]["socket"] == "wss://example.org/ctx/api/ws/counters/s1"
    assert result["prefixed"]["draft"] == "https://example.org/ctx/api/counters/tokens/s1"
    assert result["prefixed"]["history"] == "https://example.org/ctx/api/counters/context/s1/history"
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
          // (No revision check within the test: those are tested against the edge below.)
          const c = new m.CtxMeter({ sessionId: "s1", autoConnect: false, checkDebounceMs: 600000 });
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
            ctx(12, 5),          // same revision, other content: applied
            ctx(12, 5),          // the very same state again: not delivered twice
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
          const checkPending = c.checkPending;  // the older frames asked for a check...
          c.close();                            // ...which close() cancels
          return { applied, seen, context: c.context, tokens: c.tokens, checkPending, after: c.checkPending };
        }""",
    )
    assert result["applied"] == [True, False, True, False, True, True, False, False, False, False, True]
    assert result["checkPending"] is True and result["after"] is False
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


# -- history and models ------------------------------------------------------------------------


async def test_history_and_models(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    await change_context(http, edge.url, session_id, "", {"used": 10_000, "total": 100_000, "reserved": 5_000})
    await change_context(http, edge.url, session_id, "add", {"tokens": 2_500})
    current = await change_context(http, edge.url, session_id, "compact", {"used": 4_000})
    await load_module(page, edge)
    result = await run(
        page,
        """async (m, sid) => {
          const c = new m.CtxMeter({ sessionId: sid, autoConnect: false });
          const all = await c.history();
          const two = await c.history({ limit: 2 });
          const bad = [];
          for (const limit of [0, 1001, 2.5, "3"]) {
            try { await c.history({ limit }); bad.push(null); } catch (e) { bad.push(e.name); }
          }
          const { models } = await c.models();
          return { all, two, bad, gpt4o: models.find((model) => model.name === "gpt-4o") };
        }""",
        session_id,
    )
    points = result["all"]["points"]
    assert result["all"]["session_id"] == session_id
    assert [(p["op"], p["used"], p["compact_at"]) for p in points] == [
        ("set", 10_000, 95_000),
        ("add", 12_500, 95_000),
        ("compact", 4_000, 95_000),
    ]
    assert points[-1]["revision"] == current["revision"]  # the last point is the current state
    assert result["two"]["points"] == points[-2:]
    assert result["bad"] == ["RangeError"] * 4  # refused before any request
    assert result["gpt4o"]["context_window"] == 128_000 and result["gpt4o"]["exact"] is True
    assert len(log.requests_to("/history", method="GET")) == 2
    log.assert_clean()


# -- revisions that go backwards ---------------------------------------------------------------


async def test_older_frames_confirmed_by_the_edge_stay_dropped(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    """Ordinary out-of-order delivery: the edge confirms the held revision, so the older frames stay out;
    a burst of them makes one read."""
    older = await change_context(http, edge.url, session_id, "", {"used": 1_000, "total": 100_000})
    current = await change_context(http, edge.url, session_id, "", {"used": 2_000, "total": 100_000})
    await load_module(page, edge)
    result = await run(
        page,
        """async (m, { sid, older, current }) => {
          const c = new m.CtxMeter({ sessionId: sid, autoConnect: false });
          const seen = [];
          c.on("context", (d) => seen.push([d.used, d.revision]));
          const frame = (data) => ({ type: "context_update", session_id: sid, data });
          const applied = [c.receive(frame(current))];
          for (let i = 0; i < 5; i++) applied.push(c.receive(frame({ ...older, used: older.used + i })));
          const pending = c.checkPending;
          while (c.checkPending) await new Promise((resolve) => setTimeout(resolve, 20));
          return { applied, pending, seen, held: c.context };
        }""",
        {"sid": session_id, "older": older, "current": current},
    )
    assert result["applied"] == [True] + [False] * 5
    assert result["pending"] is True
    assert result["seen"] == [[2_000, current["revision"]]]
    assert result["held"] == current
    assert len(log.requests_to(f"/api/counters/context/{session_id}", method="GET")) == 1  # one read per burst
    log.assert_clean()


@pytest.mark.parametrize("forged_revision", [2**50, 2**62])
async def test_a_forged_revision_gives_way_to_the_edge(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, forged_revision: int
) -> None:
    """A frame the client cannot confirm (here fed straight to it, so the edge knows nothing of it) never
    shuts out the real changes that follow at lower revisions."""
    await change_context(http, edge.url, session_id, "", {"used": 30_000, "total": 100_000})
    await load_module(page, edge)
    await run(
        page,
        """async (m, sid) => {
          const c = (window.__client = new m.CtxMeter({ sessionId: sid }));
          window.__seen = [];
          c.on("context", (d) => window.__seen.push([d.used, d.revision]));
          await new Promise((resolve) => c.on("context", resolve));
        }""",
        session_id,
    )
    held = await page.evaluate("() => window.__client.context")
    forged = {**held, "used": 99_999, "revision": forged_revision}
    # The JSON text as a forger would send it (2^62 is beyond what a JavaScript number holds exactly).
    applied = await page.evaluate(
        "(text) => window.__client.receive(text)",
        json.dumps({"type": "context_update", "session_id": session_id, "data": forged}),
    )
    assert applied is (forged_revision < 2**53)  # a revision beyond 2^53 is never applied
    real = await change_context(http, edge.url, session_id, "", {"used": 60_000, "total": 100_000})
    await page.wait_for_function(
        "(revision) => window.__client.context.revision === revision && !window.__client.checkPending",
        arg=real["revision"],
    )
    final = await page.evaluate("() => { window.__client.close(); return window.__client.context; }")
    assert final == real
    seen = await page.evaluate("() => window.__seen")
    expected_forged = [[99_999, forged_revision]] if forged_revision < 2**53 else []
    assert seen == [[30_000, held["revision"]], *expected_forged, [60_000, real["revision"]]]
    log.assert_clean()


async def test_draft_revisions_checked_like_the_context(
    page: Page, log: BrowserLog, edge: EdgeServer, session_id: str
) -> None:
    """A forged draft revision gives way to the client's next count; an older draft event than the client's
    own count stays dropped."""
    await load_module(page, edge)
    result = await run(
        page,
        """async (m, sid) => {
          const c = new m.CtxMeter({ sessionId: sid, autoConnect: false, debounceMs: 10 });
          const seen = [];
          c.on("tokens", (t) => seen.push([t.count, t.revision]));
          const settle = async () => { while (c.checkPending) await new Promise((r) => setTimeout(r, 20)); };
          const first = await c.countDraft("hello", { model: "gpt-4o" });
          // A forged draft with a huge (but exact) revision: taken, nothing can tell yet.
          c.receive({ type: "token_count", session_id: sid, data: { ...first, count: 777, revision: 2 ** 50 } });
          const second = await c.countDraft("hello world", { model: "gpt-4o" });  // lower revision...
          await settle();
          const afterForged = c.tokens;                                         // ...taken after the check
          // An older event of the client's own first count, arriving late: stays dropped.
          const late = c.receive({ type: "token_count", session_id: sid, data: first });
          await settle();
          const result = { first, second, afterForged, late, held: c.tokens, seen };
          c.close();
          return result;
        }""",
        session_id,
    )
    first, second = result["first"], result["second"]
    assert second["revision"] > first["revision"] and second["count"] == 2
    assert result["afterForged"] == second
    assert result["late"] is False and result["held"] == second
    assert result["seen"] == [[1, first["revision"]], [777, 2**50], [2, second["revision"]]]
    log.assert_clean()


# -- tokens that expire ------------------------------------------------------------------------


async def test_token_expiry_and_renewal_delay(page: Page, log: BrowserLog, edge: EdgeServer) -> None:
    await load_module(page, edge)
    token = make_token(JWT_SECRET, ["s1"], lifetime_s=3_600)
    result = await run(
        page,
        """async (m, token) => ({
          exp: m.tokenExpiry(token),
          notJwt: [m.tokenExpiry("opaque"), m.tokenExpiry("a.b.c"), m.tokenExpiry(undefined), m.tokenExpiry("a.e30.c")],
          hour: m.renewDelay(3_600_000, 0),       // 80 % of an hour: 48 min
          minute: m.renewDelay(60_000, 0),        // 30 s before expiry
          tenSeconds: m.renewDelay(10_000, 0),    // never sooner than half the remaining life
          expired: m.renewDelay(0, 5_000),        // never a tight loop
          custom: m.renewDelay(10_000, 0, { minMs: 8_000 }),
          defaults: m.DEFAULTS.renew,
        })""",
        token,
    )
    assert result["exp"] == jwt.decode(token, options={"verify_signature": False})["exp"] * 1000
    assert result["notJwt"] == [None, None, None, None]
    assert result["hour"] == 2_880_000
    assert result["minute"] == 30_000
    assert result["tenSeconds"] == 5_000
    assert result["expired"] == 1_000
    assert result["custom"] == 8_000
    assert result["defaults"] == {"share": 0.8, "leadMs": 30_000, "minMs": 1_000, "capMs": 60_000}
    log.assert_clean()


async def start_with_tokens(page: Page, edge: EdgeServer, session_id: str, renew: dict[str, int]) -> None:
    """Loads the module and starts a client whose getToken() asks the test (window.mintToken) for a token."""
    await load_module(page, edge)
    await run(
        page,
        """async (m, { sid, renew }) => {
          window.__statuses = [];
          window.__seen = [];
          window.__errors = [];
          window.__client = new m.CtxMeter({ sessionId: sid, getToken: () => window.mintToken(), renew });
          window.__client.on("status", (s) => window.__statuses.push(s));
          window.__client.on("context", (d) => window.__seen.push([d.used, d.revision]));
          window.__client.on("error", (e) => window.__errors.push(e.code));
        }""",
        {"sid": session_id, "renew": renew},
    )


async def test_get_token_renews_the_socket_without_a_gap(
    page: Page, log: BrowserLog, start_edge: EdgeFactory, http: aiohttp.ClientSession, session_id: str
) -> None:
    edge = await start_edge(jwt_secret=JWT_SECRET)
    admin = make_token(JWT_SECRET, ["*"])
    minted: list[str] = []

    def mint() -> str:
        minted.append(make_token(JWT_SECRET, [session_id], lifetime_s=TOKEN_LIFETIME_S))
        return minted[-1]

    await page.expose_function("mintToken", mint)
    await start_with_tokens(page, edge, session_id, {"minMs": 500})
    await page.wait_for_function("() => window.__client.status.state === 'open' && window.__seen.length === 1")

    # Changes a little slower than the edge's throttle (so none is coalesced), through several renewals.
    sent: list[dict[str, Any]] = []
    for used in range(1_000, 1_000 * (MAX_CHANGES + 1), 1_000):
        sent.append(await change_context(http, edge.url, session_id, "", {"used": used, "total": 100_000}, admin))
        await asyncio.sleep(0.25)
        if len(log.sockets) > RENEWALS and len(sent) >= 8:
            break
    await page.wait_for_function(
        "(revision) => window.__client.context.revision === revision", arg=sent[-1]["revision"]
    )
    # HTTP calls carry the current token: the first ones expired long ago.
    draft = await page.evaluate("() => window.__client.countDraft('hello world', { immediate: true })")
    history = await page.evaluate("() => window.__client.history({ limit: 3 })")
    statuses = await page.evaluate("() => window.__statuses.map((s) => s.state)")
    seen = await page.evaluate("() => window.__seen")
    errors = await page.evaluate("() => window.__errors")
    await page.evaluate("() => window.__client.close()")

    assert len(log.sockets) > RENEWALS, log.sockets  # renewed several times...
    # Each socket with a token of its own, fresh from getToken().
    socket_tokens = [url.split("token=", 1)[1] for url in log.sockets]
    assert len(set(socket_tokens)) == len(socket_tokens) and set(socket_tokens) <= set(minted)
    assert statuses == ["connecting", "open"]  # ...without ever leaving "open"
    assert errors == []
    # Every change arrived, once, in order, and nothing older in between.
    assert seen[1:] == [[change["used"], change["revision"]] for change in sent]
    assert draft["count"] == 2 and history["points"][-1]["revision"] == sent[-1]["revision"]
    log.assert_clean()


# Short-lived tokens, so the test sees several renewals in a few seconds (exp is whole seconds).
TOKEN_LIFETIME_S = 4
RENEWALS = 3
MAX_CHANGES = 60


async def test_a_refused_renewed_token_stops_the_client(
    page: Page, log: BrowserLog, start_edge: EdgeFactory, session_id: str
) -> None:
    edge = await start_edge(jwt_secret=JWT_SECRET)
    tokens = [
        make_token(JWT_SECRET, [session_id], lifetime_s=3),
        make_token("not-the-secret-0123456789abcdefghij", [session_id], lifetime_s=600),
    ]

    def mint() -> str:
        return tokens.pop(0) if len(tokens) > 1 else tokens[0]

    await page.expose_function("mintToken", mint)
    await start_with_tokens(page, edge, session_id, {"minMs": 200})
    await page.wait_for_function("() => window.__client.status.state === 'auth_failed'")
    # No retry loop: the first retry would come within 500 ms; wait several times that.
    await page.wait_for_timeout(1_500)
    statuses = await page.evaluate("() => window.__statuses")
    assert [status["state"] for status in statuses] == ["connecting", "open", "auth_failed"]
    assert statuses[-1]["httpStatus"] == 401
    assert len(log.sockets) == 2  # the first socket, and the renewal the edge refused
    log.assert_clean(allowed=(r"WebSocket connection to '.*' failed", r"Failed to load resource: .*status of 401"))


async def test_an_expired_token_is_replaced_when_get_token_has_a_later_one(
    page: Page, log: BrowserLog, start_edge: EdgeFactory, http: aiohttp.ClientSession, session_id: str
) -> None:
    """The socket outlived its token (no renewal in time, as after a laptop's sleep): the edge closes it with
    1008, and the client connects again with a later token from getToken() instead of giving up."""
    edge = await start_edge(jwt_secret=JWT_SECRET)
    lifetimes = [2, 600]

    def mint() -> str:
        return make_token(JWT_SECRET, [session_id], lifetime_s=lifetimes.pop(0) if len(lifetimes) > 1 else 600)

    await page.expose_function("mintToken", mint)
    # Renewal far later than the first token lives, so the edge's expiry close comes first.
    await start_with_tokens(page, edge, session_id, {"minMs": 60_000, "capMs": 60_000})
    await page.wait_for_function("() => window.__statuses.filter((s) => s.state === 'open').length === 2")
    real = await change_context(
        http, edge.url, session_id, "", {"used": 5_000, "total": 10_000}, make_token(JWT_SECRET, [session_id])
    )
    await page.wait_for_function("(revision) => window.__client.context?.revision === revision", arg=real["revision"])
    statuses = await page.evaluate("() => { window.__client.close(); return window.__statuses; }")
    states = [status["state"] for status in statuses]
    assert states == ["connecting", "open", "reconnecting", "connecting", "open", "closed"]
    assert statuses[2]["code"] == 1008 and "token" in statuses[2]["reason"]
    assert len(log.sockets) == 2
    log.assert_clean()


async def test_type_declarations_compile(tmp_path: Path) -> None:
    """ctxmeter.d.ts and ctxmeter-elements.d.ts type-check (strict) against a use of every part of the API."""
    tsc = ROOT / "clients" / "node" / "node_modules" / ".bin" / "tsc"
    if not tsc.is_file():
        tool_missing("tsc not installed (npm ci --prefix clients/node)", "the type declarations must be checked")
    for name in ("ctxmeter", "ctxmeter-elements"):
        (tmp_path / f"{name}.js").write_text((STATIC_DIR / f"{name}.js").read_text())
        (tmp_path / f"{name}.d.ts").write_text((STATIC_DIR / f"{name}.d.ts").read_text())
    # The payloads, generated from the contract's JSON Schema.
    (tmp_path / "ctxmeter-schemas.d.ts").write_text((STATIC_DIR / "ctxmeter-schemas.d.ts").read_text())
    (tmp_path / "use.ts").write_text(TYPE_USE)
    process = await asyncio.create_subprocess_exec(
        str(tsc),
        *("--noEmit", "--strict", "--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler"),
        *("--lib", "es2022,dom", str(tmp_path / "use.ts")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()


TYPE_USE = """
import { CtxMeter, renewDelay, tokenExpiry } from "./ctxmeter.js";
import type { ContextHistory, ContextUsage, ModelsReply } from "./ctxmeter.js";

const meter = new CtxMeter({ sessionId: "s", getToken: async () => "token", renew: { minMs: 500 } });
const fixed = new CtxMeter({ sessionId: "s", token: "token", checkDebounceMs: 50, autoConnect: false });
const history: Promise<ContextHistory> = meter.history({ limit: 10 });
const models: Promise<ModelsReply> = fixed.models();
meter.on("context", (usage: ContextUsage) => {
  const room: number = usage.left + usage.reserved + usage.compact_at + usage.compactions;
  const estimated: boolean = usage.estimated;
  const when: string | null = usage.compacted_at;
  void [room, estimated, when];
});
history.then(({ points }) => points.map((point) => [point.op, point.used, point.compact_at, point.revision]));
models.then(({ models }) => models.map((model) => model.context_window + (model.max_output ?? 0)));
const expiry: number | null = tokenExpiry("a.b.c");
const delay: number = renewDelay(Date.now() + 60_000, Date.now(), { share: 0.8, leadMs: 30_000 });
const pending: boolean = meter.checkPending;
void [expiry, delay, pending];

import "./ctxmeter-elements.js";
import type { CtxmeterContextElement, CtxmeterDraftElement } from "./ctxmeter-elements.js";
const ring: CtxmeterContextElement = document.createElement("ctxmeter-context");
ring.sessionId = "s";
ring.getToken = async () => "token";
ring.addEventListener("ctxmeter-context", (event) => {
  const left: number = event.detail.left;
  const shown: number | undefined = ring.usage?.used;
  void [left, shown];
});
const draft = document.querySelector("ctxmeter-draft");
if (draft !== null) {
  const typed: CtxmeterDraftElement = draft;
  typed.text = "hello";
  const count: number | undefined = typed.usage?.count;
  const busy: boolean = typed.pending;
  const shared: CtxMeter | null = typed.client;
  void [count, busy, shared];
}
document.addEventListener("ctxmeter-draft", (event) => void event.detail.max);
// @ts-expect-error: the ring's usage is a ContextUsage, not a draft's count
void ring.usage?.count;
"""
