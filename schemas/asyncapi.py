"""The AsyncAPI 3.0.0 document of ctxmeter's NATS interface, generated from the code that defines it.

Subjects come from :mod:`schemas.subjects`, payloads from the pydantic models of :mod:`schemas.models`
(the same ``model_json_schema()`` as ``schemas/json/``, with ``$defs`` hoisted into
``components.schemas``), headers from :mod:`schemas.idempotency`. ``ctxmeter schemas`` writes it to
``schemas/asyncapi.yaml``; a test fails when that file is stale, and CI validates it with the official
``@asyncapi/parser`` (``tools/asyncapi-check``).

The document describes a *client* of ctxmeter (an agent runtime, the edge): it ``send``s requests, with
a reply on its NATS inbox, or as a plain publish; it ``receive``s events. The YAML is written by a small
emitter here (no YAML library is a dependency): block style, strings quoted unless they are plainly words,
so any YAML 1.1 or 1.2 loader reads it as the same JSON document. Output is deterministic: the document's
own order is fixed, the JSON Schemas' keys are sorted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

from pydantic import BaseModel

from schemas import idempotency, limits, subjects
from schemas.models import (
    CompactRequest,
    ContextHistory,
    ContextSetRequest,
    ContextUpdateEvent,
    ContextUsage,
    DraftRequest,
    EmptyRequest,
    ErrorReply,
    HistoryRequest,
    ModelsReply,
    TokenCount,
    TokenCountEvent,
    TokenCountRequest,
    TokensDelta,
    TokenUsage,
    UsageRequest,
)
from schemas.subjects import CatalogOp, ContextOp, TokensOp

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = dict[str, JsonValue]

ASYNCAPI_FILE: Final = Path(__file__).parent / "asyncapi.yaml"
ASYNCAPI_VERSION: Final = "3.0.0"
# The interface's version: ctxmeter's (a test checks it equals ``ctxmeter.__version__``; schemas/ may not
# import the ctxmeter package).
API_VERSION: Final = "0.1.0"

SERVER: Final = "nats"
SERVER_HOST: Final = "localhost:4222"
SESSION_PARAMETER: Final = "session_id"
SESSION_ID_REGEX: Final = f"^{subjects.SESSION_ID_PATTERN}$"
INBOX_CHANNEL: Final = "inbox"
EVENTS_CHANNEL: Final = "events"
ERROR_MESSAGE: Final = "errorReply"

# The NATS micro service error headers (``nats.micro.request.ERROR_HEADER`` / ``ERROR_CODE_HEADER``) and
# the statuses ctxmeter sends in them (``functions.errors``); a test checks both against their sources.
ERROR_HEADER: Final = "Nats-Service-Error"
ERROR_CODE_HEADER: Final = "Nats-Service-Error-Code"
ERROR_STATUSES: Final = ("400", "404", "409", "413", "500", "507")
# What an idempotency key may be (``schemas.idempotency.is_valid_key``): 1-128 printable ASCII characters.
KEY_REGEX: Final = f"^[ -~]{{1,{limits.KEY_MAX_CHARS}}}$"
EXAMPLE_KEY: Final = "run-7f3c-step-12"


@dataclass(frozen=True)
class Endpoint:
    """One request/reply endpoint: its operation, the models of its request and reply, what it does."""

    op: subjects.Operation
    request: type[BaseModel]
    reply: type[BaseModel]
    summary: str
    example: JsonObject


ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    Endpoint(
        TokensOp.COUNT,
        TokenCountRequest,
        TokenCount,
        "Count a text or chat messages with a model's (or an encoding's) tokenizer.",
        {"text": "How long is this?", "model": "gpt-4o"},
    ),
    Endpoint(
        TokensOp.DRAFT,
        DraftRequest,
        TokenUsage,
        "Count a session's draft message; stored, and published as a token_count event.",
        {"text": "Summarise the thread so far", "model": "gpt-4o"},
    ),
    Endpoint(ContextOp.GET, EmptyRequest, ContextUsage, "A session's context usage (the zero state if none).", {}),
    Endpoint(
        ContextOp.SET,
        ContextSetRequest,
        ContextUsage,
        "Set the context used (and the window, model, reserved tokens, compaction point).",
        {"used": 12000, "model": "gpt-4o", "reserved": 4096},
    ),
    Endpoint(
        ContextOp.ADD, TokensDelta, ContextUsage, "Add tokens to the context used (an estimate).", {"tokens": 512}
    ),
    Endpoint(
        ContextOp.FREE,
        TokensDelta,
        ContextUsage,
        "Free tokens from the context used (an estimate, e.g. after compression); floors at 0.",
        {"tokens": 2048},
    ),
    Endpoint(
        ContextOp.USAGE,
        UsageRequest,
        ContextUsage,
        "Set the context used from an OpenAI, Anthropic or Gemini usage report.",
        {"usage": {"prompt_tokens": 1200, "completion_tokens": 300}, "model": "gpt-4o"},
    ),
    Endpoint(
        ContextOp.RESET,
        EmptyRequest,
        ContextUsage,
        "Zero the context used; the window, model, reserved tokens and compaction point are kept.",
        {},
    ),
    Endpoint(
        ContextOp.COMPACT,
        CompactRequest,
        ContextUsage,
        "Record a compaction: the context used becomes the compacted size.",
        {"used": 8000},
    ),
    Endpoint(
        ContextOp.HISTORY,
        HistoryRequest,
        ContextHistory,
        "The newest points of a session's history, oldest first.",
        {"limit": 50},
    ),
    Endpoint(CatalogOp.MODELS, EmptyRequest, ModelsReply, "The known models: encoding, window, max output.", {}),
)

# The events on ``ctxmeter.events.<sid>``, published after every committed change.
EVENTS: Final[tuple[tuple[type[BaseModel], str], ...]] = (
    (ContextUpdateEvent, "A session's context usage changed (set, add, free, usage, reset, compact)."),
    (TokenCountEvent, "A session's draft message was counted."),
)


# -- the document ---------------------------------------------------------------------------


def _ref(*path: str) -> JsonObject:
    return {"$ref": "#/" + "/".join(path)}


def _camel(*words: str) -> str:
    parts = [part for word in words for part in re.split(r"[._-]", word) if part]
    return parts[0] + "".join(part[:1].upper() + part[1:] for part in parts[1:])


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _channel_id(op: subjects.Operation) -> str:
    group = subjects.group_of(op).removeprefix(subjects.PREFIX).lstrip(".")
    return _camel(group, op.value) if group else op.value


def _template(build: Callable[[str], str]) -> str:
    """A subject with ``{session_id}`` in place of the session id, built by the subjects module itself."""
    subject = build(SESSION_PARAMETER)
    assert subject.endswith(f".{SESSION_PARAMETER}"), subject
    return subject.removesuffix(SESSION_PARAMETER) + "{" + SESSION_PARAMETER + "}"


def channel_address(op: subjects.Operation) -> str:
    if subjects.is_per_session(op):
        return _template(lambda session_id: subjects.request(op, session_id))
    return subjects.request(op)


def events_address() -> str:
    return _template(subjects.events)


def all_operations() -> tuple[subjects.Operation, ...]:
    """Every request/reply operation of ``schemas.subjects``, in the order the document lists them."""
    return (*TokensOp, *ContextOp, *CatalogOp)


def _sorted(node: Any) -> JsonValue:
    if isinstance(node, dict):
        return {str(key): _sorted(node[key]) for key in sorted(node)}
    if isinstance(node, list):
        return [_sorted(item) for item in node]
    if node is None or isinstance(node, bool | int | float | str):
        return node
    raise TypeError(f"not JSON: {node!r}")


def component_schemas(models: Iterable[type[BaseModel]]) -> JsonObject:
    """Each model's ``model_json_schema()`` by its name, with its ``$defs`` hoisted beside it."""
    found: JsonObject = {}

    def put(name: str, schema: JsonValue) -> None:
        if name in found and found[name] != schema:
            raise ValueError(f"two different JSON Schemas are named {name}")
        found[name] = schema

    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            put(name, _sorted(definition))
        put(model.__name__, _sorted(schema))
    return {name: found[name] for name in sorted(found)}


