"""Compare-and-set under concurrency: N concurrent adds of k tokens always total N*k."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextUsage
from schemas.subjects import ContextOp
from tests.functions.conftest import WatchEvents
from tests.functions.helpers import (
    call,
    collect_replies,
    kv_value,
    next_event,
    ok,
    start_functions_process,
    wait_until,
)

WORKER_STOP_TIMEOUT_S = 20


async def _add_concurrently(nc: NATS, session_id: str, n: int, k: int) -> list[ContextUsage]:
    subject = subjects.context(ContextOp.ADD, session_id)
    replies = await asyncio.gather(*(call(nc, subject, {"tokens": k}) for _ in range(n)))
    return [ok(reply, ContextUsage) for reply in replies]


async def test_concurrent_adds_in_process(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str, watch_events: WatchEvents
) -> None:
    n, k = 300, 7
    events = await watch_events(session_id)
    replies = await _add_concurrently(nc, session_id, n, k)
    final = ok(await call(nc, subjects.context(ContextOp.GET, session_id), {}), ContextUsage)
    assert final.used == n * k
    assert max(reply.used for reply in replies) == n * k
    # Each caller's reply includes its own change: no reply shows less than one add.
    assert min(reply.used for reply in replies) >= k
    assert all(reply.used % k == 0 for reply in replies)
    stored = json.loads(await kv_value(kv, subjects.context_key(session_id)) or b"{}")
    assert stored["used"] == n * k
    # Events arrive in revision order and the last one is the final state.
    seen: list[int] = []
    while not seen or seen[-1] != final.revision:
        seen.append((await next_event(events)).data.revision)
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)


async def test_concurrent_adds_and_frees_on_many_sessions(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    sessions = [f"{session_id}-{index}" for index in range(10)]

    async def work(sid: str) -> None:
        ok(await call(nc, subjects.context(ContextOp.SET, sid), {"used": 10_000, "total": 100_000}), ContextUsage)
        adds = [call(nc, subjects.context(ContextOp.ADD, sid), {"tokens": 5}) for _ in range(40)]
        frees = [call(nc, subjects.context(ContextOp.FREE, sid), {"tokens": 3}) for _ in range(40)]
        await asyncio.gather(*adds, *frees)

    await asyncio.gather(*(work(sid) for sid in sessions))
    for sid in sessions:
        usage = ok(await call(nc, subjects.context(ContextOp.GET, sid), {}), ContextUsage)
        assert usage.used == 10_000 + 40 * 5 - 40 * 3


@pytest.mark.slow
async def test_concurrent_adds_with_two_worker_processes(
    nc: NATS, kv: KeyValue, settings: Settings, session_id: str, tmp_path: Path
) -> None:
    workers = [
        start_functions_process(settings.nats_url, settings.kv_bucket, tmp_path / f"worker{i}.log") for i in range(2)
    ]
    try:

        async def both_answer() -> bool:
            for worker in workers:
                assert worker.poll() is None, (tmp_path / "worker0.log").read_text()[-2000:]
            return len(await collect_replies(nc, subjects.service_ping(), b"", want=2, within=0.5)) == 2

        await wait_until(both_answer, "both worker processes to answer $SRV.PING", within=60)

        n, k = 400, 3
        replies = await _add_concurrently(nc, session_id, n, k)
        final = ok(await call(nc, subjects.context(ContextOp.GET, session_id), {}), ContextUsage)
        assert final.used == n * k
        assert max(reply.used for reply in replies) == n * k

        # Both processes took part: each instance's stats show some of the adds, together all of them.
        stats = await collect_replies(nc, "$SRV.STATS.ctxmeter", b"", want=2, within=5)
        assert len(stats) == 2
        adds = [
            next(e for e in json.loads(reply.data)["endpoints"] if e["name"] == "add")["num_requests"]
            for reply in stats
        ]
        assert all(count > 0 for count in adds), adds
        assert sum(adds) == n
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=WORKER_STOP_TIMEOUT_S) for worker in workers]
    # SIGTERM is a graceful stop.
    assert codes == [0, 0], [(tmp_path / f"worker{i}.log").read_text()[-2000:] for i in range(2)]
