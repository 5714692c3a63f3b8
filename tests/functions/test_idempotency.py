"""Idempotent changes: a key is applied at most once per session, across retries and processes."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from ctxmeter.limits import IDEMPOTENCY_KEYS_KEPT, IDEMPOTENCY_KEYS_MAX
from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.idempotency import DUPLICATE_HEADER, KEY_HEADER
from schemas.models import ContextUsage, TokenUsage
from schemas.subjects import ContextOp
from tests.functions.conftest import WatchEvents
from tests.functions.helpers import (
    REQUEST_TIMEOUT_S,
    body,
    call,
    collect_replies,
    error,
    kv_value,
    ok,
    start_functions_process,
    wait_until,
)
from tests.functions.test_concurrency import WORKER_STOP_TIMEOUT_S


async def keyed(nc: NATS, op: ContextOp, sid: str, payload: dict[str, Any], key: str) -> Msg:
    return await nc.request(
        subjects.context(op, sid), body(payload), timeout=REQUEST_TIMEOUT_S, headers={KEY_HEADER: key}
    )


def duplicate(msg: Msg) -> bool:
    return (msg.headers or {}).get(DUPLICATE_HEADER) == "true"


async def no_event(events: Subscription) -> None:
    with pytest.raises(TimeoutError):
        await events.next_msg(timeout=0.3)


async def test_the_same_key_three_times_applies_once(
    nc: NATS, functions: FunctionsRuntime, session_id: str, watch_events: WatchEvents
) -> None:
    events = await watch_events(session_id)
    first = await keyed(nc, ContextOp.ADD, session_id, {"tokens": 100}, "turn-1")
    assert not duplicate(first)
    assert ok(first, ContextUsage).used == 100
    await events.next_msg(timeout=REQUEST_TIMEOUT_S)
    for _ in range(2):
        again = await keyed(nc, ContextOp.ADD, session_id, {"tokens": 100}, "turn-1")
        assert duplicate(again)
        assert ok(again, ContextUsage) == ok(first, ContextUsage)  # the current state, unchanged
    await no_event(events)
    # A new key applies; the old one still does not.
    assert ok(await keyed(nc, ContextOp.ADD, session_id, {"tokens": 1}, "turn-2"), ContextUsage).used == 101
    again = await keyed(nc, ContextOp.ADD, session_id, {"tokens": 100}, "turn-1")
    assert duplicate(again) and ok(again, ContextUsage).used == 101


@pytest.mark.parametrize(
    ("op", "payload"),
    [
        (ContextOp.SET, {"used": 5}),
        (ContextOp.FREE, {"tokens": 5}),
        (ContextOp.USAGE, {"usage": {"input_tokens": 5}}),
        (ContextOp.RESET, {}),
        (ContextOp.COMPACT, {"used": 5}),
    ],
)
async def test_every_change_takes_a_key(
    nc: NATS, functions: FunctionsRuntime, session_id: str, op: ContextOp, payload: dict[str, Any]
) -> None:
    await call(nc, subjects.context(ContextOp.SET, session_id), {"used": 50})
    first = ok(await keyed(nc, op, session_id, payload, "k"), ContextUsage)
    repeat = await keyed(nc, op, session_id, payload, "k")
    assert duplicate(repeat)
    assert ok(repeat, ContextUsage).revision == first.revision


async def test_the_same_key_racing_is_applied_once(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    replies = await asyncio.gather(*(keyed(nc, ContextOp.ADD, session_id, {"tokens": 7}, "race") for _ in range(20)))
    assert sum(not duplicate(reply) for reply in replies) == 1
    assert ok(await call(nc, subjects.context(ContextOp.GET, session_id)), ContextUsage).used == 7


async def test_keys_are_per_session(nc: NATS, functions: FunctionsRuntime) -> None:
    one, two = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    assert not duplicate(await keyed(nc, ContextOp.ADD, one, {"tokens": 1}, "same"))
    assert not duplicate(await keyed(nc, ContextOp.ADD, two, {"tokens": 1}, "same"))


async def test_keys_expire_from_the_window_oldest_first(
    nc: NATS, kv: KeyValue, settings: Settings, session_id: str
) -> None:
    """With no time window, exactly the newest 64 keys are remembered."""
    runtime = FunctionsRuntime(settings.model_copy(update={"idempotency_window": 0}))
    await runtime.start()
    try:
        for index in range(IDEMPOTENCY_KEYS_KEPT + 1):
            assert not duplicate(await keyed(nc, ContextOp.ADD, session_id, {"tokens": 1}, f"key-{index}"))
        # key-0 has left the window (64 keys came after it): it applies again.
        assert not duplicate(await keyed(nc, ContextOp.ADD, session_id, {"tokens": 1}, "key-0"))
        # key-2 .. key-64 are still there (key-1 went when key-0 came back).
        for index in (2, IDEMPOTENCY_KEYS_KEPT // 2, IDEMPOTENCY_KEYS_KEPT):
            assert duplicate(await keyed(nc, ContextOp.ADD, session_id, {"tokens": 1}, f"key-{index}"))
        assert not duplicate(await keyed(nc, ContextOp.ADD, session_id, {"tokens": 1}, "key-1"))
        assert (
            ok(await call(nc, subjects.context(ContextOp.GET, session_id)), ContextUsage).used
            == IDEMPOTENCY_KEYS_KEPT + 3
        )
    finally:
        await runtime.stop()


async def test_every_key_of_the_time_window_is_remembered(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    """A session hammered by keyed changes still recognises every retry of the last seconds."""
    keys = [f"burst-{index}" for index in range(IDEMPOTENCY_KEYS_KEPT * 3)]
    await asyncio.gather(*(keyed(nc, ContextOp.ADD, session_id, {"tokens": 1}, key) for key in keys))
    retries = await asyncio.gather(*(keyed(nc, ContextOp.ADD, session_id, {"tokens": 1}, key) for key in keys))
    assert all(duplicate(reply) for reply in retries)
    assert ok(await call(nc, subjects.context(ContextOp.GET, session_id)), ContextUsage).used == len(keys)


async def test_a_window_full_of_keys_refuses_more_rather_than_forget_one(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str
) -> None:
    """More keyed changes in a window than it can hold: the ones beyond are refused (conflict, retried by
    the clients), and a retry of the first, a second later, is still recognised (it used to be pushed
    out by the 2,049th key and applied twice)."""
    extra = 40
    keys = [f"flood-{index}" for index in range(IDEMPOTENCY_KEYS_MAX + extra)]
    semaphore = asyncio.Semaphore(64)

    async def add(key: str) -> Msg:
        async with semaphore:
            return await keyed(nc, ContextOp.ADD, session_id, {"tokens": 1}, key)

    replies = await asyncio.gather(*(add(key) for key in keys))
    refused = [reply for reply in replies if (reply.headers or {}).get("Nats-Service-Error-Code")]
    assert len(refused) == extra
    assert all("keyed changes" in error(reply, "conflict").error.message for reply in refused)
    assert ok(await call(nc, subjects.context(ContextOp.GET, session_id)), ContextUsage).used == IDEMPOTENCY_KEYS_MAX
    first = await keyed(nc, ContextOp.ADD, session_id, {"tokens": 1}, keys[0])
    assert duplicate(first) and ok(first, ContextUsage).used == IDEMPOTENCY_KEYS_MAX
    # An unkeyed change is never refused for keys.
    assert ok(await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": 1}), ContextUsage).used == (
        IDEMPOTENCY_KEYS_MAX + 1
    )
    full = functions.metrics.registry.get_sample_value("ctxmeter_functions_keys_window_full_total", {})
    assert full == extra


async def test_the_stored_window_is_bounded_whatever_the_keys_hold(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime
) -> None:
    sizes = []
    for length in (3, 128):
        session_id = f"window-{length}"
        for index in range(IDEMPOTENCY_KEYS_KEPT * 2):
            await keyed(nc, ContextOp.ADD, session_id, {"tokens": 1}, f"{index:03d}".ljust(length, "k"))
        stored = await kv_value(kv, subjects.context_key(session_id))
        assert stored is not None
        sizes.append(len(stored))
    # Digests of a fixed size: 128-character keys take no more room than 3-character ones.
    assert abs(sizes[0] - sizes[1]) < 50


# A lone space arrives empty (NATS trims header values): empty is not a key.
@pytest.mark.parametrize("key", ["k" * 129, "tab\there", "naïve", " "])
async def test_bad_keys_are_refused_and_change_nothing(
    nc: NATS, kv: KeyValue, functions: FunctionsRuntime, session_id: str, key: str
) -> None:
    reply = await keyed(nc, ContextOp.ADD, session_id, {"tokens": 5}, key)
    assert "idempotency key" in error(reply, "invalid_request").error.message
    assert await kv_value(kv, subjects.context_key(session_id)) is None


async def test_a_plain_publish_with_a_key_is_applied_once(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    for _ in range(3):
        await nc.publish(subjects.context(ContextOp.ADD, session_id), b'{"tokens": 9}', headers={KEY_HEADER: "p"})
    await nc.flush()

    async def settled() -> bool:
        return ok(await call(nc, subjects.context(ContextOp.GET, session_id)), ContextUsage).used == 9

    await wait_until(settled, "the published add")
    await asyncio.sleep(0.2)
    assert await settled()


@pytest.mark.slow
async def test_the_same_keys_racing_through_two_processes_apply_once(
    nc: NATS, kv: KeyValue, settings: Settings, session_id: str, tmp_path: Path
) -> None:
    workers = [
        start_functions_process(settings.nats_url, settings.kv_bucket, tmp_path / f"worker{i}.log") for i in range(2)
    ]
    try:

        async def both_answer() -> bool:
            return len(await collect_replies(nc, subjects.service_ping(), b"", want=2, within=0.5)) == 2

        await wait_until(both_answer, "both worker processes to answer $SRV.PING", within=60)
        keys = [f"change-{index}" for index in range(50)]
        # Every key sent three times at once: the queue group spreads the copies over both processes.
        replies = await asyncio.gather(
            *(keyed(nc, ContextOp.ADD, session_id, {"tokens": 2}, key) for key in keys for _ in range(3))
        )
        assert sum(not duplicate(reply) for reply in replies) == len(keys)
        final = ok(await call(nc, subjects.context(ContextOp.GET, session_id)), ContextUsage)
        assert final.used == 2 * len(keys)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=WORKER_STOP_TIMEOUT_S)


async def test_a_retried_draft_never_overwrites_a_newer_one(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    subject = subjects.tokens_draft(session_id)

    async def draft(text: str, key: str) -> Msg:
        return await nc.request(subject, body({"text": text}), timeout=REQUEST_TIMEOUT_S, headers={KEY_HEADER: key})

    first = await draft("hello", "d-1")
    newer = await draft("hello there friend", "d-2")
    # The first draft's retry arrives late: it is answered with the current draft, not written.
    retried = await draft("hello", "d-1")
    assert duplicate(retried) and not duplicate(first) and not duplicate(newer)
    assert ok(retried, TokenUsage) == ok(newer, TokenUsage)
