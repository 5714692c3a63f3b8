"""Every call of the asyncio client against a real nats-server and the real functions."""

from __future__ import annotations

import asyncio

import nats
import pytest
from ctxmeter_client import (
    ContextHistory,
    ContextLevel,
    ContextUsage,
    CtxMeter,
    CtxMeterError,
    Encoding,
    HistoryOp,
    ModelsReply,
    TokenCount,
    TokenUsage,
)
from nats.aio.client import Client as NATS

from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime


async def test_get_of_a_new_session_is_the_zero_state(
    meter: CtxMeter, functions: FunctionsRuntime, settings: Settings, session_id: str
) -> None:
    usage = await meter.get(session_id)
    assert isinstance(usage, ContextUsage)
    assert (usage.session_id, usage.used, usage.total) == (session_id, 0, settings.default_context_window)
    assert (usage.revision, usage.percentage, usage.level) == (0, 0, ContextLevel.NORMAL)
    assert usage.left == usage.compact_at == settings.default_context_window
    assert usage.duplicate is False


async def test_set_add_free_reset(meter: CtxMeter, functions: FunctionsRuntime, session_id: str) -> None:
    first = await meter.set(session_id, 1_000, total=10_000, model="gpt-4o")
    assert (first.used, first.total, first.model, first.percentage) == (1_000, 10_000, "gpt-4o", 10.0)
    assert first.estimated is False
    assert first.left == 9_000

    added = await meter.add(session_id, 7_500)
    assert (added.used, added.percentage, added.level) == (8_500, 85.0, ContextLevel.WARNING)
    assert added.revision > first.revision
    # add is an estimate until the provider's next usage report.
    assert added.estimated is True

    freed = await meter.free(session_id, 100_000)
    assert freed.used == 0  # floors at 0

    await meter.add(session_id, 42)
    reset = await meter.reset(session_id)
    assert (reset.used, reset.total, reset.model) == (0, 10_000, "gpt-4o")
    assert (await meter.get(session_id)).revision == reset.revision


async def test_set_takes_the_window_of_a_model(meter: CtxMeter, functions: FunctionsRuntime, session_id: str) -> None:
    usage = await meter.set(session_id, 10, model="gpt-4")
    assert (usage.total, usage.model) == (8_192, "gpt-4")


async def test_set_reserved_compact_at_and_estimated(
    meter: CtxMeter, functions: FunctionsRuntime, session_id: str
) -> None:
    usage = await meter.set(session_id, 7_000, total=10_000, reserved=1_000, compact_at=8_000, estimated=True)
    assert (usage.reserved, usage.compact_at, usage.estimated) == (1_000, 8_000, True)
    assert usage.left == 1_000
    # The level is measured against compact_at: 7000 / 8000 = 87.5 %.
    assert usage.level == ContextLevel.WARNING
    assert usage.percentage == 70.0
    # Kept as stored when a later set omits them.
    kept = await meter.set(session_id, 100)
    assert (kept.reserved, kept.compact_at, kept.estimated) == (1_000, 8_000, False)


async def test_compact(meter: CtxMeter, functions: FunctionsRuntime, session_id: str) -> None:
    await meter.set(session_id, 90_000, total=100_000)
    compacted = await meter.compact(session_id, 12_000)
    assert compacted.used == 12_000
    assert compacted.compactions == 1
    assert compacted.compacted_at is not None
    assert (await meter.compact(session_id, 11_000)).compactions == 2


async def test_history(meter: CtxMeter, functions: FunctionsRuntime, session_id: str) -> None:
    await meter.set(session_id, 100, total=1_000)
    await meter.add(session_id, 50)
    await meter.free(session_id, 20)
    last = await meter.compact(session_id, 30)

    history = await meter.history(session_id)
    assert isinstance(history, ContextHistory)
    assert history.session_id == session_id
    assert [point.op for point in history.points] == [HistoryOp.SET, HistoryOp.ADD, HistoryOp.FREE, HistoryOp.COMPACT]
    assert [point.used for point in history.points] == [100, 150, 130, 30]
    assert (history.points[-1].revision, history.points[-1].used) == (last.revision, last.used)

    newest = await meter.history(session_id, limit=2)
    assert [point.op for point in newest.points] == [HistoryOp.FREE, HistoryOp.COMPACT]


async def test_count_text(meter: CtxMeter, functions: FunctionsRuntime) -> None:
    count = await meter.count("hello world", model="gpt-4o")
    assert isinstance(count, TokenCount)
    assert (count.count, count.model, count.encoding, count.exact) == (2, "gpt-4o", Encoding.O200K_BASE, True)

    by_encoding = await meter.count("hello world", encoding="cl100k_base")
    assert (by_encoding.count, by_encoding.model, by_encoding.encoding) == (2, None, Encoding.CL100K_BASE)


