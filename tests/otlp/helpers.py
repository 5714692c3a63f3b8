"""Reading the captured fixtures, and building OTLP records and exports by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from ws_edge.otlp.decode import BodyEncoding, Record, Signal, parse, records
from ws_edge.otlp.mapping import DEFAULT_SESSION_ATTRIBUTES, wanted_attributes

FIXTURES: Final = Path(__file__).resolve().parent / "fixtures"
WANTED: Final = wanted_attributes(DEFAULT_SESSION_ATTRIBUTES)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_records(name: str) -> list[Record]:
    """The records of a captured export (``claude-code/turn.logs.pb``...)."""
    signal = Signal(name.split(".")[-2])
    encoding = BodyEncoding.JSON if name.endswith(".json") else BodyEncoding.PROTOBUF
    return records(signal, parse(signal, encoding, fixture(name)), WANTED).records


def value(item: Any) -> AnyValue:
    if isinstance(item, bool):
        return AnyValue(bool_value=item)
    if isinstance(item, int):
        return AnyValue(int_value=item)
    if isinstance(item, float):
        return AnyValue(double_value=item)
    return AnyValue(string_value=str(item))


def attributes(items: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=value(item)) for key, item in items.items()]


def span(attrs: dict[str, Any], *, end_ns: int = 1_000, name: str = "chat m", span_id: int = 1) -> Span:
    return Span(
        trace_id=(7).to_bytes(16, "big"),
        span_id=span_id.to_bytes(8, "big"),
        name=name,
        start_time_unix_nano=end_ns - 1,
        end_time_unix_nano=end_ns,
        attributes=attributes(attrs),
    )


def log(attrs: dict[str, Any], *, at_ns: int = 1_000, event: str = "", body: str = "") -> LogRecord:
    record = LogRecord(time_unix_nano=at_ns, observed_time_unix_nano=at_ns, attributes=attributes(attrs))
    if event:
        record.event_name = event
    if body:
        record.body.string_value = body
    return record


def traces(*spans: Span, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=attributes(resource or {})), scope_spans=[ScopeSpans(spans=list(spans))]
            )
        ]
    )


def logs(*log_records: LogRecord, resource: dict[str, Any] | None = None) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=attributes(resource or {})),
                scope_logs=[ScopeLogs(log_records=list(log_records))],
            )
        ]
    )


def span_record(attrs: dict[str, Any], resource: dict[str, Any] | None = None, **kwargs: Any) -> Record:
    return records(Signal.TRACES, traces(span(attrs, **kwargs), resource=resource), WANTED).records[0]


def log_record(attrs: dict[str, Any], resource: dict[str, Any] | None = None, **kwargs: Any) -> Record:
    return records(Signal.LOGS, logs(log(attrs, **kwargs), resource=resource), WANTED).records[0]


def claude_api_request(session: str, **attrs: Any) -> dict[str, Any]:
    """The attributes of Claude Code's ``api_request`` event, as it sends them."""
    return {
        "session.id": session,
        "event.name": "api_request",
        "model": "claude-sonnet-4-5",
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_read_tokens": 300,
        "cache_creation_tokens": 4_000,
        "query_source": "sdk",
        **attrs,
    }
