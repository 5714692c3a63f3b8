"""The HTTP API through real NATS: the contract's routes, error mapping, CORS, health and metrics."""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.models import ContextUsage, ErrorReply, TokenCount, TokenUsage
from tests.edge.conftest import EdgeFactory
from tests.edge.helpers import next_frame, ws_url
from tests.natsproc import NatsProcess
from ws_edge.app import EdgeServer

# Path segments that are not session ids: a subject token separator, wildcards, a space, too long,
# non-ASCII, a slash (encoded and not) and nothing at all.
INVALID_IDS = ["a.b", "a*", "a>", "a%20b", "x" * 129, "%C3%A9", "a%2Fb", "a/b", "", "%00", "a%2Eb"]


async def expect_error(response: aiohttp.ClientResponse, status: int, code: str) -> ErrorReply:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    reply = ErrorReply.model_validate(await response.json())
    assert reply.error.code == code
    assert reply.error.message
    return reply


async def test_context_set_and_get(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    url = f"{edge.url}/api/counters/context/{session_id}"
    async with http.get(url) as r:
        zero = ContextUsage.model_validate(await r.json())
    assert (zero.used, zero.revision) == (0, 0)
    async with http.post(url, json={"used": 160_000, "total": 200_000}) as r:
        assert r.status == 200
        posted = ContextUsage.model_validate(await r.json())
    assert (posted.percentage, posted.level) == (80.0, "warning")
    async with http.get(url) as r:
        assert ContextUsage.model_validate(await r.json()) == posted


async def test_context_from_query_parameters(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    url = f"{edge.url}/api/counters/context/{session_id}"
    async with http.post(url, params={"used": "450", "total": "500"}) as r:
        assert r.status == 200
        usage = ContextUsage.model_validate(await r.json())
    assert (usage.used, usage.total, usage.level) == (450, 500, "critical")


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"used": "1.5"}, "invalid_request"),
        ({"used": "abc"}, "invalid_request"),
        ({"used": ""}, "invalid_request"),
        ({"used": " 3"}, "invalid_request"),
        ({"used": "1_000"}, "invalid_request"),
        ({"used": "٣"}, "invalid_request"),  # an Arabic-Indic digit: int() would take it
        ({"used": "9" * 40}, "invalid_request"),
        ({"used": "-5"}, "invalid_request"),  # parsed, then refused by the functions
        ({"used": "10", "total": "0"}, "invalid_request"),
        ({}, "invalid_request"),
    ],
)
async def test_invalid_query_parameters(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, params: dict[str, str], code: str
) -> None:
    async with http.post(f"{edge.url}/api/counters/context/{session_id}", params=params) as r:
        await expect_error(r, 400, code)
    async with http.get(f"{edge.url}/api/counters/context/{session_id}") as r:
        assert (await r.json())["revision"] == 0, "bad input changed state"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"used": "5"}', 400, "invalid_request"),
        (b'{"used": 5.0}', 400, "invalid_request"),
        (b'{"used": 5, "totl": 9}', 400, "invalid_request"),
        (b'{"used": 5, "model": "no-such-model"}', 404, "unknown_model"),
    ],
)
async def test_function_errors_keep_status_and_body(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, body: bytes, status: int, code: str
) -> None:
    headers = {"Content-Type": "application/json"}
    async with http.post(f"{edge.url}/api/counters/context/{session_id}", data=body, headers=headers) as r:
        await expect_error(r, status, code)


