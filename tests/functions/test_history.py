"""A session's history: every committed change is a point; the newest come back oldest first."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ctxmeter.settings import Settings
from functions.history import stream_name
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextHistory, ContextUsage, HistoryOp
from schemas.subjects import ContextOp
from tests.functions.helpers import call, error, ok


async def _history(nc: NATS, sid: str, limit: int | None = None) -> ContextHistory:
    payload = {} if limit is None else {"limit": limit}
    return ok(await call(nc, subjects.context(ContextOp.HISTORY, sid), payload), ContextHistory)


async def test_every_change_is_a_point_in_order(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    assert (await _history(nc, session_id)).points == []
    changes = [
        (ContextOp.SET, {"used": 1_000, "total": 10_000, "reserved": 1_000}),
        (ContextOp.ADD, {"tokens": 500}),
        (ContextOp.FREE, {"tokens": 200}),
        (ContextOp.USAGE, {"usage": {"input_tokens": 5_000, "output_tokens": 100}}),
        (ContextOp.COMPACT, {"used": 800}),
        (ContextOp.RESET, {}),
    ]
    replies = [ok(await call(nc, subjects.context(op, session_id), body), ContextUsage) for op, body in changes]
    history = await _history(nc, session_id)
    assert history.session_id == session_id
    assert [point.op for point in history.points] == [
        HistoryOp.SET,
        HistoryOp.ADD,
        HistoryOp.FREE,
        HistoryOp.USAGE,
        HistoryOp.COMPACT,
        HistoryOp.RESET,
    ]
    assert [(p.used, p.total, p.compact_at, p.revision) for p in history.points] == [
        (r.used, r.total, r.compact_at, r.revision) for r in replies
    ]
    # The last point is the current state.
    current = ok(await call(nc, subjects.context(ContextOp.GET, session_id)), ContextUsage)
    assert (history.points[-1].revision, history.points[-1].used) == (current.revision, current.used)


async def test_limit_returns_the_newest_oldest_first(nc: NATS, functions: FunctionsRuntime, session_id: str) -> None:
    for used in range(1, 21):
        await call(nc, subjects.context(ContextOp.SET, session_id), {"used": used})
    newest = await _history(nc, session_id, limit=5)
    assert [point.used for point in newest.points] == [16, 17, 18, 19, 20]
    assert len((await _history(nc, session_id)).points) == 20  # the default limit (200) is more than there are
    for bad in (0, 1_001, -1):
        error(await call(nc, subjects.context(ContextOp.HISTORY, session_id), {"limit": bad}), "invalid_request")


async def test_the_last_point_is_the_current_state_even_if_a_point_was_lost(
    nc: NATS, js: JetStreamContext, functions: FunctionsRuntime, settings: Settings, session_id: str
) -> None:
    await call(nc, subjects.context(ContextOp.SET, session_id), {"used": 10})
    await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": 5})
    # Lose the session's points (as a node failing between commit and publish would).
    await js.purge_stream(stream_name(settings), subject=subjects.history(settings.kv_bucket, session_id))
    points = (await _history(nc, session_id)).points
    assert [(point.op, point.used) for point in points] == [(HistoryOp.ADD, 15)]


async def test_each_session_keeps_its_newest_points_within_the_bound(
    nc: NATS, js: JetStreamContext, functions: FunctionsRuntime, settings: Settings, session_id: str
) -> None:
    kept = settings.history_points
    # One at a time, so each is a point of its own (concurrent changes are committed together).
    for used in range(kept + 21):
        await call(nc, subjects.context(ContextOp.SET, session_id), {"used": used})
    subject = subjects.history(settings.kv_bucket, session_id)
    info = await js.stream_info(stream_name(settings), subjects_filter=subject)
    assert info.state.subjects is not None
    assert info.state.subjects[subject] == kept
    history = await _history(nc, session_id, limit=1_000)
    assert len(history.points) == 1_000
    revisions = [point.revision for point in history.points]
    assert revisions == sorted(revisions)
    # The oldest points went first; the newest is the current state.
    assert history.points[-1].used == kept + 20
    assert history.points[0].used > 20
    current = ok(await call(nc, subjects.context(ContextOp.GET, session_id)), ContextUsage)
    assert revisions[-1] == current.revision


async def test_the_history_stream_bounds_and_ages_points(
    js: JetStreamContext, functions: FunctionsRuntime, settings: Settings
) -> None:
    config = (await js.stream_info(stream_name(settings))).config
    assert config.max_msgs_per_subject == settings.history_points
    assert config.max_age == settings.kv_ttl
    assert config.max_bytes == settings.history_max_bytes
    assert config.subjects == [subjects.history_wildcard(settings.kv_bucket)]


async def test_with_history_off_the_history_is_the_state_now(
    nc: NATS, js: JetStreamContext, kv: KeyValue, settings: Settings, session_id: str
) -> None:
    runtime = FunctionsRuntime(settings.model_copy(update={"record_history": False}))
    await runtime.start()
    try:
        for used in (1, 2, 3):
            await call(nc, subjects.context(ContextOp.SET, session_id), {"used": used})
        assert [(point.op, point.used) for point in (await _history(nc, session_id)).points] == [(HistoryOp.SET, 3)]
        names = [info.config.name for info in await js.streams_info()]
        assert stream_name(settings) not in names  # not even created
    finally:
        await runtime.stop()
