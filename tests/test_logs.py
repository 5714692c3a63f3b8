"""The log cannot be flooded, and no token reaches it: a kind of line is written a few times per interval
(the rest counted in the metrics), and ``token=`` values are replaced wherever they appear."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import nats
from nats.aio.msg import Msg

from ctxmeter import logs
from ctxmeter.connection import NatsConnection
from ctxmeter.limits import LOG_BURST, LOG_INTERVAL_S
from ctxmeter.settings import Settings
from functions.metrics import FunctionsMetrics
from tests.functions.helpers import wait_until
from tests.logcapture import written_log

FLOOD = 20_000
PENDING = 4
# A safety net for the flood to be handled; never a performance bound.
WAIT_S = 30.0
SECRET = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.U0lHTkFUVVJF"


async def test_a_slow_consumer_flood_writes_a_few_lines(settings: Settings) -> None:
    """nats-py reports every message a slow consumer drops to the connection's error callback: 20,000
    dropped messages are a handful of lines, and the rest are counted in the metrics."""
    connection = NatsConnection(settings, "ctxmeter-test")
    nc = await connection.open()
    publisher = await nats.connect(settings.nats_url)
    blocked = asyncio.Event()

    async def stuck(msg: Msg) -> None:
        await blocked.wait()

    before = logs.suppressed_counts().get("ctxmeter.connection", 0)

    def held_back() -> int:
        return logs.suppressed_counts().get("ctxmeter.connection", 0) - before

    try:
        with written_log() as out:
            await nc.subscribe("flood.slow", cb=stuck, pending_msgs_limit=PENDING)
            await nc.flush()
            for _ in range(FLOOD):
                await publisher.publish("flood.slow", b"x")
            await publisher.flush()
            # Every message but the one the callback holds and the PENDING queued is dropped and reported.
            dropped = FLOOD - 1 - PENDING

            async def all_reported() -> bool:
                return held_back() + LOG_BURST >= dropped

            await wait_until(all_reported, "every dropped message reported", within=WAIT_S)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        blocked.set()
        await publisher.close()
        await connection.close()
    slow = [line for line in lines if "slow consumer" in line["msg"]]
    assert len(slow) == LOG_BURST, lines[:10]
    assert held_back() == dropped - LOG_BURST
    assert len(out.getvalue()) < 500 * LOG_BURST
    exported = FunctionsMetrics().registry.get_sample_value(
        "ctxmeter_functions_log_lines_suppressed_total", {"logger": "ctxmeter.connection"}
    )
    assert exported is not None and exported >= held_back()


def record(name: str, msg: str, *args: object, level: int = logging.WARNING, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    made.__dict__.update(extra)
    return made


def test_each_kind_is_limited_on_its_own_and_the_next_line_says_how_many() -> None:
    now = [0.0]
    limit = logs.RateLimit(burst=3, interval=10.0, clock=lambda: now[0])
    before = logs.suppressed_counts().get("t.one", 0)
    passed = [limit.filter(record("t.one", "request rejected: %s", n)) for n in range(10)]
    assert passed == [True] * 3 + [False] * 7
    # Another template, or another kind named by the caller, has its own allowance.
    assert limit.filter(record("t.one", "something else"))
    assert all(limit.filter(record("t.one", "NATS error: %s", n, kind=f"nats error {n}")) for n in range(3))
    now[0] = 10.0
    again = record("t.one", "request rejected: %s", 11)
    assert limit.filter(again) and again.suppressed == 7
    assert logs.suppressed_counts()["t.one"] - before == 7
    following = record("t.one", "request rejected: %s", 12)
    assert limit.filter(following) and not hasattr(following, "suppressed")


def test_kinds_are_bounded() -> None:
    """Lines built with f-strings are a kind each: beyond MAX_LOG_KINDS, new kinds share one allowance."""
    limit = logs.RateLimit(burst=1, interval=LOG_INTERVAL_S, clock=lambda: 0.0)
    assert all(limit.filter(record("t.kinds", f"built with an f-string {n}")) for n in range(logs.MAX_LOG_KINDS))
    assert limit.filter(record("t.kinds", "one kind too many"))
    assert not limit.filter(record("t.kinds", "and another"))


def test_no_token_reaches_a_line_in_either_format() -> None:
    try:
        raise ValueError(f"bad line: b'/api/ws/counters/s?token={SECRET}&x=1'")
    except ValueError:
        failure = sys.exc_info()
    for log_format in ("json", "text"):
        formatter = logs.JsonFormatter() if log_format == "json" else logs.TextFormatter()
        lines = [
            formatter.format(record("t", "GET %s", f"/api/ws/counters/s?token={SECRET}")),
            formatter.format(record("t", "upgrade refused", path=f"/x?a=1&access_token={SECRET}")),
            formatter.format(record("t", f"quoted: {SECRET[:20]}", url=f"http://h/?TOKEN%3D{SECRET}")),
        ]
        with_exc = record("t", "failed")
        with_exc.exc_info = failure  # type: ignore[assignment]
        lines.append(formatter.format(with_exc))
        for line in lines:
            assert "token=***" in line.lower() or "token%3d***" in line.lower() or SECRET[:20] in line, line
            assert SECRET[20:] not in line, line


def test_a_flood_of_one_kind_hides_no_other() -> None:
    """A flood of one kind hides no other kind: a different line in the same interval is written."""
    logger = logging.getLogger("t.flood")
    with written_log() as out:
        for n in range(100):
            logger.warning("flooding %d", n)
        logger.warning("the line that matters")
    written = out.getvalue()
    assert written.count("flooding") == LOG_BURST
    assert "the line that matters" in written
