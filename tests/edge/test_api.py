"""HTTP for every change: the per-operation routes, history and models, Idempotency-Key, and query
parameters held to the same rules as body fields."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from schemas.idempotency import DUPLICATE_HEADER, HTTP_KEY_HEADER
from schemas.models import ContextHistory, ContextUsage, ErrorReply, ModelsReply
from ws_edge.app import EdgeServer


def context_url(edge: EdgeServer, session_id: str, op: str = "") -> str:
    return f"{edge.url}/api/counters/context/{session_id}" + (f"/{op}" if op else "")


async def post(
    http: aiohttp.ClientSession, url: str, body: Any = None, *, key: str | None = None
) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
    headers = {HTTP_KEY_HEADER: key} if key is not None else {}
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json(), response.headers


@pytest.mark.parametrize(
    ("op", "body", "used"),
    [
        ("add", {"tokens": 50}, 150),
        ("free", {"tokens": 30}, 70),
        ("usage", {"usage": {"input_tokens": 900, "output_tokens": 9}}, 909),
        ("reset", None, 0),
        ("compact", {"used": 20}, 20),
    ],
)
async def test_every_change_over_http(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, op: str, body: Any, used: int
) -> None:
    assert (await post(http, context_url(edge, session_id), {"used": 100, "total": 1_000}))[0] == 200
    status, reply, _ = await post(http, context_url(edge, session_id, op), body)
    assert status == 200, reply
    assert ContextUsage.model_validate(reply).used == used


async def test_changes_over_http_keep_the_functions_errors(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    status, reply, _ = await post(http, context_url(edge, session_id, "add"), {"tokens": -1})
    assert (status, ErrorReply.model_validate(reply).error.code) == (400, "invalid_request")
    status, reply, _ = await post(http, context_url(edge, "bad.id", "add"), {"tokens": 1})
    assert (status, ErrorReply.model_validate(reply).error.code) == (400, "invalid_session_id")
    async with http.post(context_url(edge, session_id, "nope"), json={}) as response:
        assert response.status in (400, 404)


async def test_idempotency_key_over_http(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    url = context_url(edge, session_id, "add")
    first = await post(http, url, {"tokens": 5}, key="retry-me")
    second = await post(http, url, {"tokens": 5}, key="retry-me")
    assert (first[0], second[0]) == (200, 200)
    assert DUPLICATE_HEADER not in first[2]
    assert second[2][DUPLICATE_HEADER] == "true"
    assert ContextUsage.model_validate(second[1]).used == 5
    # The seed's route takes a key too.
    seed = await post(http, context_url(edge, session_id), {"used": 1}, key="set-1")
    again = await post(http, context_url(edge, session_id), {"used": 1}, key="set-1")
    assert DUPLICATE_HEADER not in seed[2] and again[2][DUPLICATE_HEADER] == "true"
    for bad in ("k" * 129, "tab\there"):
        status, reply, _ = await post(http, url, {"tokens": 5}, key=bad)
        assert (status, ErrorReply.model_validate(reply).error.code) == (400, "invalid_request")
    async with http.get(context_url(edge, session_id)) as response:
        assert ContextUsage.model_validate(await response.json()).used == 1


async def test_history_and_models_over_http(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    for used in (10, 20, 30):
        await post(http, context_url(edge, session_id), {"used": used})
    async with http.get(context_url(edge, session_id, "history"), params={"limit": "2"}) as response:
        assert response.status == 200
        history = ContextHistory.model_validate(await response.json())
    assert [point.used for point in history.points] == [20, 30]
    async with http.get(context_url(edge, session_id, "history"), params={"limit": "5000"}) as response:
        assert response.status == 400
    async with http.get(f"{edge.url}/api/counters/models") as response:
        assert response.status == 200
        names = {model.name for model in ModelsReply.model_validate(await response.json()).models}
    assert {"gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"} <= names


@pytest.mark.parametrize(
    ("method", "path", "query", "body"),
    [
        ("POST", "", "used=5&totl=10", None),  # a typo is not dropped silently
        ("POST", "", "used=1&used=2", None),  # nor is a repeated value settled by picking one
        ("POST", "", "used=5", {"used": 6}),  # the fields come from the body or the query, not both
        ("GET", "", "verbose=1", None),
        ("POST", "/add", "tokens=5", {"tokens": 5}),
        ("GET", "/history", "limit=2&limit=3", None),
    ],
)
async def test_query_parameters_follow_the_body_rules(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str, method: str, path: str, query: str, body: Any
) -> None:
    url = f"{context_url(edge, session_id)}{path}?{query}"
    async with http.request(method, url, json=body) as response:
        assert response.status == 400
        assert ErrorReply.model_validate(await response.json()).error.code == "invalid_request"
    async with http.get(context_url(edge, session_id)) as response:
        assert ContextUsage.model_validate(await response.json()).revision == 0  # nothing changed


async def test_the_seed_query_form_still_works(edge: EdgeServer, http: aiohttp.ClientSession, session_id: str) -> None:
    async with http.post(f"{context_url(edge, session_id)}?used=5&total=10&model=gpt-4o") as response:
        assert response.status == 200
        usage = ContextUsage.model_validate(await response.json())
    assert (usage.used, usage.total, usage.model) == (5, 10, "gpt-4o")
