"""The bucket is the authority on revisions: a forged or stale-bucket revision never shuts the truth out,
and what reaches a browser is always a valid event of its session."""

from __future__ import annotations

import aiohttp
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ctxmeter.bucket import open_bucket
from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from tests.edge.helpers import context_event, frames_until, metric, next_frame, publish_events, used_is, ws_url
from ws_edge.app import EdgeServer

FORGED_REVISION = 2**62


async def post(http: aiohttp.ClientSession, edge: EdgeServer, session_id: str, used: int) -> None:
    async with http.post(f"{edge.url}/api/counters/context/{session_id}", json={"used": used}) as response:
        assert response.status == 200, await response.text()


async def test_a_forged_revision_does_not_lock_a_session(
    edge: EdgeServer, http: aiohttp.ClientSession, nc: NATS, session_id: str
) -> None:
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        await publish_events(nc, session_id, [context_event(session_id, 666, FORGED_REVISION)])
        assert (await next_frame(ws))["data"]["used"] == 666  # relayed: it is a valid event
        # The next genuine change is older than the forged revision: the bucket decides, and it wins.
        await post(http, edge, session_id, 10)
        await frames_until(ws, used_is(10))
        await post(http, edge, session_id, 11)
        await frames_until(ws, used_is(11))
        # A socket that joins now gets the truth first and then every change.
        async with http.ws_connect(ws_url(edge.url, session_id)) as late:
            assert (await next_frame(late))["data"]["used"] == 11
            await post(http, edge, session_id, 12)
            await frames_until(late, used_is(12))
            await frames_until(ws, used_is(12))
    assert metric(edge, "revisions_reset_total") >= 1


async def test_a_bucket_made_anew_does_not_lock_a_session(
    functions: FunctionsRuntime,
    make_edge: object,
    edge: EdgeServer,
    http: aiohttp.ClientSession,
    js: JetStreamContext,
    kv: KeyValue,
    settings: Settings,
    session_id: str,
) -> None:
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        for used in range(1, 30):
            await post(http, edge, session_id, used)
        await frames_until(ws, used_is(29))
        # The bucket is deleted and made again: revisions start over at 1.
        await js.delete_key_value(settings.kv_bucket)
        await open_bucket(js, settings)
        await post(http, edge, session_id, 5)
        await frames_until(ws, used_is(5))
        await post(http, edge, session_id, 6)
        await frames_until(ws, used_is(6))


async def test_events_that_break_the_schema_never_reach_a_socket(
    edge: EdgeServer, http: aiohttp.ClientSession, nc: NATS, session_id: str
) -> None:
    good = context_event(session_id, 7, 7)
    bad = [
        good.replace(b'"used":7', b'"used":-7'),  # a negative count
        good.replace(b'"used":7', b'"used":"7"'),  # a string
        good.replace(b'"percentage":0.0', b'"percentage":400.0'),
        good.replace(b'"context_update"', b'"surprise"', 1),
        good[:-1] + b',"script":"<img onerror=alert(1)>"}',  # an unknown field
        good.replace(session_id.encode(), b"someone-else"),
    ]
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        await publish_events(nc, session_id, [*bad, context_event(session_id, 8, 8)])
        assert (await next_frame(ws))["data"]["used"] == 8
    assert metric(edge, "bad_events_dropped_total") == len(bad)
