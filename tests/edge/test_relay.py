"""The relay over real sockets and real NATS: the seed's manual steps, state on connect, throttling,
stale revisions, isolation between sessions and a peer that never reads."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from nats.aio.client import Client as NATS

from ctxmeter.limits import SUBSCRIPTION_LINGER_S
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextUpdateEvent, ContextUsage, TokenCountEvent, TokenUsage
from schemas.subjects import ContextOp
from tests.edge.conftest import EdgeFactory
from tests.edge.helpers import (
    RawSocket,
    context_event,
    eventually,
    eventually_async,
    frames_until,
    has_subscriber,
    metric,
    next_frame,
    no_subscriber,
    publish_events,
    used_is,
    ws_url,
)
from ws_edge.app import EdgeServer


async def test_seed_manual_steps(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    """Connect, see the (zero) state, POST a context change, see its frame; ping gets pong."""
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        first = ContextUpdateEvent.model_validate(await next_frame(ws))
        assert (first.session_id, first.data.used, first.data.revision) == (session_id, 0, 0)

        async with http.post(f"{edge.url}/api/counters/context/{session_id}", json={"used": 1500, "total": 8000}) as r:
            assert r.status == 200
            posted = ContextUsage.model_validate(await r.json())
        frame = ContextUpdateEvent.model_validate(await next_frame(ws))
        assert frame.data == posted
        assert (frame.data.used, frame.data.total, frame.data.percentage) == (1500, 8000, 18.75)

        await ws.send_str("ping")
        assert await next_frame(ws) == {"type": "pong"}
        await ws.send_str(json.dumps({"type": "ping"}))
        assert await next_frame(ws) == {"type": "pong"}


async def test_frames_are_the_published_envelopes(
    edge: EdgeServer, http: aiohttp.ClientSession, nc: NATS, session_id: str
) -> None:
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        events = await nc.subscribe(subjects.events(session_id))
        await nc.request(subjects.context(ContextOp.ADD, session_id), b'{"tokens": 7}')
        published = (await events.next_msg(timeout=10)).data
        async with asyncio.timeout(20):
            message = await ws.receive()
        assert message.data.encode() == published
        await events.unsubscribe()


async def test_state_on_connect(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    base = f"{edge.url}/api/counters"
    async with http.post(f"{base}/context/{session_id}", json={"used": 900, "total": 1000}) as r:
        context = ContextUsage.model_validate(await r.json())
    async with http.post(f"{base}/tokens/{session_id}", json={"text": "hello world", "model": "gpt-4o"}) as r:
        assert r.status == 200
        draft = TokenUsage.model_validate(await r.json())

    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        first = ContextUpdateEvent.model_validate(await next_frame(ws))
        second = TokenCountEvent.model_validate(await next_frame(ws))
    assert first.data == context
    assert first.data.level == "critical"
    assert second.data == draft
    assert second.data.count == 2


async def test_no_draft_frame_when_none_is_stored(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        assert (await next_frame(ws))["type"] == "context_update"
        # The next frame is the answer to a ping, not a token_count.
        await ws.send_str("ping")
        assert await next_frame(ws) == {"type": "pong"}


async def test_burst_is_coalesced_and_the_final_value_arrives(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, nc: NATS, session_id: str
) -> None:
    burst = 300
    async with make_edge(throttle_ms=100) as edge, http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        subject = subjects.context(ContextOp.ADD, session_id)
        replies = await asyncio.gather(*(nc.request(subject, b'{"tokens": 1}', timeout=20) for _ in range(burst)))
        assert max(ContextUsage.model_validate_json(reply.data).used for reply in replies) == burst

        frames = await frames_until(ws, used_is(burst))
    assert len(frames) < burst / 10
    revisions = [frame["data"]["revision"] for frame in frames]
    assert revisions == sorted(revisions)


async def test_synthetic_burst_yields_few_frames_ending_with_the_newest(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, nc: NATS, session_id: str
) -> None:
    async with make_edge(throttle_ms=100) as edge, http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        await publish_events(nc, session_id, [context_event(session_id, n, n) for n in range(1, 501)])
        frames = await frames_until(ws, used_is(500))
    assert len(frames) < 50
    # The app outlives its server, so its metrics can still be read.
    coalesced = metric(edge, "frames_coalesced_total")
    assert coalesced >= 500 - len(frames)


async def test_stale_revisions_are_dropped(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, nc: NATS, session_id: str
) -> None:
    async with make_edge(throttle_ms=0) as edge, http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        await publish_events(
            nc,
            session_id,
            [context_event(session_id, 10, 10), context_event(session_id, 5, 5), context_event(session_id, 11, 11)],
        )
        frames = await frames_until(ws, used_is(11))
    # 10 may be replaced by 11 before it is written (the socket keeps only its latest frame); 5 never goes out.
    assert [frame["data"]["used"] for frame in frames] in ([10, 11], [11])
    assert metric(edge, "stale_events_dropped_total") == 1


async def test_nothing_older_than_the_state_sent_on_connect(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, nc: NATS, session_id: str
) -> None:
    reply = await nc.request(subjects.context(ContextOp.SET, session_id), b'{"used": 77}')
    current = ContextUsage.model_validate_json(reply.data)
    async with make_edge(throttle_ms=0) as edge, http.ws_connect(ws_url(edge.url, session_id)) as ws:
        assert (await next_frame(ws))["data"] == current.model_dump(mode="json")
        await publish_events(
            nc,
            session_id,
            [
                context_event(session_id, 1, current.revision - 1),
                context_event(session_id, 2, current.revision + 100),
            ],
        )
        assert (await next_frame(ws))["data"]["used"] == 2


async def test_sessions_are_isolated(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    other = f"{session_id}-other"
    base = f"{edge.url}/api/counters/context"
    async with (
        http.ws_connect(ws_url(edge.url, session_id)) as mine,
        http.ws_connect(ws_url(edge.url, other)) as theirs,
    ):
        await next_frame(mine)
        await next_frame(theirs)
        for used in (1, 2, 3):
            async with http.post(f"{base}/{session_id}", json={"used": used}) as r:
                assert r.status == 200
        async with http.post(f"{base}/{other}", json={"used": 99}) as r:
            assert r.status == 200
        theirs_frames = await frames_until(theirs, used_is(99))
        mine_frames = await frames_until(mine, used_is(3))
    assert {frame["session_id"] for frame in theirs_frames} == {other}
    assert [frame["data"]["used"] for frame in theirs_frames] == [99]
    assert {frame["session_id"] for frame in mine_frames} == {session_id}


async def test_event_claiming_another_session_is_not_relayed(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, nc: NATS, session_id: str
) -> None:
    async with make_edge(throttle_ms=0) as edge, http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        await publish_events(
            nc,
            session_id,
            [
                context_event("someone-else", 666, 1),
                b"not json",
                b'{"type": "context_update"}',
                context_event(session_id, 5, 5),
            ],
        )
        assert (await next_frame(ws))["data"]["used"] == 5


async def test_subscribed_only_while_the_session_has_local_sockets(
    edge: EdgeServer, http: aiohttp.ClientSession, nc: NATS, session_id: str
) -> None:
    events = subjects.events(session_id)
    assert not await has_subscriber(nc, events)
    async with http.ws_connect(ws_url(edge.url, session_id)) as first:
        await next_frame(first)
        assert await has_subscriber(nc, events)
        async with http.ws_connect(ws_url(edge.url, session_id)) as second:
            await next_frame(second)
            assert metric(edge, "sessions") == 1
            assert metric(edge, "connections") == 2
    # The subscription outlives the last socket by a moment (a reload keeps it), then it goes.
    assert metric(edge, "sessions") == 1
    await eventually_async(lambda: no_subscriber(nc, events))
    assert metric(edge, "sessions") == 0


async def test_a_reload_keeps_the_subscription(
    edge: EdgeServer, http: aiohttp.ClientSession, nc: NATS, session_id: str
) -> None:
    async with http.ws_connect(ws_url(edge.url, session_id)) as first:
        await next_frame(first)
    # A page reload: the old socket is gone, the new one comes within the linger.
    async with http.ws_connect(ws_url(edge.url, session_id)) as second:
        await next_frame(second)
        assert metric(edge, "sessions") == 1
        await asyncio.sleep(SUBSCRIPTION_LINGER_S * 1.5)
        # Still subscribed and relaying: the linger's end did not drop a session that has a socket.
        await publish_events(nc, session_id, [context_event(session_id, 4321, 10**6)])
        assert (await next_frame(second))["data"]["used"] == 4321


async def test_a_peer_that_never_reads_does_not_hold_up_others(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, nc: NATS, session_id: str
) -> None:
    # Large frames and no throttle fill the stuck peer's buffers quickly.
    padding = "x" * 64 * 1024
    count = 200
    async with make_edge(throttle_ms=0, slow_socket_timeout=0.5) as edge:
        stuck = await RawSocket.connect(edge.url, session_id, receive_buffer=4096)
        try:
            async with http.ws_connect(ws_url(edge.url, session_id), max_msg_size=0) as ws:
                await next_frame(ws)
                events = [context_event(session_id, n, n, model=padding) for n in range(1, count + 1)]
                await publish_events(nc, session_id, events)
                frames = await frames_until(ws, used_is(count))
                used = [frame["data"]["used"] for frame in frames]
                assert used == sorted(set(used))

                # Not a byte read from the stuck socket until the edge has dropped it: reading would unstick it.
                await eventually(lambda: metric(edge, "connections") == 1)
                await stuck.wait_closed_by_server()
                # The normal client is still served after its stuck neighbour was dropped.
                await publish_events(nc, session_id, [context_event(session_id, count + 1, count + 1)])
                assert (await next_frame(ws))["data"]["used"] == count + 1
            assert metric(edge, "slow_sockets_closed_total") == 1
        finally:
            stuck.close()
