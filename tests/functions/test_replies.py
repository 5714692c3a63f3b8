"""The functions answer only inboxes: a request that names a KV key, a history or event subject or the
JetStream API as its reply subject is refused before any work, counted, and logged once per interval,
so nobody can make the functions publish where they may write (the discovery answers included)."""

from __future__ import annotations

import logging
import uuid

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue
from pydantic import ValidationError

from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextHistory, ContextUsage
from schemas.subjects import ContextOp
from tests.functions.helpers import body, call, collect_replies, kv_revision, ok

# How long a refused request's reply is awaited where it must not arrive (the refusal itself is at once).
NOTHING_ARRIVES_S = 0.3


def hostile_replies(settings: Settings, victim: str) -> dict[str, str]:
    """Where a reply must never go, by route: each is a subject the functions may publish to."""
    return {
        "state": f"$KV.{settings.kv_bucket}.{subjects.context_key(victim)}",
        "history": subjects.history(settings.kv_bucket, victim),
        "events": subjects.events(victim),
        "jetstream": f"$JS.API.STREAM.PURGE.KV_{settings.kv_bucket}",
    }


def refused(functions: FunctionsRuntime, endpoint: str) -> float:
    value = functions.metrics.registry.get_sample_value(
        "ctxmeter_functions_replies_refused_total", {"endpoint": endpoint}
    )
    return 0.0 if value is None else value


async def test_no_reply_reaches_the_bucket_history_events_or_jetstream(
    nc: NATS, kv: KeyValue, settings: Settings, functions: FunctionsRuntime
) -> None:
    attacker, victim = f"a-{uuid.uuid4().hex}", f"v-{uuid.uuid4().hex}"
    ok(await call(nc, subjects.context(ContextOp.SET, victim), {"used": 10, "total": 1000}), ContextUsage)
    ok(await call(nc, subjects.context(ContextOp.SET, attacker), {"used": 99_999, "total": 100_000}), ContextUsage)
    revision = await kv_revision(kv, subjects.context_key(victim))
    routes = hostile_replies(settings, victim)
    listeners = {route: await nc.subscribe(subject) for route, subject in routes.items()}
    await nc.flush()
    for subject in routes.values():
        await nc.publish(subjects.context(ContextOp.GET, attacker), b"{}", reply=subject)
    # Requests on one endpoint are taken in order: once this one is answered, those before it were seen.
    ok(await call(nc, subjects.context(ContextOp.GET, attacker), {}), ContextUsage)

    for route, listener in listeners.items():
        with pytest.raises(TimeoutError):
            await listener.next_msg(timeout=NOTHING_ARRIVES_S)
        assert route and listener.pending_msgs == 0
    state = ok(await call(nc, subjects.context(ContextOp.GET, victim), {}), ContextUsage)
    assert (state.used, state.revision) == (10, revision)
    history = ok(await call(nc, subjects.context(ContextOp.HISTORY, victim), {}), ContextHistory)
    assert [point.used for point in history.points] == [10]
    assert refused(functions, "get") == len(routes)


@pytest.mark.parametrize(
    ("op", "change", "after"),
    [(ContextOp.ADD, {"tokens": 7}, 12), (ContextOp.SET, {"used": 7}, 7), (ContextOp.RESET, {}, 0)],
)
async def test_a_change_with_a_hostile_reply_subject_is_not_applied(
    nc: NATS,
    kv: KeyValue,
    settings: Settings,
    functions: FunctionsRuntime,
    session_id: str,
    op: ContextOp,
    change: dict[str, int],
    after: int,
) -> None:
    """Refused before any work: the change is not made, and its idempotency key is not spent."""
    ok(await call(nc, subjects.context(ContextOp.SET, session_id), {"used": 5}), ContextUsage)
    target = hostile_replies(settings, session_id)["state"]
    key = {"Nats-Msg-Id": f"k-{uuid.uuid4().hex}"}
    await nc.publish(subjects.context(op, session_id), body(change), reply=target, headers=key)
    assert ok(await call(nc, subjects.context(ContextOp.GET, session_id), {}), ContextUsage).used == 5
    assert refused(functions, op.value) == 1
    # The same key, asked properly, is applied: the refused request never reached the store.
    reply = await nc.request(subjects.context(op, session_id), body(change), headers=key, timeout=10)
    assert (reply.headers or {}).get("Ctxmeter-Duplicate") is None
    assert ok(reply, ContextUsage).used == after


async def test_discovery_answers_only_inboxes(
    nc: NATS, kv: KeyValue, settings: Settings, functions: FunctionsRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    victim = f"v-{uuid.uuid4().hex}"
    target = hostile_replies(settings, victim)["state"]
    listener = await nc.subscribe(target)
    await nc.flush()
    with caplog.at_level(logging.WARNING):
        for subject in ("$SRV.PING", "$SRV.INFO.ctxmeter", "$SRV.STATS.ctxmeter"):
            await nc.publish(subject, b"", reply=target)
            # Published with no reply subject at all: dropped quietly (nats.py would raise into the log).
            await nc.publish(subject, b"")
        # Still answered where an answer belongs.
        assert len(await collect_replies(nc, "$SRV.PING.ctxmeter", b"", want=1)) == 1
        with pytest.raises(TimeoutError):
            await listener.next_msg(timeout=NOTHING_ARRIVES_S)
    assert await kv_revision(kv, subjects.context_key(victim)) is None
    assert refused(functions, "$SRV") == 3
    assert "NATS error" not in caplog.text


async def test_refusals_are_counted_each_and_logged_once_per_interval(
    nc: NATS, settings: Settings, functions: FunctionsRuntime, session_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = hostile_replies(settings, session_id)["events"]
    with caplog.at_level(logging.WARNING, logger="functions.service"):
        for _ in range(200):
            await nc.publish(subjects.context(ContextOp.GET, session_id), b"{}", reply=target + ".x" * 500)
        ok(await call(nc, subjects.context(ContextOp.GET, session_id), {}), ContextUsage)
    assert refused(functions, "get") == 200
    lines = [record for record in caplog.records if "reply subject" in record.getMessage()]
    assert len(lines) == 1, [record.getMessage() for record in lines]
    # The client's subject is quoted as a short excerpt.
    assert len(lines[0].getMessage()) < 300


async def test_another_inbox_prefix(nats_url: str, kv: KeyValue, settings: Settings, session_id: str) -> None:
    """With CTXMETER_INBOX_PREFIX, requesters using that prefix are answered and ``_INBOX.`` is refused;
    the functions' own JetStream requests use it too."""
    custom = settings.model_copy(update={"inbox_prefix": "_CTX_IN"})
    runtime = FunctionsRuntime(custom)
    await runtime.start()
    ours = await nats.connect(nats_url, inbox_prefix="_CTX_IN")
    default = await nats.connect(nats_url)
    try:
        assert ok(await call(ours, subjects.context(ContextOp.ADD, session_id), {"tokens": 4}), ContextUsage).used == 4
        with pytest.raises(nats.errors.TimeoutError):
            await default.request(subjects.context(ContextOp.ADD, session_id), b'{"tokens": 1}', timeout=0.5)
        assert ok(await call(ours, subjects.context(ContextOp.GET, session_id), {}), ContextUsage).used == 4
        assert refused(runtime, "add") == 1
    finally:
        await ours.close()
        await default.close()
        await runtime.stop()


@pytest.mark.parametrize("prefix", ["", "$KV", "_INBOX.", "_IN BOX", "_IN*", "ctxmeter", "ctxmeter.events"])
def test_an_inbox_prefix_that_could_name_our_subjects_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError):
        Settings(inbox_prefix=prefix)
