"""OTLP/HTTP exports to a real edge: what moves a meter, replays and reordering, partial success, and bad
input (every refusal changes nothing)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
from typing import Any

import aiohttp
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ctxmeter.limits import OTLP_MAX_BODY_BYTES, OTLP_MAX_RECORDS
from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from schemas.models import ContextHistory, ContextUsage
from tests.edge.conftest import EdgeFactory, edge_settings
from tests.edge.helpers import metric, next_frame, token, ws_url
from tests.edge.test_resilience import wait_status
from tests.natsproc import NatsProcess
from tests.otlp.helpers import claude_api_request, fixture, log, logs, span, traces
from ws_edge.app import EdgeServer

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
SECRET = "otlp-test-secret-of-at-least-32-bytes"


def genai(session: str, input_tokens: int, output_tokens: int = 0, **attrs: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.conversation.id": session,
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        **attrs,
    }


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    async with http.post(url, data=body, headers=headers or PROTOBUF) as response:
        await response.read()
        return response


async def context(http: aiohttp.ClientSession, edge: EdgeServer, session_id: str) -> ContextUsage:
    async with http.get(f"{edge.url}/api/counters/context/{session_id}") as response:
        assert response.status == 200
        return ContextUsage.model_validate_json(await response.read())


async def history(http: aiohttp.ClientSession, edge: EdgeServer, session_id: str) -> ContextHistory:
    async with http.get(f"{edge.url}/api/counters/context/{session_id}/history") as response:
        return ContextHistory.model_validate_json(await response.read())


def trace_reply(data: bytes) -> ExportTraceServiceResponse:
    reply = ExportTraceServiceResponse()
    reply.ParseFromString(data)
    return reply


# -- what moves a meter ---------------------------------------------------------------------------


async def test_an_inference_span_sets_the_meter_and_a_watching_socket_sees_it(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
        assert (await next_frame(ws))["data"]["used"] == 0
        export = traces(span(genai(session_id, 1_200, 80)))
        async with http.post(f"{edge.url}/v1/traces", data=export.SerializeToString(), headers=PROTOBUF) as response:
            assert response.status == 200
            assert response.content_type == "application/x-protobuf"
            assert not trace_reply(await response.read()).HasField("partial_success")
        frame = await next_frame(ws)
    assert frame["type"] == "context_update"
    assert (frame["data"]["used"], frame["data"]["model"], frame["data"]["estimated"]) == (1_280, "gpt-4o", False)


async def test_claude_codes_captured_export_sets_its_session(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    response = await post(http, f"{edge.url}/v1/logs", fixture("claude-code/turn.logs.pb"))
    assert response.status == 200
    usage = await context(http, edge, "3f0c7c1e-5b8a-4d7e-9a51-0c2b9e4f6a13")
    assert usage.used == 12 + 3_000 + 40
    compacted = await post(http, f"{edge.url}/v1/logs", fixture("claude-code/compact.logs.pb"))
    assert compacted.status == 200
    usage = await context(http, edge, "3f0c7c1e-5b8a-4d7e-9a51-0c2b9e4f6a13")
    assert (usage.used, usage.compactions) == (599, 1)


async def test_codexs_captured_json_export_sets_its_session(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{edge.url}/v1/logs", data=fixture("codex/exec.logs.json"), headers=JSON) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert json.loads(await response.read()) == {}
    usage = await context(http, edge, "01a241af-65ac-7510-90f4-6c3ed61b1478")
    assert (usage.model, usage.estimated) == ("gpt-5", False)
    assert usage.used in (1_500 + 120 - 64, 1_500 + 120)  # the next test says which


async def test_codexs_reasoning_tokens_are_not_context(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    """Codex's turn: 1,500 input and 120 output, 64 of them reasoning that OpenAI drops from the next turn."""
    assert (await post(http, f"{edge.url}/v1/logs", fixture("codex/exec.logs.pb"))).status == 200
    usage = await context(http, edge, "01a241ae-30ef-7f82-9a15-558a189bbce7")
    assert usage.used == 1_500 + 120 - 64


