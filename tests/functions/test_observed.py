"""Observed times: a change older than the newest one applied to its session changes nothing (exporters retry
and reorder, so the order changes arrive in is not the order they happened in)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.idempotency import DUPLICATE_HEADER, KEY_HEADER, OBSERVED_HEADER, STALE_HEADER
from schemas.models import ContextUsage, ErrorCode
from schemas.subjects import ContextOp
from tests.functions.conftest import WatchEvents
from tests.functions.helpers import REQUEST_TIMEOUT_S, body, error, ok
from tests.functions.test_idempotency import no_event


async def observed(
    nc: NATS, op: ContextOp, sid: str, payload: dict[str, Any], at: int | str, key: str | None = None
) -> Msg:
    headers = {OBSERVED_HEADER: str(at)}
    if key is not None:
        headers[KEY_HEADER] = key
    return await nc.request(subjects.context(op, sid), body(payload), timeout=REQUEST_TIMEOUT_S, headers=headers)


def stale(msg: Msg) -> bool:
    return (msg.headers or {}).get(STALE_HEADER) == "true"


async def test_an_older_change_is_a_no_op_answered_with_the_current_state(
    nc: NATS, functions: FunctionsRuntime, session_id: str, watch_events: WatchEvents
) -> None:
    events = await watch_events(session_id)
    newer = await observed(nc, ContextOp.SET, session_id, {"used": 900}, at=2_000)
    assert ok(newer, ContextUsage).used == 900 and not stale(newer)
    await events.next_msg(timeout=REQUEST_TIMEOUT_S)
    older = await observed(nc, ContextOp.USAGE, session_id, {"usage": {"input_tokens": 10}}, at=1_999)
    assert stale(older) and DUPLICATE_HEADER not in (older.headers or {})
    assert ok(older, ContextUsage) == ok(newer, ContextUsage)
    await no_event(events)
    # The same time applies (two records of one moment), and so does a newer one.
    same = await observed(nc, ContextOp.COMPACT, session_id, {"used": 300}, at=2_000)
    assert ok(same, ContextUsage).used == 300 and not stale(same)
    later = await observed(nc, ContextOp.USAGE, session_id, {"usage": {"input_tokens": 310}}, at=2_001)
    assert ok(later, ContextUsage).used == 310


async def test_changes_without_a_time_keep_the_newest_time_seen(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    await observed(nc, ContextOp.SET, session_id, {"used": 5}, at=5_000)
    plain = await nc.request(
        subjects.context(ContextOp.ADD, session_id), body({"tokens": 1}), timeout=REQUEST_TIMEOUT_S
    )
    assert ok(plain, ContextUsage).used == 6
    assert stale(await observed(nc, ContextOp.SET, session_id, {"used": 1}, at=4_999))


async def test_a_stale_change_does_not_use_up_its_key(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    await observed(nc, ContextOp.SET, session_id, {"used": 5}, at=5_000)
    assert stale(await observed(nc, ContextOp.SET, session_id, {"used": 1}, at=10, key="k-1"))
    # Stale again on a replay, never a duplicate of something that was not applied.
    assert stale(await observed(nc, ContextOp.SET, session_id, {"used": 1}, at=10, key="k-1"))


async def test_within_one_batch_an_older_change_is_stale(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    """Changes to one session committed together (group commit) are held to the rule one by one."""
    await observed(nc, ContextOp.SET, session_id, {"used": 1}, at=1)
    replies = await asyncio.gather(
        *(observed(nc, ContextOp.SET, session_id, {"used": at}, at=at) for at in (50, 40, 60, 10, 55))
    )
    applied = [reply for reply in replies if not stale(reply)]
    final = ok(
        await nc.request(subjects.context(ContextOp.GET, session_id), b"{}", timeout=REQUEST_TIMEOUT_S), ContextUsage
    )
    assert final.used == 60
    assert all(ok(reply, ContextUsage).used <= 60 for reply in applied)


@pytest.mark.parametrize("bad", ["", "-1", "1.5", "12345678901234567890", "١٢"])
async def test_an_invalid_observed_time_is_invalid_request(
    nc: NATS, functions: FunctionsRuntime, session_id: str, bad: str
) -> None:
    reply = await nc.request(
        subjects.context(ContextOp.SET, session_id),
        body({"used": 5}),
        timeout=REQUEST_TIMEOUT_S,
        headers={OBSERVED_HEADER: bad},
    )
    error(reply, ErrorCode.INVALID_REQUEST)
    current = await nc.request(subjects.context(ContextOp.GET, session_id), b"{}", timeout=REQUEST_TIMEOUT_S)
    assert ok(current, ContextUsage).revision == 0
