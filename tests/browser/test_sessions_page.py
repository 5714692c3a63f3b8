"""The sessions overview page (GET /sessions) in a real Chromium against a real edge, functions and NATS:
a few hundred sessions in order of room left, reordered live; auth; and axe-core on the edge's pages.

Every wait is for a DOM value (Playwright's ``expect``), never a timing assertion.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Page, expect

from tests.browser.site import Site
from tests.browser.support import (
    JWT_SECRET,
    BrowserLog,
    EdgeFactory,
    change_context,
    make_token,
    open_demo,
    screenshot,
)
from tests.browser.test_elements import axe_violations

pytestmark = pytest.mark.browser

SESSIONS = 300
TOTAL = 1_000_000


async def make_sessions(
    http: aiohttp.ClientSession, edge_url: str, prefix: str, count: int, token: str | None = None
) -> list[str]:
    """``count`` sessions; session n has n * 1,000 tokens used of 1,000,000, so the last is nearest."""
    limit = asyncio.Semaphore(16)
    ids = [f"{prefix}-{n:04}" for n in range(count)]

    async def one(n: int) -> None:
        async with limit:
            await change_context(http, edge_url, ids[n], "", {"used": n * 1_000, "total": TOTAL}, token)

    await asyncio.gather(*(one(n) for n in range(count)))
    return ids


async def shown_rows(page: Page) -> list[tuple[str, int]]:
    rows: list[list[str]] = await page.locator("#sessions-body tr").evaluate_all(
        "(rows) => rows.map((row) => [row.dataset.sessionId, row.dataset.left])"
    )
    return [(sid, int(left)) for sid, left in rows]


async def test_overview_lists_hundreds_of_sessions_in_order_and_reorders_live(
    page: Page, log: BrowserLog, start_edge: EdgeFactory, http: aiohttp.ClientSession, session_id: str, tmp_path: Path
) -> None:
    # Hundreds of sessions made over HTTP from one address: beyond the default per-IP write rate.
    edge = await start_edge(jwt_secret=JWT_SECRET, ip_write_rate=10_000, ip_write_burst=10_000)
    everything = make_token(JWT_SECRET, ["*"])
    ids = await make_sessions(http, edge.url, session_id, SESSIONS, everything)

    await page.goto(f"{edge.url}/sessions?token={everything}")
    await expect(page.locator("#status")).to_have_attribute("data-state", "open")
    await expect(page.locator("#summary")).to_have_attribute("data-total", str(SESSIONS))
    await expect(page.locator("#sessions")).to_have_attribute("data-rows", "200")
    rows = await shown_rows(page)
    assert [sid for sid, _ in rows] == ids[::-1][:200]  # the fullest first
    assert [left for _, left in rows] == sorted(left for _, left in rows)
    await expect(page.locator("#summary")).to_have_text(re.compile(r"300 live sessions · the 200 nearest"))
    await screenshot(page, tmp_path, "overview")

    # A session beyond the 200 shown becomes the nearest to compaction: it moves to the top.
    await change_context(http, edge.url, ids[0], "", {"used": TOTAL - 10, "total": TOTAL}, everything)
    first = page.locator("#sessions-body tr").first
    await expect(first).to_have_attribute("data-session-id", ids[0])
    await expect(first).to_have_attribute("data-left", "10")
    await expect(first).to_have_attribute("data-level", "critical")

    # The nearest is compacted: it drops out of the shown rows, and the page still shows 200, in order.
    await change_context(http, edge.url, ids[0], "compact", {"used": 0}, everything)
    await expect(first).to_have_attribute("data-session-id", ids[-1])
    await expect(page.locator(f'#sessions-body tr[data-session-id="{ids[0]}"]')).to_have_count(0)
    await expect(page.locator("#sessions")).to_have_attribute("data-rows", "200")
    rows = await shown_rows(page)
    assert [left for _, left in rows] == sorted(left for _, left in rows)

    # A row links to the session's own page, with the token.
    href = await first.locator("a").get_attribute("href")
    assert href == f"/?session={ids[-1]}&token={everything}"
    log.assert_clean()


async def test_overview_refuses_a_token_for_some_sessions(
    page: Page, log: BrowserLog, start_edge: EdgeFactory, session_id: str
) -> None:
    edge = await start_edge(jwt_secret=JWT_SECRET)
    await page.goto(f"{edge.url}/sessions?token={make_token(JWT_SECRET, [session_id])}")
    await expect(page.locator("#status")).to_have_attribute("data-state", "auth_failed")
    await expect(page.locator("#alert")).to_be_visible()
    await expect(page.locator("#alert-text")).to_have_text(re.compile(r"HTTP 403"))
    log.assert_clean(allowed=(r"WebSocket connection to '.*' failed", r"status of 403"))


async def test_edge_pages_have_no_accessibility_violations(
    page: Page, log: BrowserLog, start_edge: EdgeFactory, site: Site, http: aiohttp.ClientSession, session_id: str
) -> None:
    edge = await start_edge()
    await make_sessions(http, edge.url, session_id, 5)
    await change_context(
        http, edge.url, session_id, "", {"used": 150_000, "total": 200_000, "reserved": 16_000, "compact_at": 160_000}
    )
    await change_context(http, edge.url, session_id, "compact", {"used": 40_000})
    await change_context(http, edge.url, session_id, "add", {"tokens": 60_000})
    await open_demo(page, edge.url, session_id)
    await page.locator("#draft").fill("Summarise the review in five bullet points.")
    await expect(page.locator("#draft-meter #draft-state")).to_have_attribute("data-pending", "false")
    await expect(page.locator("#timeline")).to_have_attribute("data-points", re.compile(r"[1-9]"))
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme, reduced_motion="reduce")
        assert await axe_violations(page, site) == [], f"/ in {scheme}"

    await page.goto(f"{edge.url}/sessions")
    await expect(page.locator("#sessions")).to_have_attribute("data-rows", "6")
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme, reduced_motion="reduce")
        assert await axe_violations(page, site) == [], f"/sessions in {scheme}"
    log.assert_clean()
