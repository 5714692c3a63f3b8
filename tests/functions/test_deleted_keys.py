"""A session cleared by hand (``nats kv del`` or a purge) works again at once, from an empty state.

A delete or purge leaves a marker whose sequence is the key's last one; a compare-and-set that expects
revision 0 for "no value" is refused forever. These go through the real server's delete and purge.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from ctxmeter.bucket import read_entry
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextUsage
from schemas.subjects import ContextOp
from tests.functions.conftest import WatchEvents
from tests.functions.helpers import call, next_event, ok

Clear = Callable[[KeyValue, str], Awaitable[object]]

CLEARS: dict[str, Clear] = {
    "delete": lambda kv, key: kv.delete(key),
    "purge": lambda kv, key: kv.purge(key),
}


@pytest.mark.parametrize("how", list(CLEARS))
async def test_a_cleared_session_takes_changes_again_at_once(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str, how: str, watch_events: WatchEvents
) -> None:
    key = subjects.context_key(session_id)
    before = ok(await call(nc, subjects.context(ContextOp.SET, session_id), {"used": 500, "total": 1000}), ContextUsage)
    await CLEARS[how](kv, key)
    marker = await read_entry(kv, key)
    assert marker.value is None
    assert marker.revision > before.revision

    # Reads see the zero state at the marker's revision: newer than what was cleared.
    cleared = ok(await call(nc, subjects.context(ContextOp.GET, session_id)), ContextUsage)
    assert (cleared.used, cleared.revision) == (0, marker.revision)

    events = await watch_events(session_id)
    # The process's cached revision is stale now; the change must still land on the first try round.
    added = ok(await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": 7}), ContextUsage)
    assert added.used == 7
    assert added.revision > marker.revision
    assert (await next_event(events)).data == added
    assert (await read_entry(kv, key)).revision == added.revision


@pytest.mark.parametrize("how", list(CLEARS))
async def test_a_cleared_session_works_for_a_process_that_never_saw_it(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str, how: str
) -> None:
    """No cached revision at all: the first read meets the marker."""
    key = subjects.context_key(session_id)
    await kv.put(key, b'{"used": 9, "total": 100, "updated_at": "2025-01-01T00:00:00.000Z"}')
    await CLEARS[how](kv, key)
    reset = ok(await call(nc, subjects.context(ContextOp.RESET, session_id)), ContextUsage)
    assert reset.used == 0
    for tokens in (1, 2, 3):
        await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": tokens})
    assert ok(await call(nc, subjects.context(ContextOp.GET, session_id)), ContextUsage).used == 6


async def test_read_entry_reports_absent_keys_at_revision_zero(kv: KeyValue, session_id: str) -> None:
    entry = await read_entry(kv, subjects.context_key(session_id))
    assert (entry.value, entry.revision) == (None, 0)
