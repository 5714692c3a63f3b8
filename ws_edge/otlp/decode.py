"""OTLP/HTTP bodies into records: the content encoding (gzip, with the decompressed size capped), protobuf or
OTLP's JSON mapping into the ``opentelemetry-proto`` messages, and those flattened into ``Record``s.

Everything is bounded: the body (compressed by the app's client_max_size, decompressed by
``OTLP_MAX_BODY_BYTES``), the records in one request, nesting (protobuf's and the JSON parser's recursion
limits), and what a record keeps (only the attributes the mapping rules read, short strings only)."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from google.protobuf.message import Message
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from ctxmeter.limits import OTLP_MAX_BODY_BYTES, OTLP_MAX_JSON_DEPTH, OTLP_MAX_RECORDS, OTLP_MAX_VALUE_CHARS
from schemas.models import ErrorCode
from ws_edge.security import Refused


class Signal(StrEnum):
    TRACES = "traces"
    LOGS = "logs"
    METRICS = "metrics"


class BodyEncoding(StrEnum):
    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"


@dataclass(frozen=True)
class _Protobuf:
    """protobuf and the OTLP messages, loaded at the first export: they hold 2 MB that an edge nobody
    exports to does without (the first export pays their import, about 20 ms, once)."""

    json_format: ModuleType
    decode_error: type[Exception]
    requests: dict[Signal, type[Message]]
    # The reply of each signal, and the partial-success message with its count field.
    responses: dict[Signal, tuple[type[Message], type[Message], str]]


@functools.cache
def _protobuf() -> _Protobuf:
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace

    return _Protobuf(
        json_format=json_format,
        decode_error=DecodeError,
        requests={
            Signal.TRACES: trace.ExportTraceServiceRequest,
            Signal.LOGS: logs.ExportLogsServiceRequest,
            Signal.METRICS: metrics.ExportMetricsServiceRequest,
        },
        responses={
            Signal.TRACES: (trace.ExportTraceServiceResponse, trace.ExportTracePartialSuccess, "rejected_spans"),
            Signal.LOGS: (logs.ExportLogsServiceResponse, logs.ExportLogsPartialSuccess, "rejected_log_records"),
            Signal.METRICS: (
                metrics.ExportMetricsServiceResponse,
                metrics.ExportMetricsPartialSuccess,
                "rejected_data_points",
            ),
        },
    )


# OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping expects base64 for bytes.
HEX_ID_FIELDS: Final = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
GZIP: Final = "gzip"
IDENTITY: Final = "identity"
# zlib's wbits for a gzip header and trailer.
GZIP_WBITS: Final = 31

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Record:
    """A span or log record as the mapping rules see it. ``name`` is a span's name, or a log record's event
    name (its ``event.name`` attribute, else its ``event_name``); ``body`` a log record's string body when
    short, and ``event_name`` its field of that name as sent. ``attributes`` and ``resource`` hold the wanted
    attributes with scalar values; ``time_ns`` is when it happened (a span's end, a log record's time or
    observed time; 0 when unknown); ``source`` the decoded message (its bytes identify the record)."""

    signal: Signal
    name: str
    attributes: Mapping[str, Scalar]
    resource: Mapping[str, Scalar]
    time_ns: int
    body: str = ""
    event_name: str = ""
    scope: str = ""
    source: Message | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    """A request's records (spans or log records) and how many items it carried in all (metrics: data
    points, which move no meter)."""

    records: list[Record]
    items: int


def body_encoding(content_type: str) -> BodyEncoding:
    media = content_type.split(";", 1)[0].strip().lower()
    for encoding in BodyEncoding:
        if media == encoding.value:
            return encoding
    raise Refused(
        415,
        ErrorCode.INVALID_REQUEST,
        "OTLP/HTTP takes Content-Type application/x-protobuf or application/json",
    )


def check_content_encoding(value: str | None) -> bool:
    """Whether the body is gzip-compressed; anything but gzip or identity is refused (415)."""
    coding = (value or IDENTITY).strip().lower()
    if coding == GZIP:
        return True
    if coding == IDENTITY:
        return False
    raise Refused(415, ErrorCode.UNSUPPORTED_ENCODING, "OTLP/HTTP takes Content-Encoding gzip or none")


def gunzip(data: bytes, limit: int = OTLP_MAX_BODY_BYTES) -> bytes:
    """Decompressed, never past ``limit`` bytes of output (413 beyond: a gzip bomb stops there)."""
    inflater = zlib.decompressobj(GZIP_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise Refused(400, ErrorCode.INVALID_REQUEST, "the body is not valid gzip") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise Refused(413, ErrorCode.PAYLOAD_TOO_LARGE, f"the decompressed body is over {limit} bytes")
    if not inflater.eof:
        raise Refused(400, ErrorCode.INVALID_REQUEST, "the gzip body is truncated")
    return out


def parse(signal: Signal, encoding: BodyEncoding, data: bytes) -> Message:
    """The export request, or 400 when the body is not one."""
    protobuf = _protobuf()
    message = protobuf.requests[signal]()
    if len(data) > OTLP_MAX_BODY_BYTES:
        raise Refused(413, ErrorCode.PAYLOAD_TOO_LARGE, f"the body is over {OTLP_MAX_BODY_BYTES} bytes")
    try:
        if encoding is BodyEncoding.PROTOBUF:
            message.ParseFromString(data)
        else:
            document = json.loads(data)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            protobuf.json_format.ParseDict(
                _hex_ids(document), message, ignore_unknown_fields=True, max_recursion_depth=OTLP_MAX_JSON_DEPTH
            )
    except (protobuf.decode_error, protobuf.json_format.ParseError, ValueError, RecursionError, TypeError) as bad:
        kind = "protobuf" if encoding is BodyEncoding.PROTOBUF else "OTLP JSON"
        problem = f"the body is not a valid {kind} {signal} export ({type(bad).__name__})"
        raise Refused(400, ErrorCode.INVALID_REQUEST, problem) from None
    return message


def _hex_ids(value: Any) -> Any:
    """``value`` with OTLP/JSON's hex ids rewritten as base64, which protobuf's JSON parser reads into bytes.
    Bounded by the JSON parser's own nesting limit; a non-hex id is left for the parser to refuse."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in HEX_ID_FIELDS and isinstance(item, str):
                with contextlib.suppress(ValueError):
                    item = base64.b64encode(bytes.fromhex(item)).decode("ascii")
            else:
                item = _hex_ids(item)
            out[key] = item
        return out
    if isinstance(value, list):
        return [_hex_ids(item) for item in value]
    return value