async def test_count_messages(meter: CtxMeter, functions: FunctionsRuntime) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Count "}, {"type": "text", "text": "me."}]},
        {"role": "user", "name": "bob", "content": "hi"},
    ]
    count = await meter.count(messages, model="gpt-4o")

    # OpenAI's framing: 3 per message, 1 per name, 3 to prime the reply, plus each part's own tokens.
    async def tokens(text: str) -> int:
        return (await meter.count(text, model="gpt-4o")).count

    parts = ["system", "You are terse.", "user", "Count me.", "user", "bob", "hi"]
    expected = 3 * len(messages) + 1 + 3 + sum([await tokens(part) for part in parts])
    assert count.count == expected


async def test_draft(meter: CtxMeter, functions: FunctionsRuntime, session_id: str) -> None:
    draft = await meter.draft(session_id, "hello world", model="gpt-4o", max=10)
    assert isinstance(draft, TokenUsage)
    assert (draft.session_id, draft.count, draft.max, draft.percentage) == (session_id, 2, 10, 20.0)
    assert (draft.warning, draft.level, draft.encoding, draft.exact) == (False, ContextLevel.NORMAL, "o200k_base", True)
    text = "hello world " * 4
    size = (await meter.count(text, model="gpt-4o")).count
    again = await meter.draft(session_id, text, model="gpt-4o", max=size)
    assert (again.count, again.percentage, again.warning, again.level) == (size, 100.0, True, ContextLevel.CRITICAL)
    assert again.revision > draft.revision


async def test_models(meter: CtxMeter, functions: FunctionsRuntime) -> None:
    reply = await meter.models()
    assert isinstance(reply, ModelsReply)
    by_name = {model.name: model for model in reply.models}
    assert by_name["gpt-4o"].encoding == Encoding.O200K_BASE
    assert by_name["gpt-4o"].context_window == 128_000
    assert by_name["gpt-4o"].exact is True
    assert by_name["claude-sonnet-4"].exact is False


async def test_the_same_idempotency_key_applies_once_per_session(
    meter: CtxMeter, functions: FunctionsRuntime, session_id: str
) -> None:
    first = await meter.add(session_id, 5, idempotency_key="step-1")
    again = await meter.add(session_id, 5, idempotency_key="step-1")
    assert (first.used, first.duplicate) == (5, False)
    assert (again.used, again.duplicate) == (5, True)
    assert again.revision == first.revision
    # Keys are per session: another session applies it.
    other = await meter.add(f"{session_id}-other", 5, idempotency_key="step-1")
    assert (other.used, other.duplicate) == (5, False)
    # Calls without a key get a fresh one each: both apply.
    await meter.add(session_id, 1)
    assert (await meter.add(session_id, 1)).used == 7


async def test_a_meter_on_an_existing_connection_leaves_it_open(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    async with CtxMeter(nc) as meter:
        await meter.add(session_id, 3)
    assert meter.nc is nc
    assert nc.is_connected
    assert (await CtxMeter(nc).get(session_id)).used == 3


async def test_connect_opens_and_closes_its_own_connection(
    nats_url: str, functions: FunctionsRuntime, session_id: str
) -> None:
    meter = await CtxMeter.connect(nats_url, connect_timeout=5)
    assert (await meter.add(session_id, 4)).used == 4
    await meter.close()
    assert meter.nc.is_closed
    await meter.close()  # twice is fine

    async with CtxMeter.connect([nats_url]) as scoped:
        assert (await scoped.get(session_id)).used == 4
    assert scoped.nc.is_closed


async def test_a_closed_connection_fails_at_once(nats_url: str, session_id: str) -> None:
    nc = await nats.connect(nats_url)
    await nc.close()
    with pytest.raises(CtxMeterError) as raised:
        await CtxMeter(nc).add(session_id, 1)
    assert (raised.value.code, raised.value.attempts) == ("unavailable", 0)


async def test_connect_to_nothing_fails_fast_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(CtxMeterError) as raised:
        # Port 1 on loopback: nothing listens. With its defaults nats-py would try 61 times, 2 s apart,
        # logging a traceback each time.
        await CtxMeter.connect("nats://someone:secret@127.0.0.1:1")
    assert asyncio.get_running_loop().time() - started < 5
    assert raised.value.code == "unavailable"
    assert "no NATS server answers at nats://127.0.0.1:1" in raised.value.message
    assert "`ctxmeter up`" in raised.value.message
    assert "secret" not in raised.value.message
    assert not [record for record in caplog.records if record.exc_info]


async def test_a_server_that_never_answers_in_time_is_unavailable() -> None:
    # Something accepts the connection but never speaks NATS: nats-py's own timeout, still one error.
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(CtxMeterError) as raised:
            await CtxMeter.connect(
                f"nats://127.0.0.1:{port}", connect_timeout=0.2, max_reconnect_attempts=1, reconnect_time_wait=0.1
            )
        for writer in accepted:
            writer.close()
            await writer.wait_closed()
    assert raised.value.code == "unavailable"
    assert "cannot connect" in raised.value.message