async def test_metrics_are_counted_and_move_no_meter(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    response = await post(http, f"{edge.url}/v1/metrics", fixture("claude-code/turn.metrics.pb"))
    assert response.status == 200
    assert metric(edge, "otlp_records_total", signal="metrics", outcome="accepted", reason="metric") > 0
    usage = await context(http, edge, "3f0c7c1e-5b8a-4d7e-9a51-0c2b9e4f6a13")
    assert usage.revision == 0


# -- batches, replays, reordering -----------------------------------------------------------------


async def test_a_batch_makes_one_change_per_session_its_newest_record(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    other = f"{session_id}-b"
    export = traces(
        span(genai(session_id, 300), end_ns=3_000, span_id=1),
        span(genai(session_id, 500), end_ns=5_000, span_id=2),
        span(genai(other, 70), end_ns=1_000, span_id=3),
        span(genai(session_id, 400), end_ns=4_000, span_id=4),
    )
    response = await post(http, f"{edge.url}/v1/traces", export.SerializeToString())
    assert response.status == 200
    assert (await context(http, edge, session_id)).used == 500
    assert (await context(http, edge, other)).used == 70
    assert [point.used for point in (await history(http, edge, session_id)).points] == [500]
    assert metric(edge, "otlp_records_total", signal="traces", outcome="accepted", reason="superseded") == 2


async def test_a_replayed_export_is_applied_once(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    export = traces(span(genai(session_id, 900), end_ns=9_000)).SerializeToString()
    assert (await post(http, f"{edge.url}/v1/traces", export)).status == 200
    first = await context(http, edge, session_id)
    # A reset in between: only a replay of the same record would be told apart from a new one.
    async with http.post(f"{edge.url}/api/counters/context/{session_id}/reset") as response:
        assert response.status == 200
    compressed = gzip.compress(export)
    replay = await post(http, f"{edge.url}/v1/traces", compressed, {**PROTOBUF, "Content-Encoding": "gzip"})
    assert replay.status == 200
    now = await context(http, edge, session_id)
    assert (now.used, now.revision) == (0, first.revision + 1)
    assert metric(edge, "otlp_records_total", signal="traces", outcome="accepted", reason="duplicate") == 1


async def test_an_older_export_arriving_late_changes_nothing(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    newer = logs(log(claude_api_request(session_id, input_tokens=50_000), at_ns=2_000, body="claude_code.api_request"))
    older = logs(log(claude_api_request(session_id, input_tokens=10), at_ns=1_000, body="claude_code.api_request"))
    assert (await post(http, f"{edge.url}/v1/logs", newer.SerializeToString())).status == 200
    shown = await context(http, edge, session_id)
    assert shown.used == 50_000 + 20 + 300 + 4_000
    assert (await post(http, f"{edge.url}/v1/logs", older.SerializeToString())).status == 200
    assert await context(http, edge, session_id) == shown
    assert metric(edge, "otlp_records_total", signal="logs", outcome="accepted", reason="stale") == 1


async def test_the_same_batch_through_two_edges_applies_once(
    functions: FunctionsRuntime, make_edge: EdgeFactory, http: aiohttp.ClientSession, session_id: str
) -> None:
    """An exporter retrying against another edge (behind a load balancer): the key and the time are in the
    session's state, not in an edge."""
    export = traces(span(genai(session_id, 42), end_ns=7_000)).SerializeToString()
    async with make_edge() as first, make_edge() as second:
        assert (await post(http, f"{first.url}/v1/traces", export)).status == 200
        assert (await post(http, f"{second.url}/v1/traces", export)).status == 200
        assert [point.used for point in (await history(http, first, session_id)).points] == [42]
        assert metric(second, "otlp_records_total", signal="traces", outcome="accepted", reason="duplicate") == 1


# -- partial success ----------------------------------------------------------------------------


async def test_rejected_records_are_counted_and_named_and_the_rest_applies(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    export = traces(
        span(genai("not.a.session", 10), span_id=1),
        span(genai(session_id, 10, **{"gen_ai.usage.output_tokens": -5}), span_id=2),
        span(genai(f"{session_id}-ok", 10), span_id=3),
        span({"gen_ai.operation.name": "execute_tool", "gen_ai.conversation.id": session_id}, span_id=4),
    )
    response = await post(http, f"{edge.url}/v1/traces", export.SerializeToString())
    assert response.status == 200
    async with http.post(f"{edge.url}/v1/traces", data=export.SerializeToString(), headers=PROTOBUF) as again:
        reply = trace_reply(await again.read())
    assert reply.partial_success.rejected_spans == 2
    assert "'not.a.session' is not a valid session id" in reply.partial_success.error_message
    assert "is not a token count" in reply.partial_success.error_message
    assert (await context(http, edge, f"{session_id}-ok")).used == 10
    assert (await context(http, edge, session_id)).revision == 0
    labels = {"signal": "traces", "outcome": "rejected"}
    assert metric(edge, "otlp_records_total", **labels, reason="invalid_session_id") == 2
    assert metric(edge, "otlp_records_total", **labels, reason="invalid_value") == 2


async def test_json_replies_carry_partial_success_in_json(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    body = json_format.MessageToJson(logs(log(claude_api_request("bad id"), body="claude_code.api_request")))
    async with http.post(f"{edge.url}/v1/logs", data=body, headers=JSON) as response:
        assert response.status == 200
        reply = json_format.Parse(await response.read(), ExportLogsServiceResponse())
    assert reply.partial_success.rejected_log_records == 1


async def test_otlp_json_hex_ids_are_read_as_ids(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    """OTLP/JSON writes trace and span ids as hex (not protobuf JSON's base64): the same span sent both ways
    is the same record, so the second is a duplicate."""
    export = traces(span(genai(session_id, 11), end_ns=5_000))
    document = json.loads(json_format.MessageToJson(export))
    document_span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    document_span["traceId"] = export.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    document_span["spanId"] = export.resource_spans[0].scope_spans[0].spans[0].span_id.hex()
    assert (await post(http, f"{edge.url}/v1/traces", json.dumps(document).encode(), JSON)).status == 200
    assert (await post(http, f"{edge.url}/v1/traces", export.SerializeToString())).status == 200
    assert metric(edge, "otlp_records_total", signal="traces", outcome="accepted", reason="duplicate") == 1


# -- bad input ----------------------------------------------------------------------------------


def big_logs(records: int, session_id: str) -> bytes:
    """Small records (about 60 bytes each), so the count, not the size, is what is too large."""
    record = log({"session.id": session_id, "input_tokens": 1}, body="claude_code.api_request")
    return logs(*([record] * records)).SerializeToString()


def gzip_bomb() -> bytes:
    return gzip.compress(b"\0" * (OTLP_MAX_BODY_BYTES + 1), compresslevel=9)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (the SDK refuses to build what is nested this deep)."""
    length, size = b"", len(payload)
    while True:
        byte, size = size & 0x7F, size >> 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return bytes([number << 3 | 2]) + length + payload


def deep_protobuf(depth: int) -> bytes:
    """An attribute value of arrays nested ``depth`` deep: AnyValue.array_value (5) -> ArrayValue.values (1)."""
    value = AnyValue(string_value="x").SerializeToString()
    for _ in range(depth):
        value = _field(5, _field(1, value))
    attribute = KeyValue(key="k").SerializeToString() + _field(2, value)
    record = _field(6, attribute)  # LogRecord.attributes
    return _field(1, _field(2, _field(2, record)))  # resource_logs -> scope_logs -> log_records


def deep_json(depth: int) -> bytes:
    value = '{"stringValue": "x"}'
    for _ in range(depth):
        value = '{"arrayValue": {"values": [' + value + "]}}"
    record = '{"attributes": [{"key": "k", "value": ' + value + "}]}"
    return ('{"resourceLogs": [{"scopeLogs": [{"logRecords": [' + record + "]}]}]}").encode()


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        (PROTOBUF, b"\xff\xff\xff\xff not protobuf", 400),
        (JSON, b"{not json", 400),
        (JSON, b"[1, 2]", 400),
        (JSON, b'{"resourceLogs": "no"}', 400),
        ({"Content-Type": "text/plain"}, b"{}", 415),
        ({}, b"{}", 415),
        ({**PROTOBUF, "Content-Encoding": "br"}, b"x", 415),
        ({**PROTOBUF, "Content-Encoding": "gzip"}, b"not gzip", 400),
        ({**PROTOBUF, "Content-Encoding": "gzip"}, gzip.compress(b"x" * 100)[:-9], 400),
        ({**PROTOBUF, "Content-Encoding": "gzip"}, None, 413),
        (JSON, deep_json(200), 400),
        (PROTOBUF, deep_protobuf(200), 400),
    ],
    ids=[
        "malformed-protobuf",
        "malformed-json",
        "json-array",
        "json-wrong-type",
        "text-plain",
        "no-content-type",
        "brotli",
        "not-gzip",
        "truncated-gzip",
        "gzip-bomb",
        "deep-json",
        "deep-protobuf",
    ],
)
async def test_bad_exports_are_clear_4xx_and_change_nothing(
    edge: EdgeServer,
    http: aiohttp.ClientSession,
    session_id: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
) -> None:
    async with http.post(f"{edge.url}/v1/logs", data=gzip_bomb() if body is None else body, headers=headers) as r:
        assert r.status == status
        error = (await r.json())["error"]
        assert error["code"] in {"invalid_request", "payload_too_large", "unsupported_encoding"}
        assert len(error["message"]) < 300
    async with http.get(f"{edge.url}/healthz") as healthy:
        assert healthy.status == 200


async def test_an_export_of_100000_records_is_refused_whole(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    body = gzip.compress(big_logs(100_000, session_id))
    async with http.post(
        f"{edge.url}/v1/logs", data=body, headers={**PROTOBUF, "Content-Encoding": "gzip"}
    ) as response:
        assert response.status == 413
        assert f"at most {OTLP_MAX_RECORDS} records" in (await response.json())["error"]["message"]
    assert (await context(http, edge, session_id)).revision == 0


async def test_a_one_megabyte_attribute_is_not_echoed_or_kept(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    attrs = claude_api_request(session_id, model="m" * 1_000_000)
    export = logs(log(attrs, body="claude_code.api_request"), log({"prompt": "p" * 1_000_000, "session.id": "x"}))
    body = io.BytesIO(export.SerializeToString())
    async with http.post(f"{edge.url}/v1/logs", data=body, headers=PROTOBUF) as response:
        assert response.status == 200
        assert len(await response.read()) < 2_000
    usage = await context(http, edge, session_id)
    assert usage.used == 10 + 20 + 300 + 4_000 and usage.model is None


async def test_query_parameters_are_refused(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{edge.url}/v1/traces?x=1", data=b"", headers=PROTOBUF) as response:
        assert response.status == 400


async def test_no_functions_is_503_so_the_exporter_retries(
    make_edge: EdgeFactory, http: aiohttp.ClientSession, session_id: str, kv: Any
) -> None:
    async with make_edge() as edge:
        response = await post(http, f"{edge.url}/v1/traces", traces(span(genai(session_id, 1))).SerializeToString())
        assert response.status == 503


# -- auth and origin ------------------------------------------------------------------------------


async def test_with_auth_on_an_export_needs_a_token_covering_its_sessions(
    functions: FunctionsRuntime, make_edge: EdgeFactory, http: aiohttp.ClientSession, session_id: str
) -> None:
    other = f"{session_id}-other"
    export = traces(span(genai(session_id, 5), span_id=1), span(genai(other, 6), span_id=2)).SerializeToString()
    async with make_edge(jwt_secret=SECRET) as edge:
        assert (await post(http, f"{edge.url}/v1/traces", export)).status == 401
        bearer = {**PROTOBUF, "Authorization": f"Bearer {token(SECRET, [session_id])}"}
        async with http.post(f"{edge.url}/v1/traces", data=export, headers=bearer) as response:
            assert response.status == 200
            reply = trace_reply(await response.read())
        assert reply.partial_success.rejected_spans == 1
        assert "does not grant session" in reply.partial_success.error_message
        collector = {**PROTOBUF, "Authorization": f"Bearer {token(SECRET, ['*'])}"}
        assert (await post(http, f"{edge.url}/v1/traces", export, collector)).status == 200
        async with http.get(f"{edge.url}/api/counters/context/{other}", headers=collector) as response:
            assert ContextUsage.model_validate_json(await response.read()).used == 6


async def test_a_browser_page_of_another_origin_cannot_post_exports(
    edge: EdgeServer, http: aiohttp.ClientSession, session_id: str
) -> None:
    export = traces(span(genai(session_id, 5))).SerializeToString()
    response = await post(http, f"{edge.url}/v1/traces", export, {**PROTOBUF, "Origin": "https://evil.example"})
    assert response.status == 403
    assert (await context(http, edge, session_id)).revision == 0


# -- its own port ---------------------------------------------------------------------------------


async def test_otlp_port_serves_the_same_on_a_listener_of_its_own(
    functions: FunctionsRuntime, make_edge: EdgeFactory, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with make_edge(otlp_port=0) as edge:
        assert edge.otlp_url is not None and edge.otlp_url != edge.url
        export = traces(span(genai(session_id, 77))).SerializeToString()
        assert (await post(http, f"{edge.otlp_url}/v1/traces", export)).status == 200
        assert (await context(http, edge, session_id)).used == 77


async def test_a_pages_exporter_gets_cors_from_an_allowed_origin_only(
    edge: EdgeServer, http: aiohttp.ClientSession
) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    async with http.options(f"{edge.url}/v1/traces", headers={**preflight, "Origin": "http://localhost:3000"}) as ok:
        assert ok.status == 204
        assert ok.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert "Content-Encoding" in ok.headers["Access-Control-Allow-Headers"]
    async with http.options(f"{edge.url}/v1/traces", headers={**preflight, "Origin": "https://evil.example"}) as no:
        assert "Access-Control-Allow-Origin" not in no.headers


async def test_a_body_over_the_edges_limit_is_a_json_413(edge: EdgeServer, http: aiohttp.ClientSession) -> None:
    body = io.BytesIO(b"\0" * (edge.settings.max_text_bytes * 2 + 1))
    async with http.post(f"{edge.url}/v1/logs", data=body, headers=PROTOBUF) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "payload_too_large"


async def test_with_nats_gone_an_export_is_503_at_once_and_applies_after_the_retry(
    own_nats: NatsProcess, settings: Settings, http: aiohttp.ClientSession, session_id: str
) -> None:
    own = edge_settings(settings, nats_url=own_nats.url)
    functions = FunctionsRuntime(own)
    await functions.start()
    export = traces(span(genai(session_id, 31))).SerializeToString()
    try:
        async with EdgeServer(own) as edge:
            await asyncio.to_thread(own_nats.stop)
            await wait_status(http, f"{edge.url}/readyz", 503)
            assert (await post(http, f"{edge.url}/v1/traces", export)).status == 503
            await asyncio.to_thread(own_nats.start)
            await wait_status(http, f"{edge.url}/readyz", 200)
            assert (await post(http, f"{edge.url}/v1/traces", export)).status == 200
            assert (await context(http, edge, session_id)).used == 31
    finally:
        await functions.stop()