def _headers(properties: JsonObject, required: Iterable[str] = ()) -> JsonObject:
    schema: JsonObject = {"type": "object", "properties": properties}
    names: list[JsonValue] = [*required]
    if names:
        schema["required"] = names
    return schema


def _key_header() -> JsonObject:
    return _headers(
        {
            idempotency.KEY_HEADER: {
                "type": "string",
                "pattern": KEY_REGEX,
                "description": (
                    f"An idempotency key (1-{limits.KEY_MAX_CHARS} printable ASCII characters): applied at "
                    "most once per session. "
                    f"A repeated key changes nothing, publishes nothing, and is answered with the current state "
                    f"and {idempotency.DUPLICATE_HEADER}: true."
                ),
            },
            idempotency.OBSERVED_HEADER: {
                "type": "string",
                "pattern": f"^[0-9]{{1,{limits.OBSERVED_MAX_DIGITS}}}$",
                "description": (
                    "When what the change reports was observed, in Unix nanoseconds. A change older than the "
                    "newest observed time applied to its session changes nothing, publishes nothing, and is "
                    f"answered with the current state and {idempotency.STALE_HEADER}: true."
                ),
            },
        }
    )


def _duplicate_header() -> JsonObject:
    return _headers(
        {
            idempotency.DUPLICATE_HEADER: {
                "type": "string",
                "const": "true",
                "description": (
                    f"Present when the request's {idempotency.KEY_HEADER} had been applied before: nothing "
                    "changed, and the payload is the session's current state."
                ),
            },
            idempotency.STALE_HEADER: {
                "type": "string",
                "const": "true",
                "description": (
                    f"Present when the request's {idempotency.OBSERVED_HEADER} was older than the newest applied "
                    "to the session: nothing changed, and the payload is the session's current state."
                ),
            },
        }
    )


