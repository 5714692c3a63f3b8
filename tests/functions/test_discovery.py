"""nats micro discovery: $SRV.PING, INFO and STATS for the service "ctxmeter"."""

from __future__ import annotations

import json
from typing import Any

from nats.aio.client import Client as NATS

import ctxmeter
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.subjects import ContextOp
from tests.functions.helpers import call, collect_replies

ENDPOINT_SUBJECTS = {
    "count": "ctxmeter.tokens.count",
    "draft": "ctxmeter.tokens.draft.*",
    "get": "ctxmeter.context.get.*",
    "set": "ctxmeter.context.set.*",
    "add": "ctxmeter.context.add.*",
    "free": "ctxmeter.context.free.*",
    "usage": "ctxmeter.context.usage.*",
    "reset": "ctxmeter.context.reset.*",
    "compact": "ctxmeter.context.compact.*",
    "history": "ctxmeter.context.history.*",
    "models": "ctxmeter.models",
}


async def _one(nc: NATS, subject: str) -> dict[str, Any]:
    # Ask for two within a short window: exactly one instance (this test's) must answer.
    replies = await collect_replies(nc, subject, b"", want=2, within=0.3)
    assert len(replies) == 1, [reply.data for reply in replies]
    decoded: dict[str, Any] = json.loads(replies[0].data)
    return decoded


async def test_ping(nc: NATS, functions: FunctionsRuntime) -> None:
    for subject in ("$SRV.PING", "$SRV.PING.ctxmeter"):
        ping = await _one(nc, subject)
        assert ping["type"] == "io.nats.micro.v1.ping_response"
        assert (ping["name"], ping["version"]) == ("ctxmeter", ctxmeter.__version__)
        assert ping["id"]
    assert subjects.service_ping() == "$SRV.PING.ctxmeter"
    by_id = await _one(nc, f"$SRV.PING.ctxmeter.{ping['id']}")
    assert by_id["id"] == ping["id"]


async def test_info_lists_every_endpoint_in_the_queue_group(nc: NATS, functions: FunctionsRuntime) -> None:
    info = await _one(nc, "$SRV.INFO.ctxmeter")
    assert info["type"] == "io.nats.micro.v1.info_response"
    assert info["name"] == "ctxmeter"
    assert info["description"]
    assert info["metadata"]["encodings"] == "o200k_base,cl100k_base"
    endpoints = {endpoint["name"]: endpoint for endpoint in info["endpoints"]}
    assert {name: endpoint["subject"] for name, endpoint in endpoints.items()} == ENDPOINT_SUBJECTS
    assert {endpoint["queue_group"] for endpoint in endpoints.values()} == {"ctxmeter"}
    for name, endpoint in endpoints.items():
        assert endpoint["metadata"]["description"]
        changes_state = name not in ("count", "get", "history", "models")
        assert endpoint["metadata"]["accepts_publish"] == str(changes_state).lower()


async def test_stats_count_requests_and_errors_per_endpoint(
    nc: NATS, functions: FunctionsRuntime, session_id: str
) -> None:
    for _ in range(3):
        await call(nc, subjects.tokens_count(), {"text": "hello"})
    await call(nc, subjects.tokens_count(), {"text": 1})
    for _ in range(2):
        await call(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": 1})
    for payload in ({"tokens": -1}, b"{", {"tokens": 1.5}):
        await call(nc, subjects.context(ContextOp.ADD, session_id), payload)
    await call(nc, "ctxmeter.context.get.é", {})

    stats = await _one(nc, "$SRV.STATS.ctxmeter")
    assert stats["type"] == "io.nats.micro.v1.stats_response"
    assert stats["name"] == "ctxmeter"
    by_name = {endpoint["name"]: endpoint for endpoint in stats["endpoints"]}
    assert set(by_name) == set(ENDPOINT_SUBJECTS)
    assert (by_name["count"]["num_requests"], by_name["count"]["num_errors"]) == (4, 1)
    assert (by_name["add"]["num_requests"], by_name["add"]["num_errors"]) == (5, 3)
    assert (by_name["get"]["num_requests"], by_name["get"]["num_errors"]) == (1, 1)
    assert by_name["add"]["last_error"]
    assert by_name["get"]["last_error"].startswith("invalid_session_id")
    for name in ("set", "free", "usage", "reset", "draft"):
        assert (by_name[name]["num_requests"], by_name[name]["num_errors"]) == (0, 0)
    assert by_name["count"]["processing_time"] > 0
    assert by_name["count"]["subject"] == "ctxmeter.tokens.count"
