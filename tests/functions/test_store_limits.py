"""A bounded store: the bucket refuses writes it has no room for with ``store_full`` at once (never a
retry loop ending in ``internal``), and its use against its limit is a gauge to alert on beforehand."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterator

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ctxmeter.bucket import bucket_config
from ctxmeter.limits import KIB
from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextUsage
from schemas.subjects import ContextOp
from tests.functions.helpers import call, error, ok

SMALL = 64 * KIB
# More new sessions than SMALL holds (a state is a few hundred bytes).
TOO_MANY = 1_000
# Drafts that may still fit in the room a refused context state left.
DRAFTS_TO_FILL = 20


@pytest.fixture
def settings(settings: Settings) -> Iterator[Settings]:
    yield settings.model_copy(update={"kv_max_bytes": SMALL})


def gauge(functions: FunctionsRuntime, name: str, store: str) -> float | None:
    return functions.metrics.registry.get_sample_value(f"ctxmeter_functions_{name}", {"store": store})


async def test_a_full_bucket_refuses_with_store_full(nc: NATS, kv: KeyValue, functions: FunctionsRuntime) -> None:
    prefix = f"s-{uuid.uuid4().hex[:8]}"
    stored = 0
    for n in range(TOO_MANY):
        reply = await call(nc, subjects.context(ContextOp.SET, f"{prefix}-{n}"), {"used": n, "total": 100_000})
        if (reply.headers or {}).get("Nats-Service-Error-Code"):
            refusal = error(reply, "store_full")
            break
        stored += 1
    else:
        pytest.fail(f"{TOO_MANY} sessions fitted in {SMALL} bytes")
    assert stored > 10
    assert "no room" in refusal.error.message
    # Drafts are refused the same way (a draft is smaller than a context state, so the room a refused
    # state left may still take one or two), and what is stored is intact and readable.
    for n in range(DRAFTS_TO_FILL):
        draft = await call(nc, subjects.tokens_draft(f"{prefix}-draft-{n}"), {"text": "hello"})
        if (draft.headers or {}).get("Nats-Service-Error-Code"):
            error(draft, "store_full")
            break
    else:
        pytest.fail(f"{DRAFTS_TO_FILL} drafts fitted in a full bucket")
    assert ok(await call(nc, subjects.context(ContextOp.GET, f"{prefix}-0"), {}), ContextUsage).used == 0
    assert functions.store_use is not None
    await functions.store_use.refresh()
    used, limit = gauge(functions, "store_bytes", "state"), gauge(functions, "store_max_bytes", "state")
    assert limit == SMALL
    assert used is not None and used > 0.9 * SMALL
    assert gauge(functions, "store_max_bytes", "history") == functions.settings.history_max_bytes
    refused = functions.metrics.registry.get_sample_value(
        "ctxmeter_functions_errors_total", {"code": "store_full", "reply": "sent"}
    )
    assert refused == 2


async def test_a_stream_without_a_limit_is_reported(
    js: JetStreamContext, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A bucket made before ctxmeter set limits (or provisioned without one) is bound as it is, logged
    once, and reported with the limit -1."""
    await js.create_key_value(dataclasses.replace(bucket_config(settings), max_bytes=-1))
    runtime = FunctionsRuntime(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="functions.storeuse"):
            await runtime.start()
            assert runtime.store_use is not None
            await runtime.store_use.refresh()
        assert gauge(runtime, "store_max_bytes", "state") == -1
        warnings = [record for record in caplog.records if "no size limit" in record.getMessage()]
        assert len(warnings) == 1 and f"KV_{settings.kv_bucket}" in warnings[0].getMessage()
    finally:
        await runtime.stop()
        await js.delete_key_value(settings.kv_bucket)
        await js.delete_stream(f"{settings.kv_bucket}_HISTORY")
