"""The sessions overview: the list nearest to compaction first, its socket, its index and its auth."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from nats.js.kv import KeyValue

from ctxmeter.limits import OVERVIEW_LIMIT_MAX
from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextUsage, SessionRemovedEvent, SessionsReply
from tests.edge.conftest import EdgeFactory
from tests.edge.helpers import Frame, close_code, eventually, frames_until, metric, token
from tests.edge.test_limits import handshake_status
from ws_edge.app import EdgeServer
from ws_edge.keys import OVERVIEW

SECRET = "test-secret-with-enough-length-for-hs256"


def list_url(edge: EdgeServer, **query: str) -> str:
    url = f"{edge.url}/api/counters/sessions"
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def socket_url(edge: EdgeServer, **query: str) -> str:
    url = edge.url.replace("http://", "ws://", 1) + "/api/ws/sessions"
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


async def set_context(http: aiohttp.ClientSession, edge: EdgeServer, sid: str, **body: Any) -> dict[str, Any]:
    async with http.post(f"{edge.url}/api/counters/context/{sid}", json=body) as reply:
        assert reply.status == 200, await reply.text()
        result: dict[str, Any] = await reply.json()
        return result


async def get_list(http: aiohttp.ClientSession, url: str, **headers: str) -> dict[str, Any]:
    async with http.get(url, headers=headers) as reply:
        assert reply.status == 200, await reply.text()
        body: dict[str, Any] = await reply.json()
        return body


def ids(reply: dict[str, Any]) -> list[str]:
    return [usage["session_id"] for usage in reply["sessions"]]


async def test_the_list_is_nearest_to_compaction_first(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    # left: 90,000; 10,000; 0 (over the compaction point); 40,000 (compact_at below the window).
    sessions = {
        f"{session_id}-a": {"used": 10_000, "total": 100_000},
        f"{session_id}-b": {"used": 90_000, "total": 100_000},
        f"{session_id}-c": {"used": 120_000, "total": 128_000, "reserved": 8_000},
        f"{session_id}-d": {"used": 60_000, "total": 200_000, "compact_at": 100_000},
    }
    for sid, body in sessions.items():
        await set_context(http, edge, sid, **body)

    reply = await get_list(http, list_url(edge, sort="left", limit="10"))
    SessionsReply.model_validate_json(json.dumps(reply), strict=True)
    assert ids(reply) == [f"{session_id}-{x}" for x in "cbda"]
    assert [usage["left"] for usage in reply["sessions"]] == [0, 10_000, 40_000, 90_000]
    assert reply["total"] == 4
    for usage in reply["sessions"]:
        ContextUsage.model_validate_json(json.dumps(usage), strict=True)  # the contract's shape
        # Exactly what the session's own route says.
        assert usage == await get_list(http, f"{edge.url}/api/counters/context/{usage['session_id']}")

    # The default sort is by left; limit cuts the list, not the total.
    reply = await get_list(http, list_url(edge, limit="2"))
    assert ids(reply) == [f"{session_id}-c", f"{session_id}-b"]
    assert reply["total"] == 4


async def test_the_list_follows_changes_deletes_and_new_sessions_without_reading_the_bucket(
    edge: EdgeServer, http: aiohttp.ClientSession, kv: KeyValue, session_id: str
) -> None:
    first, second = f"{session_id}-1", f"{session_id}-2"
    await set_context(http, edge, first, used=10, total=100)
    await set_context(http, edge, second, used=50, total=100)
    assert ids(await get_list(http, list_url(edge))) == [second, first]
    index = edge.app[OVERVIEW].index

    # Changes reach the index by the watch: the order flips, a new session appears, a deleted one goes.
    await set_context(http, edge, first, used=95, total=100)
    await eventually(lambda: index.entries[first].left == 5)
    third = f"{session_id}-3"
    await set_context(http, edge, third, used=99, total=100)
    await kv.delete(subjects.context_key(second))
    await eventually(lambda: second not in index.entries and third in index.entries)
    reply = await get_list(http, list_url(edge))
    assert ids(reply) == [third, first]
    assert reply["total"] == 2


@pytest.mark.parametrize(
    "query",
    [
        "sort=used",
        "sort=",
        "limit=0",
        f"limit={OVERVIEW_LIMIT_MAX + 1}",
        "limit=-1",
        "limit=ten",
        "limit=1&limit=2",
        "sort=left&sort=left",
        "order=left",
    ],
)
async def test_bad_query_parameters_are_refused(edge: EdgeServer, http: aiohttp.ClientSession, query: str) -> None:
    async with http.get(f"{edge.url}/api/counters/sessions?{query}") as reply:
        assert reply.status == 400
        body = await reply.json()
        assert body["error"]["code"] == "invalid_request"
        assert len(body["error"]["message"]) < 200
    # Refused before the index: nothing was started for it.
    assert edge.app[OVERVIEW].index.entries == {}


async def test_a_hostile_sort_value_is_not_echoed_whole(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    async with http.get(list_url(edge, sort="x" * 5000)) as reply:
        assert reply.status == 400
        assert len(await reply.text()) < 500


async def test_the_index_costs_nothing_until_asked(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    await set_context(http, edge, session_id, used=1, total=10)
    index = edge.app[OVERVIEW].index
    assert index.entries == {}
    await get_list(http, list_url(edge))
    assert list(index.entries) == [session_id]


async def test_the_socket_relays_every_session_coalesced(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, kv: KeyValue
) -> None:
    quiet, busy = f"{session_id}-quiet", f"{session_id}-busy"
    async with http.ws_connect(socket_url(edge)) as ws:
        await eventually(lambda: len(edge.app[OVERVIEW].feed.peers) == 1)
        sent_before = metric(edge, "frames_sent_total")
        await set_context(http, edge, quiet, used=7, total=100)
        changes = 30
        for used in range(1, changes + 1):
            await set_context(http, edge, busy, used=used, total=100)

        def last_of_busy(frame: Frame) -> bool:
            return frame["session_id"] == busy and frame["data"]["used"] == changes

        frames = await frames_until(ws, last_of_busy)
        assert {frame["type"] for frame in frames} == {"context_update"}
        assert any(frame["session_id"] == quiet and frame["data"]["used"] == 7 for frame in frames)
        busy_used = [frame["data"]["used"] for frame in frames if frame["session_id"] == busy]
        assert busy_used == sorted(busy_used)
        # Coalesced per session with the throttle: far fewer frames than changes.
        assert len(busy_used) < changes
        assert metric(edge, "frames_sent_total") > sent_before

        # A session that leaves the bucket is said to be gone.
        await kv.delete(subjects.context_key(quiet))
        removed = await frames_until(ws, lambda frame: frame["type"] == "session_removed")
        assert removed[-1] == {"type": "session_removed", "session_id": quiet}
        SessionRemovedEvent.model_validate_json(json.dumps(removed[-1]), strict=True)
        # Pings work as on a session's socket.
        await ws.send_str("ping")
        assert (await frames_until(ws, lambda frame: frame["type"] == "pong"))[-1] == {"type": "pong"}
    await eventually(lambda: not edge.app[OVERVIEW].feed.peers)


async def test_sessions_aged_out_by_the_bucket_leave_the_index(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, kv: KeyValue, session_id: str
) -> None:
    del functions
    async with make_edge() as edge:
        await set_context(http, edge, session_id, used=1, total=10)
        await get_list(http, list_url(edge))
        index = edge.app[OVERVIEW].index
        settings: Settings = edge.settings
        # The time the bucket ages the key out is its write time (nats-py's entry time) plus the TTL.
        assert abs(index.entries[session_id].expires_at - (time.time() + settings.kv_ttl)) < 30
        async with http.ws_connect(socket_url(edge)) as ws:
            await eventually(lambda: len(edge.app[OVERVIEW].feed.peers) == 1)
            index.entries[session_id].expires_at = time.time() - 1  # as if the TTL had run out
            index._sweep()
            assert session_id not in index.entries
            frames = await frames_until(ws, lambda frame: frame["type"] == "session_removed")
            assert frames[-1]["session_id"] == session_id


async def test_an_overview_socket_that_leaves_early_is_forgotten(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    for _ in range(3):
        async with http.ws_connect(socket_url(edge)):
            pass
    await eventually(lambda: not edge.app[OVERVIEW].feed.peers)


async def test_the_overview_needs_a_token_for_every_session(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    del functions
    async with make_edge(jwt_secret=SECRET) as edge:
        scoped = token(SECRET, [session_id])
        async with http.get(list_url(edge)) as reply:
            assert reply.status == 401
        async with http.get(list_url(edge), headers={"Authorization": f"Bearer {scoped}"}) as reply:
            assert reply.status == 403
            assert (await reply.json())["error"]["code"] == "forbidden"
        assert await handshake_status(http, socket_url(edge)) == 401
        assert await handshake_status(http, socket_url(edge, token=scoped)) == 403
        for sessions in (["*"], "*"):
            everything = token(SECRET, sessions)
            await get_list(http, list_url(edge), Authorization=f"Bearer {everything}")
            await get_list(http, list_url(edge, token=everything))
            async with http.ws_connect(socket_url(edge, token=everything)) as ws:
                await ws.send_str("ping")
                assert (await ws.receive_json())["type"] == "pong"
        # An open overview socket closes when its token expires, as a session's does.
        short = token(SECRET, ["*"], expires_in=1)
        async with http.ws_connect(socket_url(edge, token=short)) as ws:
            assert await close_code(ws) == 1008
        # The page itself is public, like the demo page: it reads the API with the page's ?token=.
        async with http.get(f"{edge.url}/sessions") as reply:
            assert reply.status == 200
            assert "text/html" in reply.headers["Content-Type"]


async def test_the_list_is_unavailable_before_the_bucket_exists(
    make_edge: EdgeFactory, http: aiohttp.ClientSession, settings: Settings, nc: Any
) -> None:
    # No functions: nobody has made the bucket yet.
    async with make_edge(kv_bucket=f"missing{time.time_ns()}", request_timeout=1.0) as edge:
        async with http.get(list_url(edge)) as reply:
            assert reply.status == 503
            assert (await reply.json())["error"]["code"] == "unavailable"
        async with http.ws_connect(socket_url(edge)) as ws:
            assert await close_code(ws) == 1013


async def test_many_sessions_are_listed_in_order(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    count = 120
    await asyncio.gather(
        *(set_context(http, edge, f"{session_id}-{n:03}", used=n * 100, total=100_000) for n in range(count))
    )
    reply = await get_list(http, list_url(edge, limit="50"))
    assert reply["total"] == count
    lefts = [usage["left"] for usage in reply["sessions"]]
    assert len(lefts) == 50
    assert lefts == sorted(lefts)
    assert lefts[0] == 100_000 - (count - 1) * 100


async def test_static_files_load_as_modules_on_allowed_origins_only(
    edge: EdgeServer, http: aiohttp.ClientSession
) -> None:
    # A page of another (allowed) origin embeds the elements with a module script, which needs CORS.
    url = f"{edge.url}/static/ctxmeter-elements.js"
    async with http.get(url, headers={"Origin": "http://localhost:5173"}) as reply:
        assert reply.status == 200
        assert reply.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
        assert "customElements.define" in await reply.text()
    async with http.get(url, headers={"Origin": "https://evil.example"}) as reply:
        assert "Access-Control-Allow-Origin" not in reply.headers


async def test_the_index_can_be_built_when_the_edge_starts(
    make_edge: EdgeFactory, functions: FunctionsRuntime, http: aiohttp.ClientSession, session_id: str
) -> None:
    del functions
    async with make_edge() as first:
        await set_context(http, first, session_id, used=3, total=10)
    async with make_edge(sessions_index_at_start=True) as edge:
        # No overview request: the index reads the bucket as the edge starts.
        await eventually(lambda: session_id in edge.app[OVERVIEW].index.entries)


async def test_an_empty_bucket_lists_no_session(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    assert await get_list(http, list_url(edge)) == {"sessions": [], "total": 0}
