"""The demo page's compaction features in a real Chromium against a real edge, functions and NATS: the
room left before compaction and the reserve, "Estimated", the timeline, what sending the draft would do,
and revisions that go backwards.

Every wait is for a DOM value (Playwright's ``expect``), never a timing assertion.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from playwright.async_api import Page, expect

from schemas import subjects
from schemas.models import ContextUpdateEvent, ContextUsage
from tests.browser.support import (
    NARROW_PHONE,
    BrowserLog,
    change_context,
    open_demo,
    record_texts,
    recorded_texts,
    screenshot,
)
from ws_edge.app import EdgeServer

pytestmark = pytest.mark.browser


async def point_values(page: Page, attribute: str) -> list[str]:
    values: list[str] = await page.locator("#timeline .tl-point").evaluate_all(
        f"(nodes) => nodes.map((node) => node.getAttribute('{attribute}'))"
    )
    return values


async def test_room_left_and_reserve_beside_the_ring(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, tmp_path: Path
) -> None:
    await change_context(http, edge.url, session_id, "", {"used": 40_000, "total": 160_000})
    await open_demo(page, edge.url, session_id)
    policy, ring = page.locator("#context-policy"), page.locator("#context-ring")
    await expect(page.locator("#context-used")).to_have_text("40,000")
    # No policy: the window is the limit, and nothing is shown beside the ring.
    await expect(policy).to_be_hidden()
    await expect(page.locator("#context-threshold")).to_have_attribute("display", "none")

    await change_context(http, edge.url, session_id, "", {"used": 100_000, "total": 160_000, "reserved": 8_000})
    await expect(policy).to_be_visible()
    await expect(page.locator("#context-left")).to_have_text(
        re.compile(r"^\s*52,000\s+tokens left before compaction\s*$")
    )
    await expect(page.locator("#context-left")).to_have_attribute("data-left", "52000")
    await expect(page.locator("#context-reserved")).to_have_text("8,000 tokens reserved for the reply")
    await expect(page.locator("#context-compact-at")).to_have_text("Compacts at 152,000 of 160,000")
    await expect(ring).to_have_attribute("aria-valuetext", re.compile(r"52,000 tokens left before compaction"))
    await expect(page.locator("#context-threshold")).to_have_attribute("display", "inline")
    # The level follows used / compact_at: 100,000 of 152,000 is 65.8 %, normal; the ring shows used / total.
    await expect(ring).to_have_attribute("data-level", "normal")
    await expect(page.locator("#context-percent")).to_have_text("62.5%")

    # A compaction point of its own, no reserve: still a policy.
    await change_context(
        http, edge.url, session_id, "", {"used": 130_000, "total": 160_000, "reserved": 0, "compact_at": 140_000}
    )
    await expect(page.locator("#context-left")).to_have_attribute("data-left", "10000")
    await expect(page.locator("#context-reserved")).to_be_hidden()
    await expect(page.locator("#context-compact-at")).to_have_text("Compacts at 140,000 of 160,000")
    await expect(ring).to_have_attribute("data-level", "critical")  # 130,000 of 140,000: 92.9 %
    await screenshot(page, tmp_path, "policy")

    # Back to no policy.
    await change_context(http, edge.url, session_id, "", {"used": 10_000, "total": 160_000, "compact_at": 160_000})
    await expect(policy).to_be_hidden()
    log.assert_clean()


async def test_estimated_after_add_and_gone_after_a_usage_report(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, tmp_path: Path
) -> None:
    await change_context(http, edge.url, session_id, "", {"used": 5_000, "total": 100_000})
    await open_demo(page, edge.url, session_id)
    estimated, ring = page.locator("#context-estimated"), page.locator("#context-ring")
    await expect(page.locator("#context-used")).to_have_text("5,000")
    await expect(estimated).to_be_hidden()

    await change_context(http, edge.url, session_id, "add", {"tokens": 1_200})
    await expect(page.locator("#context-used")).to_have_text("6,200")
    await expect(estimated).to_be_visible()
    await expect(estimated).to_have_text("Estimated")
    await expect(ring).to_have_attribute("aria-valuetext", re.compile(r", estimated"))
    await screenshot(page, tmp_path, "estimated")

    await change_context(
        http, edge.url, session_id, "usage", {"usage": {"prompt_tokens": 6_900, "completion_tokens": 350}}
    )
    await expect(page.locator("#context-used")).to_have_text("7,250")
    await expect(estimated).to_be_hidden()
    await expect(ring).not_to_have_attribute("aria-valuetext", re.compile(r"estimated"))
    log.assert_clean()


async def test_timeline_has_a_point_per_change_and_follows_a_compaction(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, tmp_path: Path
) -> None:
    timeline = page.locator("#timeline")
    # Changes made before the page opens come from the history.
    before = [
        ("", {"used": 20_000, "total": 200_000, "reserved": 10_000, "compact_at": 150_000}),
        ("add", {"tokens": 40_000}),
        ("usage", {"usage": {"input_tokens": 90_000, "output_tokens": 4_000}}),
    ]
    for op, body in before:
        await change_context(http, edge.url, session_id, op, body)
    await open_demo(page, edge.url, session_id)
    await expect(timeline).to_have_attribute("data-points", "3")
    assert await point_values(page, "data-op") == ["set", "add", "usage"]
    await expect(page.locator("#timeline .tl-compaction")).to_have_count(0)
    await expect(page.locator("#timeline .tl-threshold")).to_have_count(1)
    await expect(page.locator("#timeline-summary")).to_have_text("3 changes · no compaction · now 94,000 of 200,000")

    # Then each change as it comes, live.
    live = [
        ("add", {"tokens": 30_000}, 124_000),
        ("add", {"tokens": 25_000}, 149_000),
        ("compact", {"used": 38_000}, 38_000),
        ("add", {"tokens": 7_000}, 45_000),
    ]
    for count, (op, body, used) in enumerate(live, start=4):
        state = await change_context(http, edge.url, session_id, op, body)
        assert state["used"] == used
        await expect(timeline).to_have_attribute("data-points", str(count))
        await expect(timeline).to_have_attribute("data-last-used", str(used))
        await expect(timeline).to_have_attribute("data-last-revision", str(state["revision"]))
        if op == "compact":
            # A marker appears, and the line drops.
            await expect(page.locator("#timeline .tl-compaction")).to_have_count(1)
            await expect(timeline).to_have_attribute("data-compactions", "1")
            assert [int(value) for value in await point_values(page, "data-used")][-2:] == [149_000, 38_000]
            assert (await point_values(page, "data-op"))[-1] == "compact"
            await expect(page.locator("#context-compactions")).to_have_text(re.compile(r"^1 compaction so far"))
            await screenshot(page, tmp_path, "timeline-compaction")

    assert [int(value) for value in await point_values(page, "data-used")] == [
        20_000,
        60_000,
        94_000,
        124_000,
        149_000,
        38_000,
        45_000,
    ]
    marker = page.locator("#timeline .tl-compaction")
    compaction_revision = await marker.get_attribute("data-revision")
    assert compaction_revision == (await point_values(page, "data-revision"))[5]
    # Accessible: the chart says what it shows, and the table lists the changes, newest first.
    chart = page.locator("#timeline svg")
    await expect(chart).to_have_attribute("role", "img")
    await expect(chart).to_have_attribute(
        "aria-label", re.compile(r"last 7 changes.*now 45,000 of 200,000.*1 compaction")
    )
    await page.locator(".timeline-details summary").click()
    rows = page.locator("#timeline-table tr")
    await expect(rows).to_have_count(7)
    await expect(rows.nth(0)).to_contain_text("45,000")
    await expect(rows.nth(1)).to_contain_text("38,000")
    await screenshot(page, tmp_path, "timeline")
    log.assert_clean()


async def test_draft_tells_what_sending_it_would_do(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, tmp_path: Path
) -> None:
    await change_context(
        http, edge.url, session_id, "", {"used": 151_000, "total": 200_000, "reserved": 8_000, "compact_at": 160_000}
    )
    await open_demo(page, edge.url, session_id)
    after = page.locator("#draft-after")
    await expect(page.locator("#context-used")).to_have_text("151,000")
    await expect(after).to_be_hidden()

    await page.locator("#draft").fill("hello world")  # two tokens with gpt-4o
    await expect(page.locator("#draft-count")).to_have_text("2")
    await expect(after).to_have_text("After sending: 151,002 of 160,000 before compaction.")
    await expect(after).to_have_attribute("data-level", "critical")  # 94.4 % of the compaction point

    # The context moves: the line follows it.
    await change_context(http, edge.url, session_id, "compact", {"used": 40_000})
    await expect(after).to_have_text("After sending: 40,002 of 160,000 before compaction.")
    await expect(after).to_have_attribute("data-level", "normal")
    await change_context(http, edge.url, session_id, "add", {"tokens": 119_999})
    await expect(after).to_have_text(
        "After sending: 160,001, 1 over the compaction point (160,000): the agent compacts first."
    )
    await screenshot(page, tmp_path, "draft-after")

    # Without a policy the window is the limit.
    await change_context(http, edge.url, session_id, "", {"used": 1_000, "total": 200_000, "compact_at": 192_000})
    await change_context(http, edge.url, session_id, "", {"used": 1_000, "total": 200_000, "reserved": 0})
    await expect(after).to_have_text("After sending: 1,002 of 192,000 before compaction.")
    await change_context(http, edge.url, session_id, "", {"used": 1_000, "total": 200_000, "compact_at": 200_000})
    await expect(after).to_have_text("After sending: 1,002 of the 200,000-token window.")
    await page.locator("#draft").fill("")
    await expect(after).to_be_hidden()
    log.assert_clean()


def forged_frame(session_id: str, current: dict[str, Any], revision: int) -> bytes:
    """A well-formed event (the edge relays only those) claiming a revision the bucket never had."""
    data = ContextUsage.model_validate({**current, "used": 99_999, "left": 1, "percentage": 99.99})
    frame = ContextUpdateEvent(session_id=session_id, data=data, timestamp=time.time()).model_dump(mode="json")
    frame["data"]["revision"] = revision
    return json.dumps(frame).encode()


@pytest.mark.parametrize("forged_revision", [2**62, 2**50])
async def test_a_forged_revision_does_not_lock_the_page(
    page: Page,
    log: BrowserLog,
    edge: EdgeServer,
    http: aiohttp.ClientSession,
    nc: NATS,
    session_id: str,
    tmp_path: Path,
    forged_revision: int,
) -> None:
    """A forged event with a huge revision, published straight on the events subject, then a real change:
    the page ends on the real value (the edge re-reads the bucket, the client asks the edge)."""
    current = await change_context(http, edge.url, session_id, "", {"used": 50_000, "total": 100_000})
    await open_demo(page, edge.url, session_id)
    await expect(page.locator("#context-used")).to_have_text("50,000")
    await expect(page.locator("#timeline")).to_have_attribute("data-points", "1")
    await record_texts(page, "#context-used")

    await nc.publish(subjects.events(session_id), forged_frame(session_id, current, forged_revision))
    await nc.flush()
    if forged_revision < 2**53:
        # An exact revision: nothing can tell it is forged until a real change comes.
        await expect(page.locator("#context-used")).to_have_text("99,999")
    real = await change_context(http, edge.url, session_id, "", {"used": 60_000, "total": 100_000})
    await expect(page.locator("#context-used")).to_have_text("60,000")
    await expect(page.locator("#context-ring")).to_have_attribute("data-revision", str(real["revision"]))
    held = await page.evaluate("() => window.ctxmeterDemo.client.context.revision")
    assert held == real["revision"]
    # The timeline is the session's: the forged point is gone once the real one comes.
    await expect(page.locator("#timeline")).to_have_attribute("data-last-revision", str(real["revision"]))
    await expect(page.locator("#timeline")).to_have_attribute("data-points", "2")
    # And later changes keep coming.
    later = await change_context(http, edge.url, session_id, "add", {"tokens": 1_000})
    await expect(page.locator("#context-used")).to_have_text("61,000")
    await expect(page.locator("#context-ring")).to_have_attribute("data-revision", str(later["revision"]))
    shown = await recorded_texts(page, "#context-used")
    forged_shown = ["99,999"] if forged_revision < 2**53 else []
    assert shown == ["50,000", *forged_shown, "60,000", "61,000"]
    await screenshot(page, tmp_path, "forged-revision")
    log.assert_clean()


async def test_new_parts_fit_a_360_px_phone(
    page: Page, log: BrowserLog, edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, tmp_path: Path
) -> None:
    await page.set_viewport_size(NARROW_PHONE)
    await change_context(
        http, edge.url, session_id, "", {"used": 90_000, "total": 200_000, "reserved": 16_000, "compact_at": 160_000}
    )
    await change_context(http, edge.url, session_id, "compact", {"used": 30_000})
    await change_context(http, edge.url, session_id, "add", {"tokens": 12_345})
    await open_demo(page, edge.url, session_id)
    await expect(page.locator("#timeline")).to_have_attribute("data-points", "3")
    await page.locator("#draft").fill("A fairly long draft message " * 20)
    await expect(page.locator("#draft-after")).to_be_visible()
    await page.locator(".timeline-details summary").click()

    widths = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    assert widths[0] <= widths[2] and widths[1] <= widths[2], widths
    for selector in ("#context-policy", "#context-estimated", "#timeline svg", "#draft-after", "#model", "#draft"):
        box = await page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= NARROW_PHONE["width"], (selector, box)
    await screenshot(page, tmp_path, "phone-360")
    log.assert_clean()