def _error_headers() -> JsonObject:
    return _headers(
        {
            ERROR_HEADER: {"type": "string", "description": "The error message (the payload's error.message)."},
            ERROR_CODE_HEADER: {
                "type": "string",
                "enum": [*ERROR_STATUSES],
                "description": (
                    "400 bad request, 404 unknown model, 409 conflict (retry), 413 too large, 500 internal, "
                    "507 store full."
                ),
            },
        },
        required=(ERROR_HEADER, ERROR_CODE_HEADER),
    )


def _message(
    name: str,
    model: type[BaseModel],
    summary: str,
    *,
    headers: JsonObject | None = None,
    example: JsonObject | None = None,
    example_headers: JsonObject | None = None,
) -> JsonObject:
    message: JsonObject = {"name": name, "title": model.__name__, "summary": summary}
    if headers is not None:
        message["headers"] = headers
    message["payload"] = _ref("components", "schemas", model.__name__)
    if example is not None:
        # Checked against the model here, so a stale example fails the generation.
        model.model_validate_json(json.dumps(example))
        shown: JsonObject = {"name": "example"}
        if example_headers is not None:
            shown["headers"] = example_headers
        shown["payload"] = example
        message["examples"] = [shown]
    return message


def _session_parameter() -> JsonObject:
    return {
        "description": (
            f"The session id: 1-{limits.SESSION_ID_MAX_LENGTH} characters of A-Z a-z 0-9 _ - "
            f"(pattern {SESSION_ID_REGEX}); anything else is rejected with invalid_session_id. "
            "It is one subject token: a '.', '*', '>' or space would reach other sessions."
        ),
        "examples": ["chat-42"],
        "x-pattern": SESSION_ID_REGEX,
    }