def _count(signal: Signal, message: Any) -> int:
    if signal is Signal.TRACES:
        return sum(len(scope.spans) for resource in message.resource_spans for scope in resource.scope_spans)
    if signal is Signal.LOGS:
        return sum(len(scope.log_records) for resource in message.resource_logs for scope in resource.scope_logs)
    points = 0
    for resource in message.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    points += len(getattr(metric, kind).data_points)
    return points


def _scalar(value: Any) -> Scalar | None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text: str = value.string_value
        # A value longer than any id, model name or count is nothing a rule reads: dropped, never copied on.
        return text if len(text) <= OTLP_MAX_VALUE_CHARS else None
    if kind == "int_value":
        return int(value.int_value)
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind == "double_value":
        return float(value.double_value)
    return None


def _wanted(attributes: Iterable[KeyValue], wanted: frozenset[str]) -> dict[str, Scalar]:
    out: dict[str, Scalar] = {}
    for attribute in attributes:
        key = attribute.key
        if key in wanted and key not in out:
            scalar = _scalar(attribute.value)
            if scalar is not None:
                out[key] = scalar
    return out


def records(
    signal: Signal, message: Any, wanted: frozenset[str], unread_bodies: frozenset[str] = frozenset()
) -> Decoded:
    """Every span or log record of ``message``, in order; 413 beyond ``OTLP_MAX_RECORDS``. A log record whose
    body is one of ``unread_bodies`` (events no rule reads) keeps no attributes: reading them is most of the
    cost of a record."""
    items = _count(signal, message)
    if items > OTLP_MAX_RECORDS:
        raise Refused(
            413,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"an export may carry at most {OTLP_MAX_RECORDS} records; this one has {items}: lower the "
            "exporter's batch size",
        )
    out: list[Record] = []
    if signal is Signal.TRACES:
        for resource_spans in message.resource_spans:
            resource = _wanted(resource_spans.resource.attributes, wanted)
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope.name
                for span in scope_spans.spans:
                    out.append(
                        Record(
                            signal,
                            span.name,
                            _wanted(span.attributes, wanted),
                            resource,
                            span.end_time_unix_nano or span.start_time_unix_nano,
                            scope=scope,
                            source=span,
                        )
                    )
    elif signal is Signal.LOGS:
        for resource_logs in message.resource_logs:
            resource = _wanted(resource_logs.resource.attributes, wanted)
            for scope_logs in resource_logs.scope_logs:
                scope = scope_logs.scope.name
                for log in scope_logs.log_records:
                    body = log.body.string_value if log.body.WhichOneof("value") == "string_value" else ""
                    attributes = {} if body in unread_bodies else _wanted(log.attributes, wanted)
                    # The attribute first: Codex's tracing bridge fills ``event_name`` with "event" for every record.
                    event = attributes.get("event.name") or log.event_name
                    out.append(
                        Record(
                            signal,
                            event if isinstance(event, str) else "",
                            attributes,
                            resource,
                            log.time_unix_nano or log.observed_time_unix_nano,
                            body=body if len(body) <= OTLP_MAX_VALUE_CHARS else "",
                            event_name=log.event_name if len(log.event_name) <= OTLP_MAX_VALUE_CHARS else "",
                            scope=scope,
                            source=log,
                        )
                    )
    return Decoded(out, items)


def response(signal: Signal, encoding: BodyEncoding, rejected: int, message: str) -> bytes:
    """The ``Export*ServiceResponse``, with ``partial_success`` only when something was rejected."""
    protobuf = _protobuf()
    response_type, partial_type, count_field = protobuf.responses[signal]
    fields = {"partial_success": partial_type(**{count_field: rejected, "error_message": message})} if rejected else {}
    reply = response_type(**fields)
    if encoding is BodyEncoding.PROTOBUF:
        return reply.SerializeToString()
    text: str = protobuf.json_format.MessageToJson(reply, indent=None)
    return text.encode()
