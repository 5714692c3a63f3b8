"""A connect storm reads each session's state once: a new socket of a session whose bucket read is under
``STATE_REUSE_S`` old gets what its other sockets hold, and one after that reads the bucket again."""

from __future__ import annotations

import asyncio

import aiohttp
from nats.js.kv import KeyValue

from ctxmeter.limits import STATE_REUSE_S
from schemas import subjects
from tests.edge.helpers import frames_until, metric, next_frame, used_is, ws_url
from ws_edge.app import EdgeServer


async def test_a_new_socket_reuses_a_fresh_read_and_reads_again_after(
    edge: EdgeServer, http: aiohttp.ClientSession, kv: KeyValue, session_id: str
) -> None:
    async with http.post(f"{edge.url}/api/counters/context/{session_id}", json={"used": 5}) as response:
        assert response.status == 200, await response.text()
    async with http.ws_connect(ws_url(edge.url, session_id)) as first:
        assert (await next_frame(first))["data"]["used"] == 5
        # Changed behind the edge's back (no event): only a read of the bucket can see it.
        await kv.delete(subjects.context_key(session_id))
        async with http.ws_connect(ws_url(edge.url, session_id)) as second:
            assert (await next_frame(second))["data"]["used"] == 5
        assert metric(edge, "states_reused_total") == 1
        await asyncio.sleep(STATE_REUSE_S + 0.1)
        async with http.ws_connect(ws_url(edge.url, session_id)) as third:
            assert (await next_frame(third))["data"]["used"] == 0
        assert metric(edge, "states_reused_total") == 1
        # What the session holds is what every socket gets next, the reused one included.
        async with http.ws_connect(ws_url(edge.url, session_id)) as fourth:
            await next_frame(fourth)
            async with http.post(f"{edge.url}/api/counters/context/{session_id}", json={"used": 9}) as response:
                assert response.status == 200
            await frames_until(fourth, used_is(9))
            await frames_until(first, used_is(9))
