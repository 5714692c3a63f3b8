"""The compare-and-set writer's own promises, against a real nats-server: an unanswered write gives up
after its timeout (one sweep timer serves every write), and the writer goes on acknowledging after it."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from ctxmeter.limits import ACK_SWEEP_S
from functions.kvwriter import KvCasWriter, KvWriteTimeout

TIMEOUT_S = 0.3
# Scheduling slack on a loaded machine.
SLACK_S = 0.5


async def _gives_up_after(writer: KvCasWriter, key: str) -> float:
    started = time.monotonic()
    with pytest.raises(KvWriteTimeout):
        await writer.write(key, b"x", 0)
    return time.monotonic() - started


async def test_unacknowledged_writes_give_up_after_their_timeout_and_later_writes_go_through(
    nc: NATS, js: JetStreamContext
) -> None:
    bucket = f"LATE{uuid.uuid4().hex[:8]}"
    writer = KvCasWriter(nc, bucket, timeout=TIMEOUT_S)
    await writer.start()
    # A subscriber that never answers stands where the bucket's stream will be: no "no responders", no ack.
    silent = await nc.subscribe(f"$KV.{bucket}.>")
    first = asyncio.create_task(_gives_up_after(writer, "k1"))
    await asyncio.sleep(TIMEOUT_S / 2)
    second = asyncio.create_task(_gives_up_after(writer, "k2"))
    for waited in await asyncio.gather(first, second):
        assert TIMEOUT_S <= waited <= TIMEOUT_S + ACK_SWEEP_S + SLACK_S
    await silent.unsubscribe()
    kv = await js.create_key_value(bucket=bucket)
    try:
        revisions = await asyncio.gather(*(writer.write(f"after.{n}", b"v", 0) for n in range(50)))
        assert sorted(revisions) == list(range(1, 51))
        assert (await kv.get("after.49")).value == b"v"
    finally:
        await js.delete_key_value(bucket)