def build_document() -> JsonObject:
    """The AsyncAPI 3.0.0 document, as JSON-compatible data."""
    endpoints = {endpoint.op: endpoint for endpoint in ENDPOINTS}
    ops = all_operations()
    missing = [str(op) for op in ops if op not in endpoints]
    if missing or len(endpoints) != len(ops):
        raise ValueError(f"every operation needs exactly one Endpoint in schemas.asyncapi: missing {missing}")

    channels: JsonObject = {}
    operations: JsonObject = {}
    messages: JsonObject = {}
    inbox_messages: JsonObject = {}
    session_parameters: JsonObject = {SESSION_PARAMETER: _ref("components", "parameters", SESSION_PARAMETER)}

    for op in ops:
        endpoint = endpoints[op]
        channel = _channel_id(op)
        changes = subjects.changes_state(op)
        request_name, reply_name = f"{channel}Request", f"{channel}Reply"
        messages[request_name] = _message(
            request_name,
            endpoint.request,
            f"A {subjects.group_of(op)}.{op} request."
            + (" An empty body is accepted as {}." if endpoint.request is EmptyRequest else ""),
            headers=_key_header() if changes else None,
            example=endpoint.example,
            example_headers={idempotency.KEY_HEADER: EXAMPLE_KEY} if changes else None,
        )
        messages[reply_name] = _message(
            reply_name,
            endpoint.reply,
            f"The reply to a {subjects.group_of(op)}.{op} request.",
            headers=_duplicate_header() if changes else None,
        )
        inbox_messages[reply_name] = _ref("components", "messages", reply_name)

        entry: JsonObject = {
            "address": channel_address(op),
            "title": f"{subjects.group_of(op)}.{op}",
            "summary": endpoint.summary,
        }
        if subjects.is_per_session(op):
            entry["parameters"] = dict(session_parameters)
        entry["messages"] = {request_name: _ref("components", "messages", request_name)}
        channels[channel] = entry

        operations[f"request{channel[:1].upper()}{channel[1:]}"] = {
            "action": "send",
            "channel": _ref("channels", channel),
            "title": f"Request {subjects.group_of(op)}.{op}",
            "summary": endpoint.summary,
            "messages": [_ref("channels", channel, "messages", request_name)],
            "reply": {
                "channel": _ref("channels", INBOX_CHANNEL),
                "messages": [
                    _ref("channels", INBOX_CHANNEL, "messages", reply_name),
                    _ref("channels", INBOX_CHANNEL, "messages", ERROR_MESSAGE),
                ],
            },
        }
        if changes:
            operations[f"publish{channel[:1].upper()}{channel[1:]}"] = {
                "action": "send",
                "channel": _ref("channels", channel),
                "title": f"Publish {subjects.group_of(op)}.{op}",
                "summary": (
                    "The same change as a plain publish with no reply subject: applied and its event published; "
                    "a rejected one is logged and counted, never answered."
                ),
                "messages": [_ref("channels", channel, "messages", request_name)],
            }

    messages[ERROR_MESSAGE] = _message(
        ERROR_MESSAGE,
        ErrorReply,
        "Any request rejected: the error in the payload and in the NATS micro service error headers.",
        headers=_error_headers(),
        example={"error": {"code": "invalid_request", "message": "tokens: Input should be greater than or equal to 0"}},
    )
    inbox_messages[ERROR_MESSAGE] = _ref("components", "messages", ERROR_MESSAGE)
    channels[INBOX_CHANNEL] = {
        "address": None,
        "title": "The requester's inbox",
        "summary": "The reply subject of a request (a NATS inbox, chosen by the requester).",
        "messages": inbox_messages,
    }

    event_messages: JsonObject = {}
    for model, summary in EVENTS:
        name = _lower_first(model.__name__)
        messages[name] = _message(name, model, summary)
        event_messages[name] = _ref("components", "messages", name)
    channels[EVENTS_CHANNEL] = {
        "address": events_address(),
        "title": f"{subjects.PREFIX}.events",
        "summary": "A session's events, published by the functions after every committed change.",
        "description": (
            "The envelope front ends read; the edge relays these frames to WebSocket clients as they "
            "are. data.revision is the KV revision of the state: drop anything older than what you hold."
        ),
        "parameters": dict(session_parameters),
        "messages": event_messages,
    }
    operations["receiveEvents"] = {
        "action": "receive",
        "channel": _ref("channels", EVENTS_CHANNEL),
        "title": f"Receive {subjects.PREFIX}.events",
        "summary": "Subscribe to a session's events (or to ctxmeter.events.* for all of them).",
        "messages": [_ref("channels", EVENTS_CHANNEL, "messages", name) for name in event_messages],
    }

    models = [model for endpoint in ENDPOINTS for model in (endpoint.request, endpoint.reply)]
    models += [model for model, _ in EVENTS] + [ErrorReply]
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": subjects.SERVICE_NAME,
            "version": API_VERSION,
            "description": (
                "Real-time context-window and token meters for AI agent sessions, on NATS.\n\n"
                f"The functions are the NATS micro service `{subjects.SERVICE_NAME}` (queue group "
                f"`{subjects.QUEUE_GROUP}`; `$SRV.PING|INFO|STATS` discovery works). This document describes a "
                "client of it: it sends requests and gets the reply on its inbox (or publishes a state-changing "
                "request with no reply subject), and receives a session's events. All bodies are UTF-8 JSON.\n\n"
                f"State-changing requests take an idempotency key in the `{idempotency.KEY_HEADER}` header; a "
                f"repeated key is answered with the current state and `{idempotency.DUPLICATE_HEADER}: true`. "
                f"Errors are `ErrorReply` bodies with the `{ERROR_HEADER}` and `{ERROR_CODE_HEADER}` headers.\n\n"
                "Generated by `ctxmeter schemas` from schemas/models.py and schemas/subjects.py; do not edit."
            ),
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {
            SERVER: {
                "host": SERVER_HOST,
                "protocol": "nats",
                "description": (
                    "A NATS server of the deployment (`ctxmeter up` runs one here). Connect with the "
                    "deployment's credentials (creds file, nkey, token) and TLS as configured."
                ),
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": component_schemas(models),
            "messages": messages,
            "parameters": {SESSION_PARAMETER: _session_parameter()},
        },
    }


