"""The demo page in a real Chromium against a real edge, real functions and real NATS.

Every wait is for a DOM value (Playwright's ``expect``), never a timing assertion.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from playwright.async_api import Page, expect

from schemas import subjects
from schemas.models import ContextUpdateEvent, ContextUsage
from schemas.subjects import ContextOp
from tests.browser.support import (
    PHONE,
    BrowserLog,
    EdgeFactory,
    hue_name,
    make_token,
    open_demo,
    post_json,
    record_statuses,
    record_texts,
    recorded_statuses,
    recorded_texts,
    screenshot,
)
from ws_edge.app import EdgeServer

pytestmark = pytest.mark.browser

# What Chromium itself logs when a socket or a fetch is refused; expected only where a test causes it.
CONNECTION_REFUSED = (
    r"WebSocket connection to '.*' failed",
    r"Failed to load resource: net::ERR_CONNECTION_REFUSED",
)


async def set_context(
    http: aiohttp.ClientSession, edge_url: str, session_id: str, used: int, total: int
) -> dict[str, Any]:
    return await post_json(http, f"{edge_url}/api/counters/context/{session_id}", {"used": used, "total": total})


async def count_tokens(http: aiohttp.ClientSession, edge_url: str, text: str, model: str) -> int:
    reply = await post_json(http, f"{edge_url}/api/counters/tokens", {"text": text, "model": model})
    return int(reply["count"])


async def test_page_follows_updates_and_never_steps_back(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, tmp_path: Path
) -> None:
    await open_demo(page, edge.url, session_id)
    # The state on connect: the zero state of a fresh session.
    await expect(page.locator("#context-percent")).to_have_text("0%")
    await expect(page.locator("#context-total")).not_to_have_text("–")
    await record_texts(page, "#context-used")

    # A burst, much faster than the throttle interval: the page must end on the last value.
    for used in range(1_000, 41_000, 1_000):
        await set_context(http, edge.url, session_id, used, 100_000)
    await expect(page.locator("#context-used")).to_have_text("40,000")
    await expect(page.locator("#context-percent")).to_have_text("40%")
    await expect(page.locator("#context-total")).to_have_text("100,000")

    shown = [int(text.replace(",", "")) for text in await recorded_texts(page, "#context-used")]
    assert shown[-1] == 40_000
    assert shown == sorted(shown), f"the meter stepped back: {shown}"
    await screenshot(page, tmp_path, "follows-updates")
    log.assert_clean()


async def test_curl_line_moves_the_meter_and_copies(
    page: Page, log: BrowserLog, edge: EdgeServer, session_id: str, tmp_path: Path
) -> None:
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=edge.url)
    await open_demo(page, edge.url, session_id)
    await expect(page.locator("#session-id")).to_have_text(session_id)
    curl = await page.locator("#curl").text_content()
    assert curl is not None and f"/api/counters/context/{session_id}" in curl

    await page.locator("#copy-curl").click()
    await expect(page.locator("#copy-note")).to_have_text("Copied to the clipboard.")
    assert await page.evaluate("() => navigator.clipboard.readText()") == curl

    # Run the line exactly as shown (a shell would join the backslash-continued lines).
    argv = shlex.split(curl.replace("\\\n", " "))
    assert argv[0] == "curl"
    process = await asyncio.create_subprocess_exec(
        *argv, "--silent", "--fail", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert json.loads(stdout)["used"] == 96_000

    await expect(page.locator("#context-used")).to_have_text("96,000")
    await expect(page.locator("#context-percent")).to_have_text("75%")
    await screenshot(page, tmp_path, "curl")
    log.assert_clean()


@pytest.mark.parametrize(
    ("used", "percent", "level", "colour"),
    [
        (0, "0%", "normal", "blue"),
        (79, "79%", "normal", "blue"),
        (80, "80%", "warning", "orange"),
        (89, "89%", "warning", "orange"),
        (90, "90%", "critical", "red"),
        (100, "100%", "critical", "red"),
    ],
)
async def test_ring_colour_and_aria_at_thresholds(
    page: Page,
    log: BrowserLog,
    edge: EdgeServer,
    http: aiohttp.ClientSession,
    session_id: str,
    tmp_path: Path,
    used: int,
    percent: str,
    level: str,
    colour: str,
) -> None:
    await open_demo(page, edge.url, session_id)
    ring, arc = page.locator("#context-ring"), page.locator("#context-arc")
    # The ring animates its changes...
    transition = await arc.evaluate("(node) => getComputedStyle(node).transitionProperty")
    assert "stroke-dashoffset" in transition and "stroke" in transition.split(", ")
    # ...except for people who ask for less motion, which also makes the computed colour final at once.
    await page.emulate_media(reduced_motion="reduce")
    assert await arc.evaluate("(node) => getComputedStyle(node).transitionDuration") == "0s"

    # Move away first, so the ring has to change to reach the value under test.
    await set_context(http, edge.url, session_id, 50 if used != 50 else 40, 100)
    await expect(ring).to_have_attribute("aria-valuenow", "50")
    await set_context(http, edge.url, session_id, used, 100)

    # A meter of tokens: now = used, max = the window.
    await expect(ring).to_have_attribute("aria-valuenow", str(used))
    await expect(ring).to_have_attribute("aria-valuemin", "0")
    await expect(ring).to_have_attribute("aria-valuemax", "100")
    await expect(ring).to_have_attribute("role", "meter")
    await expect(ring).to_have_attribute("aria-valuetext", re.compile(rf"^{percent} used: {used} of 100 tokens"))
    await expect(ring).to_have_attribute("data-level", level)
    await expect(page.locator("#context-percent")).to_have_text(percent)

    stroke = await arc.evaluate("(node) => getComputedStyle(node).stroke")
    assert hue_name(stroke) == colour, f"{used}%: arc stroke {stroke}"
    text_colour = await page.locator("#context-percent").evaluate("(node) => getComputedStyle(node).color")
    assert hue_name(text_colour) == colour, f"{used}%: percentage colour {text_colour}"
    # The arc's length follows the percentage (pathLength 100: the offset is what is not used).
    offset = await arc.evaluate("(node) => parseFloat(getComputedStyle(node).strokeDashoffset)")
    assert offset == pytest.approx(100 - used)
    await screenshot(page, tmp_path, f"ring-{used}")
    log.assert_clean()


async def test_draft_counter_debounces_one_request_per_pause(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, tmp_path: Path
) -> None:
    await open_demo(page, edge.url, session_id)
    draft, state = page.locator("#draft"), page.locator("#draft-state")
    await record_texts(page, "#draft-state")
    await expect(page.locator("#model")).to_have_value("gpt-4o")

    # Keys 30 ms apart, far under the 300 ms debounce: one request once typing pauses.
    await draft.press_sequentially("hello", delay=30)
    await expect(state).to_have_attribute("data-pending", "false")
    requests = log.requests_to("/api/counters/tokens/")
    assert len(requests) == 1, requests
    assert requests[0][1].endswith(f"/api/counters/tokens/{session_id}")
    assert json.loads(requests[0][2] or "") == {"text": "hello", "model": "gpt-4o"}
    assert "Calculating…" in await recorded_texts(page, "#draft-state")
    expected = await count_tokens(http, edge.url, "hello", "gpt-4o")
    await expect(page.locator("#draft-count")).to_have_text(str(expected))
    await expect(page.locator("#draft-max")).to_have_text("128,000")

    # A second burst of keys after the pause: exactly one more request, with the whole text.
    await draft.press_sequentially(" world, how are you?", delay=30)
    await expect(state).to_have_attribute("data-pending", "false")
    requests = log.requests_to("/api/counters/tokens/")
    assert len(requests) == 2, requests
    assert json.loads(requests[1][2] or "")["text"] == "hello world, how are you?"
    expected = await count_tokens(http, edge.url, "hello world, how are you?", "gpt-4o")
    await expect(page.locator("#draft-count")).to_have_text(str(expected))
    await expect(state).not_to_have_text("Calculating…")
    await screenshot(page, tmp_path, "draft-debounce")
    log.assert_clean()


async def test_draft_warning_at_80_and_critical_at_95_percent(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, tmp_path: Path
) -> None:
    await open_demo(page, edge.url, session_id)
    await page.emulate_media(reduced_motion="reduce")
    bar, state, count = page.locator("#draft-bar"), page.locator("#draft-state"), page.locator("#draft-count")

    await page.locator("#model").select_option("gpt-4")
    await expect(page.locator("#draft-max")).to_have_text("8,192")  # from the edge's reply for gpt-4

    cases = [
        (0.50, "normal", "blue", r"^\d+(\.\d)?% of the 8,192-token limit of gpt-4\.$"),
        (0.85, "warning", "orange", r"^Warning: "),
        (0.97, "critical", "red", r"^Critical: .*Shorten the message\.$"),
    ]
    for share, level, colour, message in cases:
        text = " hello" * int(8_192 * share)
        tokens = await count_tokens(http, edge.url, text, "gpt-4")
        await page.locator("#draft").fill(text)
        await expect(count).to_have_text(f"{tokens:,}")
        await expect(state).to_have_attribute("data-pending", "false")
        await expect(bar).to_have_attribute("data-level", level)
        await expect(state).to_have_attribute("data-level", level)
        await expect(state).to_have_text(re.compile(message))
        await expect(bar).to_have_attribute("role", "meter")
        await expect(bar).to_have_attribute("aria-valuenow", str(tokens))
        await expect(bar).to_have_attribute("aria-valuemax", "8192")
        fill = await bar.locator(".bar-fill").evaluate("(node) => getComputedStyle(node).backgroundColor")
        assert hue_name(fill) == colour, f"{level}: bar colour {fill}"
        await screenshot(page, tmp_path, f"draft-{level}")
    log.assert_clean()


async def test_reconnects_after_edge_restart_with_backoff_and_restores_state(
    page: Page,
    log: BrowserLog,
    start_edge: EdgeFactory,
    http: aiohttp.ClientSession,
    nc: NATS,
    session_id: str,
    tmp_path: Path,
) -> None:
    edge = await start_edge()
    port = urlsplit(edge.url).port
    await set_context(http, edge.url, session_id, 30_000, 100_000)
    await open_demo(page, edge.url, session_id)
    await expect(page.locator("#context-percent")).to_have_text("30%")
    await record_statuses(page)

    await edge.stop()
    # The state changes while no edge is up (straight through the functions).
    await nc.request(subjects.context(ContextOp.SET, session_id), b'{"used": 85000, "total": 100000}', timeout=5)
    # Several attempts fail while the edge is down; the status shows them.
    await page.wait_for_function("() => Number(document.querySelector('#status').dataset.attempt) >= 3")
    await expect(page.locator("#status")).to_have_attribute("data-state", re.compile("^(re)?connecting$"))
    await expect(page.locator("#status-text")).to_have_text(re.compile(r"Reconnecting"))
    # The last known figures stay, marked as such.
    await expect(page.locator("#context-stale")).to_be_visible()
    await expect(page.locator("#context-ring")).to_have_attribute("data-live", "false")
    await screenshot(page, tmp_path, "reconnecting")

    restarted = await start_edge(port=port)
    assert restarted.url == edge.url
    await expect(page.locator("#status")).to_have_attribute("data-state", "open")
    # Restored from the first frames of the new socket.
    await expect(page.locator("#context-percent")).to_have_text("85%")
    await expect(page.locator("#context-ring")).to_have_attribute("data-level", "warning")
    await expect(page.locator("#context-stale")).to_be_hidden()
    # And live again: the new socket follows updates.
    await set_context(http, restarted.url, session_id, 95_000, 100_000)
    await expect(page.locator("#context-percent")).to_have_text("95%")

    statuses = await recorded_statuses(page)
    waits = [status for status in statuses if status["state"] == "reconnecting"]
    assert len(waits) >= 3, statuses
    assert [status["attempt"] for status in waits] == list(range(1, len(waits) + 1))
    base, cap = 500, 30_000  # the client's defaults
    assert [status["ceilingMs"] for status in waits] == [min(cap, base * 2**i) for i in range(len(waits))]
    assert all(0 <= status["delayMs"] < status["ceilingMs"] for status in waits), waits
    assert statuses[-1]["state"] == "open"
    assert len(log.sockets) == len(waits) + 1  # one socket per attempt, plus the first
    await screenshot(page, tmp_path, "reconnected")
    log.assert_clean(allowed=CONNECTION_REFUSED)


async def test_older_revision_is_ignored(
    page: Page,
    log: BrowserLog,
    edge: EdgeServer,
    http: aiohttp.ClientSession,
    nc: NATS,
    session_id: str,
    tmp_path: Path,
) -> None:
    for used in (10_000, 20_000):
        await set_context(http, edge.url, session_id, used, 100_000)
    current = await set_context(http, edge.url, session_id, 50_000, 100_000)
    assert current["revision"] >= 2
    await open_demo(page, edge.url, session_id)
    await expect(page.locator("#context-percent")).to_have_text("50%")
    await record_texts(page, "#context-used")

    older = ContextUsage.model_validate({**current, "used": 1, "percentage": 0.0, "revision": current["revision"] - 1})
    frame = ContextUpdateEvent(session_id=session_id, data=older, timestamp=time.time()).model_dump(mode="json")
    # Into the client's own handler: refused, and nothing changes.
    applied = await page.evaluate("(frame) => window.ctxmeterDemo.client.receive(frame)", frame)
    assert applied is False
    held = await page.evaluate("() => window.ctxmeterDemo.client.context.revision")
    assert held == current["revision"]

    # Through NATS and the edge, followed by a real update: the page goes straight to the newer value.
    await nc.publish(subjects.events(session_id), json.dumps(frame).encode())
    await nc.flush()
    newer = await set_context(http, edge.url, session_id, 60_000, 100_000)
    await expect(page.locator("#context-used")).to_have_text("60,000")
    await expect(page.locator("#context-ring")).to_have_attribute("data-revision", str(newer["revision"]))
    assert await recorded_texts(page, "#context-used") == ["50,000", "60,000"]
    await screenshot(page, tmp_path, "older-revision")
    log.assert_clean()


@pytest.mark.parametrize("case", ["bad_token", "other_session", "no_token"])
async def test_auth_failure_shows_a_clear_message_and_does_not_retry(
    page: Page, log: BrowserLog, start_edge: EdgeFactory, session_id: str, tmp_path: Path, case: str
) -> None:
    secret = "browser-test-secret-0123456789abcdef"
    edge = await start_edge(jwt_secret=secret)
    token = {
        "bad_token": make_token("not-the-secret-0123456789abcdefghij", [session_id]),
        "other_session": make_token(secret, ["someone-else"]),
        "no_token": None,
    }[case]
    http_status = 403 if case == "other_session" else 401
    query = f"?session={session_id}" + (f"&token={token}" if token else "")
    await page.goto(f"{edge.url}/{query}")

    status, alert = page.locator("#status"), page.locator("#alert")
    await expect(status).to_have_attribute("data-state", "auth_failed")
    await expect(alert).to_be_visible()
    await expect(alert).to_contain_text(f"(HTTP {http_status}):")
    await expect(alert).to_contain_text("?token=")
    await expect(page.locator("#retry")).to_be_visible()
    await expect(page.locator("#status-text")).to_have_text(
        "Not allowed for this session" if http_status == 403 else "Not authorized"
    )
    await screenshot(page, tmp_path, f"auth-{case}")

    # No retry loop: the first reconnect would come within 500 ms; wait several times that.
    await page.wait_for_timeout(2_000)
    assert len(log.sockets) == 1, log.sockets
    await expect(status).to_have_attribute("data-state", "auth_failed")
    log.assert_clean(
        allowed=(r"WebSocket connection to '.*' failed", rf"Failed to load resource: .*status of {http_status}")
    )


async def test_valid_token_connects_and_counts(
    page: Page, log: BrowserLog, start_edge: EdgeFactory, http: aiohttp.ClientSession, session_id: str, tmp_path: Path
) -> None:
    secret = "browser-test-secret-0123456789abcdef"
    edge = await start_edge(jwt_secret=secret)
    token = make_token(secret, [session_id])
    await open_demo(page, edge.url, session_id, token=token)
    assert log.sockets and f"token={token}" in log.sockets[0]

    await post_json(
        http, f"{edge.url}/api/counters/context/{session_id}", {"used": 42_000, "total": 100_000}, token=token
    )
    await expect(page.locator("#context-percent")).to_have_text("42%")
    await page.locator("#draft").fill("hello world")
    await expect(page.locator("#draft-count")).to_have_text("2")  # the draft POST carried the Bearer token
    await expect(page.locator("#curl")).to_contain_text("Authorization: Bearer $CTXMETER_TOKEN")
    await expect(page.locator("#curl")).not_to_contain_text(token)
    await screenshot(page, tmp_path, "auth-ok")
    log.assert_clean()


async def test_phone_width_has_no_horizontal_scroll(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, tmp_path: Path
) -> None:
    await page.set_viewport_size(PHONE)
    await set_context(http, edge.url, session_id, 91_500, 128_000)
    await open_demo(page, edge.url, session_id)
    await expect(page.locator("#context-percent")).to_have_text("71.4%")
    await page.locator("#draft").fill("A fairly long draft message " * 20)
    await expect(page.locator("#draft-state")).to_have_attribute("data-pending", "false")

    widths = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    assert widths[0] <= widths[2] and widths[1] <= widths[2], widths
    for selector in ("#context-ring", "#draft", "#curl", "#copy-curl", "#status"):
        box = await page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (selector, box)
    await screenshot(page, tmp_path, "phone")
    log.assert_clean()


async def test_reasoning_and_a_guessed_window_are_shown(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    await open_demo(page, edge.url, session_id)
    await expect(page.locator("#context-percent")).to_have_text("0%")
    await expect(page.locator("#context-window")).to_be_hidden()
    # A usage naming no model: the default window, said to be one; the reasoning OpenAI drops, beside used.
    usage = {
        "prompt_tokens": 30_000,
        "completion_tokens": 4_000,
        "completion_tokens_details": {"reasoning_tokens": 3_000},
    }
    await post_json(http, f"{edge.url}/api/counters/context/{session_id}/usage", {"usage": usage})
    await expect(page.locator("#context-used")).to_have_text("31,000")
    await expect(page.locator("#context-reasoning")).to_have_text(
        "3,000 reasoning tokens in the last response, beside the context."
    )
    await expect(page.locator("#context-window")).to_have_text(
        "Default window of 200,000 tokens: no known model was named."
    )
    await post_json(http, f"{edge.url}/api/counters/context/{session_id}/usage", {"usage": usage, "model": "o3"})
    await expect(page.locator("#context-window")).to_be_hidden()
    await post_json(http, f"{edge.url}/api/counters/context/{session_id}/compact", {"used": 1_000})
    await expect(page.locator("#context-reasoning")).to_be_hidden()
    log.assert_clean()