async def test_tokens_draft_and_count(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    async with http.post(
        f"{edge.url}/api/counters/tokens/{session_id}", json={"text": "hello world", "model": "gpt-4o", "max": 10}
    ) as r:
        assert r.status == 200
        draft = TokenUsage.model_validate(await r.json())
    assert (draft.count, draft.max, draft.percentage, draft.warning) == (2, 10, 20.0, False)

    messages: list[dict[str, Any]] = [{"role": "user", "content": "hello world"}]
    async with http.post(f"{edge.url}/api/counters/tokens", json={"messages": messages, "model": "gpt-4"}) as r:
        assert r.status == 200
        counted = TokenCount.model_validate(await r.json())
    # 3 per message + "user" (1) + "hello world" (2) + 3 priming the reply.
    assert (counted.count, counted.exact) == (3 + 1 + 2 + 3, True)

    async with http.post(f"{edge.url}/api/counters/tokens", json={"text": "x", "model": "nope"}) as r:
        await expect_error(r, 404, "unknown_model")


async def test_draft_is_relayed(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        async with http.post(f"{edge.url}/api/counters/tokens/{session_id}", json={"text": "one two three"}) as r:
            posted = await r.json()
        frame = await next_frame(ws)
    assert frame["type"] == "token_count"
    assert frame["data"] == posted


@pytest.mark.parametrize("bad", INVALID_IDS)
async def test_invalid_session_ids_are_400(edge: EdgeServer, http: aiohttp.ClientSession, bad: str) -> None:
    for method, path in [
        ("GET", f"/api/counters/context/{bad}"),
        ("POST", f"/api/counters/context/{bad}"),
        ("POST", f"/api/counters/tokens/{bad}"),
    ]:
        async with http.request(method, f"{edge.url}{path}", json={"used": 1, "text": "x"}) as r:
            await expect_error(r, 400, "invalid_session_id")


async def test_invalid_session_ids_never_reach_nats(
    edge: EdgeServer, http: aiohttp.ClientSession, nc: Any, session_id: str
) -> None:
    """``a.b`` as a path segment must not become ``ctxmeter.context.set.a.b`` (another subject)."""
    received: list[str] = []

    async def record(msg: Any) -> None:
        received.append(msg.subject)

    probe = await nc.subscribe("ctxmeter.>", cb=record)
    await nc.flush()
    for bad in INVALID_IDS:
        async with http.post(f"{edge.url}/api/counters/context/{bad}", json={"used": 1}) as r:
            assert r.status == 400
    # A valid request afterwards: once its subject is seen, every earlier one would have been too.
    async with http.post(f"{edge.url}/api/counters/context/{session_id}", json={"used": 1}) as r:
        assert r.status == 200
    await probe.unsubscribe()
    assert all(subject.endswith(f".{session_id}") for subject in received), received


async def test_no_functions_is_503(own_nats: NatsProcess, make_edge: EdgeFactory, http: aiohttp.ClientSession) -> None:
    async with make_edge(nats_url=own_nats.url, request_timeout=1.0) as edge:
        async with http.post(f"{edge.url}/api/counters/context/abc", json={"used": 1}) as r:
            await expect_error(r, 503, "unavailable")
        async with http.get(f"{edge.url}/readyz") as r:
            await expect_error(r, 503, "unavailable")
        async with http.get(f"{edge.url}/healthz") as r:
            assert r.status == 200


async def test_health_ready_and_metrics(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    async with http.get(f"{edge.url}/healthz") as r:
        assert r.status == 200
    async with http.get(f"{edge.url}/readyz") as r:
        assert r.status == 200
        assert (await r.json())["status"] == "ready"
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        await next_frame(ws)
        async with http.post(f"{edge.url}/api/counters/context/{session_id}", json={"used": 3}) as r:
            assert r.status == 200
        await next_frame(ws)
        async with http.get(f"{edge.url}/metrics") as r:
            assert r.status == 200
            assert r.content_type == "text/plain"
            text = await r.text()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("ctxmeter_edge_connections", ())] == 1
    assert samples[("ctxmeter_edge_sessions", ())] == 1
    assert samples[("ctxmeter_edge_frames_sent_total", ())] >= 2
    route = ("route", "/api/counters/context/{sid}")
    http_key = ("ctxmeter_edge_http_request_duration_seconds_count", (("method", "POST"), route, ("status", "200")))
    assert samples[http_key] == 1
    nats_key = ("ctxmeter_edge_nats_request_duration_seconds_count", (("operation", "context.set"), ("outcome", "ok")))
    assert samples[nats_key] == 1
    for name in ("slow_sockets_closed_total", "frames_coalesced_total", "nats_reconnects_total"):
        assert (f"ctxmeter_edge_{name}", ()) in samples


async def test_cors(make_edge: EdgeFactory, functions: Any, http: aiohttp.ClientSession, session_id: str) -> None:
    allowed = "https://app.example"
    async with make_edge(allowed_origins=[allowed]) as edge:
        url = f"{edge.url}/api/counters/context/{session_id}"
        async with http.get(url, headers={"Origin": allowed}) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == allowed
        async with http.get(url, headers={"Origin": "https://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
        preflight = {"Origin": allowed, "Access-Control-Request-Method": "POST"}
        async with http.options(url, headers=preflight) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == allowed
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        async with http.options(url, headers={**preflight, "Origin": "https://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
        # Errors carry the header too, so the page can read them.
        async with http.get(f"{edge.url}/api/counters/context/a.b", headers={"Origin": allowed}) as r:
            assert r.status == 400
            assert r.headers["Access-Control-Allow-Origin"] == allowed


async def test_unknown_api_path_and_method_are_json(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{edge.url}/api/counters/nothing") as r:
        await expect_error(r, 404, "not_found")
    async with http.delete(f"{edge.url}/api/counters/context/abc") as r:
        await expect_error(r, 405, "invalid_request")
        assert "POST" in r.headers["Allow"]


async def test_plain_get_on_the_socket_path_is_400(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{edge.url}/api/ws/counters/abc") as r:
        await expect_error(r, 400, "invalid_request")


async def test_demo_page(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{edge.url}/?token=t", allow_redirects=False) as r:
        assert r.status == 302
        location = r.headers["Location"]
    assert "token=t" in location
    session = location.split("session=", 1)[1].split("&", 1)[0]
    async with http.get(f"{edge.url}/api/counters/context/{session}") as r:
        assert r.status == 200, "the fresh session id is a valid one"
    async with http.get(f"{edge.url}/?session={quote('a b')}") as r:
        await expect_error(r, 400, "invalid_session_id")
    async with http.get(f"{edge.url}/?session={session}") as r:
        # The demo page ships in the package: it is always served.
        assert r.status == 200
        assert r.content_type == "text/html"


async def test_bodies_over_the_limit_are_413(
    make_edge: EdgeFactory, functions: Any, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with make_edge(max_text_bytes=1000) as edge:
        url = f"{edge.url}/api/counters/tokens/{session_id}"
        # Over the edge's own bound (twice the text limit, for JSON escaping): refused before NATS.
        async with http.post(url, json={"text": "x" * 3000}) as r:
            await expect_error(r, 413, "payload_too_large")
    # Within the edge's bound, the functions' own limit (4 MiB by default) decides.
    async with make_edge() as big:
        body = io.BytesIO(json.dumps({"text": "x" * (4 * 1024 * 1024 + 1)}).encode())
        headers = {"Content-Type": "application/json"}
        async with http.post(f"{big.url}/api/counters/tokens/{session_id}", data=body, headers=headers) as r:
            await expect_error(r, 413, "payload_too_large")
