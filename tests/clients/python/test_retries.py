"""Errors and retries: bad input fails at once, transient failures are retried with the same idempotency
key until the deadline. Where the functions cannot be made to fail on demand, a subscriber of the test
answers the subject in their place, exactly as they would (error body and NATS micro headers)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from ctxmeter_client import CtxMeter, CtxMeterError, ErrorCode, RetryPolicy
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from tests.clients.python.helpers import UUID4, Responder, context_usage, reply_error, reply_json

BAD_INPUT = ["invalid_json", "invalid_request", "invalid_session_id", "unknown_model", "payload_too_large"]


# -- bad input: raised at once, never retried ----------------------------------------------


@pytest.mark.parametrize("code", BAD_INPUT)
async def test_bad_input_errors_are_raised_at_once(nc: NATS, session_id: str, code: str) -> None:
    async def answer(msg: Msg, _: int) -> None:
        await reply_error(nc, msg, code, f"stand-in {code}")

    responder = await Responder(nc, answer).start(f"ctxmeter.context.add.{session_id}")
    try:
        with pytest.raises(CtxMeterError) as raised:
            await CtxMeter(nc, retry=RetryPolicy(deadline=5)).add(session_id, 1)
    finally:
        await responder.stop()
    assert (raised.value.code, raised.value.message, raised.value.attempts) == (code, f"stand-in {code}", 1)
    assert raised.value.retryable is False
    assert len(responder.requests) == 1


async def test_bad_input_from_the_real_functions(meter: CtxMeter, functions: FunctionsRuntime, session_id: str) -> None:
    started = time.monotonic()
    with pytest.raises(CtxMeterError) as negative:
        await meter.set(session_id, -1)
    with pytest.raises(CtxMeterError) as window:
        await meter.set(session_id, 10, total=0)
    with pytest.raises(CtxMeterError) as model:
        await meter.count("hi", model="no-such-model")
    with pytest.raises(CtxMeterError) as limit:
        await meter.history(session_id, limit=0)
    with pytest.raises(CtxMeterError) as encoding:
        await meter.count("hi", encoding="no-such-encoding")
    assert [e.value.code for e in (negative, window, model, limit, encoding)] == [
        "invalid_request",
        "invalid_request",
        "unknown_model",
        "invalid_request",
        "invalid_request",
    ]
    assert all(e.value.attempts == 1 and e.value.message for e in (negative, window, model, limit, encoding))
    # None of them waited for a retry.
    assert time.monotonic() - started < 3
    # Bad input changed nothing.
    assert (await meter.get(session_id)).revision == 0


async def test_a_text_over_the_server_limit_is_payload_too_large(
    nc: NATS, settings: Settings, kv: object, session_id: str
) -> None:
    runtime = FunctionsRuntime(settings.model_copy(update={"max_text_bytes": 1_000}))
    await runtime.start()
    try:
        with pytest.raises(CtxMeterError) as raised:
            await CtxMeter(nc).draft(session_id, "x" * 1_001)
    finally:
        await runtime.stop()
    assert (raised.value.code, raised.value.attempts) == ("payload_too_large", 1)


async def test_a_request_over_the_nats_limit_is_refused_before_sending(nc: NATS) -> None:
    with pytest.raises(CtxMeterError) as raised:
        await CtxMeter(nc).count("x" * (nc.max_payload + 1))
    assert (raised.value.code, raised.value.attempts) == ("payload_too_large", 0)


@pytest.mark.parametrize("bad", ["", "a.b", "*", ">", "a b", "x" * 129, "ü", "a\r\nb", None, 5])
async def test_invalid_session_ids_never_reach_nats(nc: NATS, bad: object) -> None:
    seen: list[Msg] = []

    async def record(msg: Msg) -> None:
        seen.append(msg)

    sub = await nc.subscribe("ctxmeter.>", cb=record)
    await nc.flush()
    meter = CtxMeter(nc)
    calls = [
        meter.get(bad),  # type: ignore[arg-type]
        meter.set(bad, 1),  # type: ignore[arg-type]
        meter.add(bad, 1),  # type: ignore[arg-type]
        meter.free(bad, 1),  # type: ignore[arg-type]
        meter.reset(bad),  # type: ignore[arg-type]
        meter.compact(bad, 1),  # type: ignore[arg-type]
        meter.report(bad, {"prompt_tokens": 1}),  # type: ignore[arg-type]
        meter.draft(bad, "hi"),  # type: ignore[arg-type]
        meter.history(bad),  # type: ignore[arg-type]
    ]
    try:
        for call in calls:
            with pytest.raises(CtxMeterError) as raised:
                await call
            assert (raised.value.code, raised.value.attempts) == ("invalid_session_id", 0)
        await nc.flush()
    finally:
        await sub.unsubscribe()
    assert seen == []


@pytest.mark.parametrize("key", ["", "a b", "k\r\nX-Injected: 1", "x" * 129, "ü"])
async def test_invalid_idempotency_keys_are_refused(nc: NATS, session_id: str, key: str) -> None:
    with pytest.raises(CtxMeterError) as raised:
        await CtxMeter(nc).add(session_id, 1, idempotency_key=key)
    assert (raised.value.code, raised.value.attempts) == ("invalid_request", 0)


# -- transient failures: retried with the same key ------------------------------------------


async def test_conflict_is_retried_with_the_same_key(nc: NATS, session_id: str) -> None:
    async def answer(msg: Msg, attempt: int) -> None:
        if attempt <= 2:
            await reply_error(nc, msg, "conflict", "too contended")
        else:
            await reply_json(nc, msg, context_usage(session_id, used=5))

    responder = await Responder(nc, answer).start(f"ctxmeter.context.add.{session_id}")
    try:
        usage = await CtxMeter(nc, retry=RetryPolicy(deadline=5)).add(session_id, 5)
    finally:
        await responder.stop()
    assert usage.used == 5
    keys = responder.keys()
    assert len(keys) == 3
    assert keys[0] is not None and UUID4.fullmatch(keys[0])
    assert keys == [keys[0]] * 3
    assert [json.loads(msg.data) for msg in responder.requests] == [{"tokens": 5}] * 3


async def test_internal_errors_and_lost_replies_are_retried_with_the_same_key(nc: NATS, session_id: str) -> None:
    async def answer(msg: Msg, attempt: int) -> None:
        if attempt == 1:
            await reply_error(nc, msg, "internal", "boom")
        elif attempt == 2:
            pass  # the reply is lost: the client times out and sends again
        else:
            await reply_json(nc, msg, context_usage(session_id, used=9))

    responder = await Responder(nc, answer).start(f"ctxmeter.context.usage.{session_id}")
    try:
        usage = await CtxMeter(nc, retry=RetryPolicy(deadline=5, attempt_timeout=0.3)).report(
            session_id, {"prompt_tokens": 7, "completion_tokens": 2}
        )
    finally:
        await responder.stop()
    assert usage.used == 9
    keys = responder.keys()
    assert len(keys) == 3
    assert len(set(keys)) == 1


async def test_every_call_gets_its_own_key(nc: NATS, session_id: str) -> None:
    async def answer(msg: Msg, _: int) -> None:
        await reply_json(nc, msg, context_usage(session_id))

    responder = await Responder(nc, answer).start(f"ctxmeter.context.*.{session_id}")
    meter = CtxMeter(nc)
    try:
        await meter.add(session_id, 1)
        await meter.add(session_id, 1)
        await meter.set(session_id, 1)
        await meter.add(session_id, 1, idempotency_key="mine-1")
        await meter.get(session_id)
    finally:
        await responder.stop()
    keys = responder.keys()
    assert len(set(keys[:3])) == 3
    assert keys[3] == "mine-1"
    # A read changes nothing: it carries no key.
    assert keys[4] is None


async def test_the_duplicate_header_is_exposed(nc: NATS, session_id: str) -> None:
    async def answer(msg: Msg, attempt: int) -> None:
        headers = {"Ctxmeter-Duplicate": "true"} if attempt == 2 else None
        await reply_json(nc, msg, context_usage(session_id), headers)

    responder = await Responder(nc, answer).start(f"ctxmeter.context.add.{session_id}")
    meter = CtxMeter(nc)
    try:
        first = await meter.add(session_id, 5)
        second = await meter.add(session_id, 5)
    finally:
        await responder.stop()
    assert (first.duplicate, second.duplicate) == (False, True)
    assert first.model_dump() == second.model_dump()  # the flag is not part of the reply's data


async def test_a_call_made_before_the_functions_start_succeeds(
    nc: NATS, settings: Settings, kv: object, session_id: str
) -> None:
    meter = CtxMeter(nc, retry=RetryPolicy(deadline=30))
    call = asyncio.create_task(meter.add(session_id, 7))
    await asyncio.sleep(0.5)
    # No responders: the client is still retrying.
    assert not call.done()
    runtime = FunctionsRuntime(settings)
    await runtime.start()
    try:
        usage = await call
        assert usage.used == 7
        assert (await meter.get(session_id)).used == 7
    finally:
        await runtime.stop()


# -- the deadline ---------------------------------------------------------------------------


async def test_no_responders_until_the_deadline_is_unavailable(nc: NATS, session_id: str) -> None:
    started = time.monotonic()
    with pytest.raises(CtxMeterError) as raised:
        await CtxMeter(nc, retry=RetryPolicy(deadline=0.8)).add(session_id, 1)
    elapsed = time.monotonic() - started
    assert raised.value.code == ErrorCode.UNAVAILABLE
    assert raised.value.attempts > 2
    assert "no ctxmeter functions answered" in raised.value.message
    # Retried until the deadline, not given up before it.
    assert 0.8 <= elapsed < 3


async def test_timeouts_until_the_deadline_are_unavailable(nc: NATS, session_id: str) -> None:
    async def ignore(msg: Msg, _: int) -> None:
        pass

    responder = await Responder(nc, ignore).start(f"ctxmeter.context.get.{session_id}")
    started = time.monotonic()
    try:
        with pytest.raises(CtxMeterError) as raised:
            await CtxMeter(nc, retry=RetryPolicy(deadline=1.0, attempt_timeout=0.25)).get(session_id)
    finally:
        await responder.stop()
    assert raised.value.code == "unavailable"
    assert raised.value.attempts == len(responder.requests) >= 2
    assert 0.9 < time.monotonic() - started < 3


@pytest.mark.parametrize("code", ["conflict", "internal"])
async def test_a_retryable_error_until_the_deadline_keeps_its_code(nc: NATS, session_id: str, code: str) -> None:
    async def answer(msg: Msg, _: int) -> None:
        await reply_error(nc, msg, code, "still failing")

    responder = await Responder(nc, answer).start(f"ctxmeter.context.reset.{session_id}")
    try:
        with pytest.raises(CtxMeterError) as raised:
            await CtxMeter(nc, retry=RetryPolicy(deadline=0.6)).reset(session_id)
    finally:
        await responder.stop()
    assert raised.value.code == code
    assert raised.value.retryable is True
    assert "still failing" in raised.value.message
    assert raised.value.attempts == len(responder.requests) >= 2
    assert len(set(responder.keys())) == 1


async def test_an_unreadable_reply_is_invalid_reply(nc: NATS, session_id: str) -> None:
    async def answer(msg: Msg, _: int) -> None:
        await reply_json(nc, msg, {"not": "a context usage"})

    responder = await Responder(nc, answer).start(f"ctxmeter.context.get.{session_id}")
    try:
        with pytest.raises(CtxMeterError) as raised:
            await CtxMeter(nc).get(session_id)
    finally:
        await responder.stop()
    assert (raised.value.code, len(responder.requests)) == ("invalid_reply", 1)


def test_backoff_is_full_jitter_and_capped() -> None:
    policy = RetryPolicy(first_backoff=0.1, max_backoff=1.0)
    for failed in (1, 2, 3, 10, 100):
        ceiling = min(1.0, 0.1 * 2 ** (failed - 1))
        delays = [policy.backoff(failed) for _ in range(200)]
        assert all(0 <= delay <= ceiling for delay in delays)
        # Spread over the whole range, not clustered at the ceiling.
        assert min(delays) < ceiling / 4 and max(delays) > ceiling * 3 / 4
    with pytest.raises(ValueError, match="deadline"):
        RetryPolicy(deadline=0)
