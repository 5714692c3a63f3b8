"""State surviving a nats-server restart, and large counts not stalling small ones."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ctxmeter.settings import Settings
from functions.counting import count_text_now
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextUsage, Encoding, TokenCount, TokenUsage
from schemas.subjects import ContextOp
from tests.functions.conftest import WatchEvents
from tests.functions.helpers import call, next_event, ok
from tests.natsproc import NatsProcess

RECOVERY_TIMEOUT_S = 30.0


@pytest.fixture
async def own_client(own_nats: NatsProcess) -> AsyncIterator[NATS]:
    client = await nats.connect(own_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        yield client
    finally:
        await client.drain()


async def _request_when_back(nc: NATS, subject: str, payload: dict[str, object]) -> Msg:
    """Retry until the server is back and the functions have resubscribed."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while True:
        try:
            return await nc.request(subject, json.dumps(payload).encode(), timeout=1)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError, nats.errors.ConnectionReconnectingError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_state_survives_a_nats_server_restart(
    own_nats: NatsProcess, own_client: NATS, session_id: str, watch_events: WatchEvents
) -> None:
    settings = Settings(nats_url=own_nats.url, kv_bucket=f"R{uuid.uuid4().hex[:12]}", kv_ttl=600)
    runtime = FunctionsRuntime(settings)
    await runtime.start()
    try:
        nc = own_client
        await call(nc, subjects.context(ContextOp.SET, session_id), {"used": 1_000, "total": 50_000, "model": "o3"})
        written = ok(await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": 234}), ContextUsage)
        draft = ok(await call(nc, subjects.tokens_draft(session_id), {"text": "hello world", "max": 100}), TokenUsage)

        own_nats.restart()

        read = ok(await _request_when_back(nc, subjects.context(ContextOp.GET, session_id), {}), ContextUsage)
        assert read == written
        assert (read.used, read.total, read.model) == (1_234, 50_000, "o3")

        # Writes continue from the stored revision, and events flow again.
        events = await watch_events(session_id, nc)
        added = ok(await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": 1}), ContextUsage)
        assert (added.used, added.revision > written.revision) == (1_235, True)
        assert (await next_event(events)).data == added
        redrafted = ok(await call(nc, subjects.tokens_draft(session_id), {"text": "hi", "max": 100}), TokenUsage)
        assert redrafted.revision > draft.revision
    finally:
        await runtime.stop()


async def test_large_count_does_not_stall_small_ones(nc: NATS, functions: FunctionsRuntime) -> None:
    """A 3 MiB count runs off the event loop: small counts sent after it are answered before it."""
    words = ["context", "window", "tokens", "meter", "naïve", "日本語", "emoji🙂", "x1y2z3", "\n"]
    large_text = " ".join(words[i * 7 % len(words)] + str(i % 97) for i in range(400_000))
    large_text = large_text[: 3 * 1024 * 1024]
    expected_large = count_text_now(large_text, Encoding.O200K_BASE)

    order: list[str] = []
    large_reply: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

    async def on_large(msg: Msg) -> None:
        order.append("large")
        large_reply.set_result(msg)

    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=on_large, max_msgs=1)
    # Published first on this connection, so the functions receive it before any small request.
    await nc.publish(subjects.tokens_count(), json.dumps({"text": large_text}).encode(), reply=inbox)

    async def small(index: int) -> None:
        reply = ok(await call(nc, subjects.tokens_count(), {"text": f"small request {index}"}), TokenCount)
        assert reply.count == count_text_now(f"small request {index}", Encoding.O200K_BASE)
        order.append("small")

    await asyncio.gather(*(small(index) for index in range(10)))
    assert order == ["small"] * 10, order

    reply = ok(await asyncio.wait_for(large_reply, 60), TokenCount)
    assert reply.count == expected_large
    assert order[-1] == "large"