# -- YAML -----------------------------------------------------------------------------------

# Strings written without quotes (block context only): they start with a letter (so with no YAML
# indicator, and are no number or timestamp), hold no control character, no ": " or " #", end with no
# space or ":", and are none of YAML 1.1's booleans or nulls; any YAML 1.1 or 1.2 loader reads them back
# as the same string.
_PLAIN: Final = re.compile(r"[A-Za-z_](?:[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f:])?")
_NOT_PLAIN: Final = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
_MULTILINE_OK: Final = re.compile(r"[^\s\x00-\x1f\x7f-\x9f](?:[^\r\t\x00-\x09\x0b-\x1f\x7f-\x9f]*[^\s])?")


def _is_printable(char: str) -> bool:
    """YAML's printable set, less the tab, and the line breaks of YAML 1.1 and the byte order mark."""
    code = ord(char)
    if code in (0x2028, 0x2029, 0xFEFF):
        return False
    return 0x20 <= code <= 0x7E or 0xA0 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code >= 0x10000


def _quoted(text: str) -> str:
    escaped = json.dumps(text, ensure_ascii=False)
    return "".join(
        char if _is_printable(char) else f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
        for char in escaped
    )


def _string(text: str) -> str:
    if (
        _PLAIN.fullmatch(text)
        and ": " not in text
        and " #" not in text
        and all(map(_is_printable, text))
        and text.lower() not in _NOT_PLAIN
    ):
        return text
    return _quoted(text)


def _scalar(value: JsonValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = json.dumps(value, allow_nan=False)
        mantissa, e, exponent = text.partition("e")
        # YAML 1.1 reads 1e+300 as a string: its floats need a dot.
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict | list) and not value:
        return "{}" if isinstance(value, dict) else "[]"
    raise TypeError(f"not a scalar: {value!r}")


def _is_block_text(value: JsonValue) -> bool:
    """A multi-line string written as a literal block (``|-``): readable, and read back exactly."""
    return (
        isinstance(value, str)
        and "\n" in value
        and all(_is_printable(char) or char == "\n" for char in value)
        and all(_MULTILINE_OK.fullmatch(line) for line in value.split("\n") if line)
        and not value.startswith("\n")
        and not value.endswith("\n")
    )


def _is_collection(value: JsonValue) -> bool:
    return isinstance(value, dict | list) and bool(value)


def _value_lines(head: str, value: JsonValue, indent: int) -> list[str]:
    """``head`` (``key:`` or ``-``) followed by ``value``, nested ``indent`` spaces deeper than ``head``."""
    if _is_block_text(value):
        assert isinstance(value, str)
        pad = " " * indent
        return [f"{head} |-", *(f"{pad}{line}" if line else "" for line in value.split("\n"))]
    if _is_collection(value):
        return [head, *_block(value, indent)]
    return [f"{head} {_scalar(value)}"]


def _block(node: JsonValue, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            lines += _value_lines(f"{pad}{_string(key)}:", value, indent + 2)
    elif isinstance(node, list):
        for item in node:
            item_lines = _value_lines(f"{pad}-", item, indent + 2)
            if _is_collection(item):
                # The item's first line goes beside its dash: "- key: value".
                first = item_lines[1]
                item_lines = [f"{pad}- {first[indent + 2 :]}", *item_lines[2:]]
            lines += item_lines
    else:
        raise TypeError(f"not a collection: {node!r}")
    return lines


def to_yaml(document: JsonObject) -> str:
    """Block-style YAML of JSON-compatible data; keys in the data's order."""
    return "\n".join(_block(document, 0)) + "\n"


def render_asyncapi() -> str:
    """``schemas/asyncapi.yaml``, exactly as committed."""
    header = (
        "# The AsyncAPI document of ctxmeter's NATS interface. Generated by `ctxmeter schemas` from\n"
        "# schemas/asyncapi.py: do not edit. CI validates it with @asyncapi/parser (tools/asyncapi-check).\n"
    )
    return header + to_yaml(build_document())


def write_asyncapi(path: Path = ASYNCAPI_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_asyncapi(), encoding="utf-8")
    return path
