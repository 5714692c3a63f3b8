"""CtxMeterSync: the same calls from synchronous code, shared between threads.

The functions run in-process on the test's event loop, so the blocking calls are made from worker
threads (``asyncio.to_thread``) while that loop keeps serving them.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from ctxmeter_client import ContextUsage, CtxMeterError, CtxMeterSync, RetryPolicy

from functions.runner import FunctionsRuntime

THREADS = 8
ADDS_PER_THREAD = 25
TOKENS = 3


async def test_threads_sharing_one_client_lose_no_update(
    nats_url: str, functions: FunctionsRuntime, session_id: str
) -> None:
    def load() -> tuple[list[ContextUsage], ContextUsage]:
        replies: list[ContextUsage] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        start = threading.Barrier(THREADS)
        with CtxMeterSync(nats_url, retry=RetryPolicy(deadline=30)) as meter:

            def work() -> None:
                start.wait()
                try:
                    for _ in range(ADDS_PER_THREAD):
                        reply = meter.add(session_id, TOKENS)
                        with lock:
                            replies.append(reply)
                except BaseException as error:  # reported by the test, not lost in the thread
                    errors.append(error)

            threads = [threading.Thread(target=work) for _ in range(THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            return replies, meter.get(session_id)

    replies, final = await asyncio.to_thread(load)
    assert len(replies) == THREADS * ADDS_PER_THREAD
    assert final.used == THREADS * ADDS_PER_THREAD * TOKENS
    # Each reply includes its own add (the functions may commit several adds in one write, so replies
    # can share a state), and the last one is the total.
    assert min(reply.used for reply in replies) >= TOKENS
    assert all(reply.used % TOKENS == 0 for reply in replies)
    assert max(reply.used for reply in replies) == final.used


async def test_every_call(nats_url: str, functions: FunctionsRuntime, session_id: str) -> None:
    def calls() -> None:
        meter = CtxMeterSync.connect(nats_url)
        try:
            assert meter.get(session_id).used == 0
            assert meter.set(session_id, 100, total=1_000, reserved=100, compact_at=800).compact_at == 800
            assert meter.add(session_id, 50).used == 150
            assert meter.free(session_id, 30).used == 120
            assert meter.compact(session_id, 60).compactions == 1
            assert meter.report(session_id, {"input_tokens": 70, "output_tokens": 5}, model="gpt-4o").used == 75
            assert [point.op for point in meter.history(session_id, limit=2).points] == ["compact", "usage"]
            assert meter.reset(session_id).used == 0
            assert meter.count("hello world", model="gpt-4o").count == 2
            assert meter.count([{"role": "user", "content": "hi"}], encoding="o200k_base").count == 8
            assert meter.draft(session_id, "hello world", max=4).percentage == 50.0
            assert any(model.name == "gpt-4o" for model in meter.models().models)
            first = meter.add(session_id, 1, idempotency_key="sync-1")
            again = meter.add(session_id, 1, idempotency_key="sync-1")
            assert (first.duplicate, again.duplicate, again.used) == (False, True, 1)
        finally:
            meter.close()
        assert meter.meter.nc.is_closed
        with pytest.raises(CtxMeterError) as raised:
            meter.get(session_id)
        assert raised.value.code == "unavailable"
        meter.close()  # twice is fine

    await asyncio.to_thread(calls)


async def test_errors_reach_the_calling_thread(nats_url: str, functions: FunctionsRuntime) -> None:
    def calls() -> tuple[str, str]:
        with CtxMeterSync(nats_url) as meter:
            with pytest.raises(CtxMeterError) as bad_id:
                meter.get("not a session")
            with pytest.raises(CtxMeterError) as bad_model:
                meter.count("hi", model="no-such-model")
        return bad_id.value.code, bad_model.value.code

    assert await asyncio.to_thread(calls) == ("invalid_session_id", "unknown_model")


def test_connecting_to_nothing_fails_and_leaves_no_thread() -> None:
    before = {thread.ident for thread in threading.enumerate()}
    with pytest.raises(CtxMeterError) as raised:
        CtxMeterSync("nats://127.0.0.1:1", max_reconnect_attempts=1, reconnect_time_wait=0.1)
    assert raised.value.code == "unavailable"
    assert {thread.ident for thread in threading.enumerate()} <= before
