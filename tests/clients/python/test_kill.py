"""The proof: a functions process killed mid-load, with only the client's own retries to recover, loses
no update and applies none twice.

Two `ctxmeter functions` processes share the load (one queue group). One is SIGKILLed while adds are in
flight: the requests it held get no reply, the client sends them again (same idempotency key) and the
survivor applies each one the dead process had not committed, and answers "duplicate" for any it had.
Each session's final count is exactly the sum of its adds.

Two layouts of the same 1,000 adds: spread over 50 sessions (each agent session reporting a few times a
second), and all on one session (every add racing every other). The second is the harder one for the
server: a retry comes back a second later, after hundreds of other changes to that session, so the
session must still remember the key by then.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from ctxmeter_client import ContextUsage, CtxMeter, RetryPolicy
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from ctxmeter.settings import Settings
from tests.functions.helpers import collect_replies, start_functions_process, wait_until

ADDS = 1_000
# Adds in flight at once: enough that the killed process is always holding some.
IN_FLIGHT = 50
STOP_TIMEOUT_S = 20
# How long the victim is stopped before it is killed: requests pile up in it meanwhile.
HELD_BEFORE_KILL_S = 0.2


def _add_requests(stats: list[Msg]) -> int:
    return sum(
        next(endpoint for endpoint in json.loads(reply.data)["endpoints"] if endpoint["name"] == "add")["num_requests"]
        for reply in stats
    )


@pytest.mark.slow
@pytest.mark.parametrize("sessions", [50, 1], ids=["50-sessions", "one-session"])
async def test_a_functions_process_killed_mid_load_loses_nothing_and_doubles_nothing(
    nc: NATS, kv: KeyValue, settings: Settings, session_id: str, tmp_path: Path, sessions: int
) -> None:
    logs = [tmp_path / f"functions{index}.log" for index in range(2)]
    workers = [start_functions_process(settings.nats_url, settings.kv_bucket, log) for log in logs]
    victim, survivor = workers
    try:

        async def both_serve() -> bool:
            for worker, log in zip(workers, logs, strict=True):
                assert worker.poll() is None, log.read_text()[-2000:]
            return len(await collect_replies(nc, "$SRV.PING.ctxmeter", b"", want=2, within=0.5)) == 2

        await wait_until(both_serve, "both functions processes to answer $SRV.PING", within=60)

        # Every attempt the client sends, seen beside the queue group: its idempotency key.
        attempts: Counter[str | None] = Counter()

        async def record(msg: Msg) -> None:
            attempts[(msg.headers or {}).get("Nats-Msg-Id")] += 1

        watch = await nc.subscribe("ctxmeter.context.add.*", cb=record)
        await nc.flush()

        meter = CtxMeter(nc, retry=RetryPolicy(deadline=60, attempt_timeout=1.0))
        # (session, tokens) per add, sessions interleaved; varied amounts, so a doubled add shows.
        load = [(f"{session_id}-{index % sessions}", 1 + index % 13) for index in range(ADDS)]
        slots = asyncio.Semaphore(IN_FLIGHT)
        finished = 0

        async def add(sid: str, amount: int) -> ContextUsage:
            nonlocal finished
            async with slots:
                reply = await meter.add(sid, amount)
            finished += 1
            if finished == ADDS // 4:
                # Stopped, then killed a moment later: what NATS routes to it meanwhile is surely held when
                # it dies (a kill just after it answered a whole batch of one session could find it holding
                # nothing, and prove nothing).
                victim.send_signal(signal.SIGSTOP)
                asyncio.get_running_loop().call_later(HELD_BEFORE_KILL_S, victim.send_signal, signal.SIGKILL)
            return reply

        replies = await asyncio.gather(*(add(sid, amount) for sid, amount in load))
        assert victim.wait(timeout=STOP_TIMEOUT_S) == -signal.SIGKILL
        await watch.unsubscribe()

        expected: Counter[str] = Counter()
        for sid, amount in load:
            expected[sid] += amount
        finals = {sid: (await meter.get(sid)).used for sid in expected}
        retried = sum(count - 1 for count in attempts.values())
        duplicates = sum(reply.duplicate for reply in replies)
        wrong = {sid: (used, expected[sid]) for sid, used in finals.items() if used != expected[sid]}
        assert not wrong, f"(used, expected) per session: {wrong}; {retried} retries, {duplicates} said duplicate"
        for sid in expected:
            assert max(reply.used for reply in replies if reply.session_id == sid) == expected[sid]

        # Each add was sent under its own key; the kill cost some of them a second attempt (same key).
        assert len(attempts) == ADDS
        assert None not in attempts
        assert retried > 0, "the kill interrupted no request: this run proves nothing"
        # Only a retry can find its change already applied.
        assert duplicates <= retried
        # The killed process served part of the load: the survivor handled fewer requests than were sent.
        survivor_stats = await collect_replies(nc, "$SRV.STATS.ctxmeter", b"", want=2, within=2)
        assert len(survivor_stats) == 1
        assert _add_requests(survivor_stats) < sum(attempts.values())
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    assert survivor.returncode == 0, logs[1].read_text()[-2000:]
