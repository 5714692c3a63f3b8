"""The AsyncAPI document (schemas/asyncapi.yaml): current, complete, and accepted by the official parser.

The structural tests read the document as generated (``build_document``) and the committed file must be
exactly its rendering, so they speak for the file. The official ``@asyncapi/parser`` (tools/asyncapi-check)
then validates the file itself, and the YAML it reads back must be that same document. Node.js or the
validator's packages missing skips those, except under ``CI=true``, where it fails: CI installs both.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, get_type_hints

import pytest
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
from pydantic import BaseModel

import ctxmeter
from functions import errors
from functions.operation import Operation as FunctionOperation
from functions.service import OPERATIONS
from schemas import idempotency, subjects
from schemas.asyncapi import (
    ASYNCAPI_FILE,
    ENDPOINTS,
    EXAMPLE_KEY,
    KEY_REGEX,
    JsonValue,
    build_document,
    render_asyncapi,
    to_yaml,
)
from schemas.models import (
    EXPORTED_MODELS,
    ContextHistory,
    ContextUpdateEvent,
    ContextUsage,
    ErrorReply,
    ModelsReply,
    Reply,
    TokenCount,
    TokenCountEvent,
    TokenUsage,
)
from schemas.subjects import CatalogOp, ContextOp, TokensOp
from tests.tools import require

ROOT: Final = Path(__file__).resolve().parent.parent
CHECK_DIR: Final = ROOT / "tools" / "asyncapi-check"
CHECK_TIMEOUT_S: Final = 120.0
SESSION: Final = "chat_42-x"
ALL_OPS: Final[tuple[subjects.Operation, ...]] = (*ContextOp, *TokensOp, *CatalogOp)
# The reply of each operation, as the contract (DESIGN.md, "NATS subjects") states it.
CONTRACT_REPLIES: Final[dict[subjects.Operation, type[BaseModel]]] = {
    TokensOp.COUNT: TokenCount,
    TokensOp.DRAFT: TokenUsage,
    ContextOp.HISTORY: ContextHistory,
    CatalogOp.MODELS: ModelsReply,
    **{op: ContextUsage for op in ContextOp if op is not ContextOp.HISTORY},
}
EVENT_MODELS: Final[tuple[type[BaseModel], ...]] = (ContextUpdateEvent, TokenCountEvent)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document()


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def _deref(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and set(node) == {"$ref"}:
        node = _resolve(document, node["$ref"])
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _channel_for(document: dict[str, Any], subject: str) -> tuple[str, dict[str, Any]]:
    """The channel whose address, with its parameters filled in with SESSION, is ``subject``."""
    found = [
        (name, channel)
        for name, channel in document["channels"].items()
        if channel["address"] is not None and channel["address"].replace("{session_id}", SESSION) == subject
    ]
    assert len(found) == 1, f"{len(found)} channels for {subject}"
    return found[0]


def _subject(op: subjects.Operation) -> str:
    return subjects.request(op, SESSION) if subjects.is_per_session(op) else subjects.request(op)


def _payload_model(document: dict[str, Any], message: dict[str, Any]) -> str:
    ref = _deref(document, message)["payload"]["$ref"]
    assert ref.startswith("#/components/schemas/"), ref
    _resolve(document, ref)
    return str(ref.removeprefix("#/components/schemas/"))


def _operations_on(document: dict[str, Any], channel: str) -> dict[str, dict[str, Any]]:
    return {
        name: operation
        for name, operation in document["operations"].items()
        if operation["channel"] == {"$ref": f"#/channels/{channel}"}
    }


# -- the committed file ---------------------------------------------------------------------


def test_committed_asyncapi_is_current() -> None:
    assert ASYNCAPI_FILE.is_file(), "run `ctxmeter schemas` and commit schemas/asyncapi.yaml"
    assert ASYNCAPI_FILE.read_text(encoding="utf-8") == render_asyncapi(), (
        "schemas/asyncapi.yaml is stale: run `ctxmeter schemas`"
    )


def test_rendering_is_deterministic() -> None:
    assert render_asyncapi() == render_asyncapi()


def test_it_is_asyncapi_3_of_this_version_on_a_nats_server(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["version"] == ctxmeter.__version__
    assert document["defaultContentType"] == "application/json"
    assert [server["protocol"] for server in document["servers"].values()] == ["nats"]


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs = set(_refs(document))
    assert refs
    for ref in refs:
        _resolve(document, ref)


def test_nothing_in_components_is_unused(document: dict[str, Any]) -> None:
    refs = set(_refs(document))
    for kind in ("schemas", "messages", "parameters"):
        for name in document["components"][kind]:
            assert f"#/components/{kind}/{name}" in refs, f"components.{kind}.{name} is unused"


# -- channels and parameters ----------------------------------------------------------------


@pytest.mark.parametrize("op", ALL_OPS, ids=str)
def test_every_subject_has_a_channel(document: dict[str, Any], op: subjects.Operation) -> None:
    _, channel = _channel_for(document, _subject(op))
    assert ("parameters" in channel) == subjects.is_per_session(op)


def test_the_events_subject_has_a_channel(document: dict[str, Any]) -> None:
    _, channel = _channel_for(document, subjects.events(SESSION))
    assert "parameters" in channel


def test_every_address_parameter_is_declared(document: dict[str, Any]) -> None:
    declared = 0
    for name, channel in document["channels"].items():
        in_address = set(re.findall(r"\{([^}]*)\}", channel["address"] or ""))
        parameters = channel.get("parameters", {})
        assert set(parameters) == in_address, name
        for parameter in parameters.values():
            parameter = _deref(document, parameter)
            assert parameter["x-pattern"] == "^[A-Za-z0-9_-]{1,128}$"
            assert parameter["x-pattern"] in parameter["description"]
            assert all(subjects.is_session_id(example) for example in parameter["examples"])
            declared += 1
    assert declared == sum(subjects.is_per_session(op) for op in ALL_OPS) + 1  # + the events


def test_the_session_pattern_is_the_subjects_module_s(document: dict[str, Any]) -> None:
    pattern = re.compile(document["components"]["parameters"]["session_id"]["x-pattern"])
    for candidate in ("a", "A-z_09", "x" * 128, "", "x" * 129, "a.b", "a*", "a>", "a b", "é"):
        assert (pattern.fullmatch(candidate) is not None) == subjects.is_session_id(candidate), candidate


# -- operations and messages ----------------------------------------------------------------


def _function(op: subjects.Operation) -> FunctionOperation[Any]:
    (found,) = [operation for operation in OPERATIONS if operation.op == op]
    return found


def test_every_function_is_documented_with_its_own_request_model() -> None:
    assert {operation.op for operation in OPERATIONS} == set(ALL_OPS) == {endpoint.op for endpoint in ENDPOINTS}
    for endpoint in ENDPOINTS:
        assert endpoint.request is _function(endpoint.op).request_model, endpoint.op
        assert endpoint.reply is CONTRACT_REPLIES[endpoint.op], endpoint.op
        returns = get_type_hints(_function(endpoint.op).handler)["return"]
        if inspect.isclass(returns) and issubclass(returns, Reply):
            assert endpoint.reply is returns, endpoint.op


@pytest.mark.parametrize("op", ALL_OPS, ids=str)
def test_every_request_is_a_send_with_its_reply_or_an_error(document: dict[str, Any], op: subjects.Operation) -> None:
    channel_name, _ = _channel_for(document, _subject(op))
    operations = _operations_on(document, channel_name)
    with_reply = [operation for operation in operations.values() if "reply" in operation]
    assert len(with_reply) == 1
    (operation,) = with_reply
    assert operation["action"] == "send"

    (request_ref,) = operation["messages"]
    assert request_ref["$ref"].startswith(f"#/channels/{channel_name}/messages/")
    request = _deref(document, _resolve(document, request_ref["$ref"]))
    assert _payload_model(document, request) == _function(op).request_model.__name__

    reply = operation["reply"]
    inbox = _deref(document, reply["channel"])
    assert inbox["address"] is None  # the requester's inbox
    replies = [_deref(document, _resolve(document, ref["$ref"])) for ref in reply["messages"]]
    for ref in reply["messages"]:
        assert ref["$ref"].startswith(f"{reply['channel']['$ref']}/messages/")
    assert [_payload_model(document, message) for message in replies] == [
        CONTRACT_REPLIES[op].__name__,
        ErrorReply.__name__,
    ]

    changes = subjects.changes_state(op)
    key = request.get("headers", {}).get("properties", {}).get(idempotency.KEY_HEADER)
    duplicate = replies[0].get("headers", {}).get("properties", {}).get(idempotency.DUPLICATE_HEADER)
    assert (key is not None) == changes
    assert (duplicate is not None) == changes
    if changes:
        assert key["pattern"] == KEY_REGEX
        assert duplicate["const"] == "true"
        (example,) = request["examples"]
        assert example["headers"] == {idempotency.KEY_HEADER: EXAMPLE_KEY}
    # A state-changing request may also be a plain publish: a send with no reply.
    publishes = [operation for operation in operations.values() if "reply" not in operation]
    assert len(publishes) == (1 if changes else 0)
    for publish in publishes:
        assert publish["action"] == "send"
        assert publish["messages"] == operation["messages"]


def test_the_key_pattern_is_what_the_functions_accept() -> None:
    pattern = re.compile(KEY_REGEX)
    for candidate in ("k", EXAMPLE_KEY, "x" * 128, "with space ~!", "", "x" * 129, "tab\t", "é", "new\nline"):
        assert (pattern.fullmatch(candidate) is not None) == idempotency.is_valid_key(candidate), candidate


def test_error_replies_carry_the_micro_error_headers(document: dict[str, Any]) -> None:
    error_messages = [
        message
        for message in document["components"]["messages"].values()
        if message["payload"]["$ref"] == f"#/components/schemas/{ErrorReply.__name__}"
    ]
    assert len(error_messages) == 1
    headers = error_messages[0]["headers"]
    assert (
        set(headers["required"])
        == {ERROR_HEADER, ERROR_CODE_HEADER}
        == {"Nats-Service-Error", "Nats-Service-Error-Code"}
    )
    statuses = {
        str(kind.status)
        for kind in vars(errors).values()
        if inspect.isclass(kind) and issubclass(kind, errors.CtxmeterError)
    }
    assert set(headers["properties"][ERROR_CODE_HEADER]["enum"]) == statuses


def test_events_are_received(document: dict[str, Any]) -> None:
    channel_name, channel = _channel_for(document, subjects.events(SESSION))
    (operation,) = _operations_on(document, channel_name).values()
    assert operation["action"] == "receive"
    assert "reply" not in operation
    models = [_payload_model(document, _resolve(document, ref["$ref"])) for ref in operation["messages"]]
    assert sorted(models) == sorted(model.__name__ for model in EVENT_MODELS)
    assert {_payload_model(document, message) for message in channel["messages"].values()} == set(models)


def test_every_request_reply_and_event_model_is_referenced(document: dict[str, Any]) -> None:
    payloads = {_payload_model(document, message) for message in document["components"]["messages"].values()}
    expected = {operation.request_model.__name__ for operation in OPERATIONS}
    others: list[type[BaseModel]] = [*CONTRACT_REPLIES.values(), *EVENT_MODELS, ErrorReply]
    expected |= {model.__name__ for model in others}
    assert payloads == expected
    assert payloads == set(EXPORTED_MODELS)  # and schemas/json/ exports the same models


def test_every_message_is_used_by_an_operation(document: dict[str, Any]) -> None:
    used = {
        _resolve(document, ref["$ref"])["$ref"]  # an operation's message is its channel's, a $ref to components
        for operation in document["operations"].values()
        for ref in (*operation["messages"], *operation.get("reply", {}).get("messages", []))
    }
    assert used == {f"#/components/messages/{name}" for name in document["components"]["messages"]}


@pytest.mark.parametrize("name", sorted(EXPORTED_MODELS))
def test_component_schemas_are_the_exported_json_schemas(document: dict[str, Any], name: str) -> None:
    """components.schemas holds each model's schema/json file, with its $defs beside it."""
    exported = json.loads((ROOT / "schemas" / "json" / f"{name}.json").read_text(encoding="utf-8"))
    text = json.dumps(exported).replace('"#/$defs/', '"#/components/schemas/')
    exported = json.loads(text)
    definitions = exported.pop("$defs", {})
    components = document["components"]["schemas"]
    assert components[name] == exported
    for definition, schema in definitions.items():
        assert components[definition] == schema


def test_examples_are_valid(document: dict[str, Any]) -> None:
    checked = 0
    for message in document["components"]["messages"].values():
        model = EXPORTED_MODELS[_payload_model(document, message)]
        for example in message.get("examples", []):
            model.model_validate_json(json.dumps(example["payload"]))
            checked += 1
    assert checked >= len(ALL_OPS)


# -- the YAML and the official parser -------------------------------------------------------


def _check_command(*args: str) -> list[str]:
    """The validator's command line, or a skip (a failure under CI=true) naming what is missing."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node is not on PATH (apt-get install nodejs npm)")
    for package in ("@asyncapi/parser", "js-yaml"):
        if not (CHECK_DIR / "node_modules" / package / "package.json").is_file():
            missing.append(f"{package} is not installed (npm ci --prefix tools/asyncapi-check)")
    require(missing, "the AsyncAPI document must be validated")
    assert node is not None
    return [node, str(CHECK_DIR / "check.mjs"), *args]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _check_command(*args), capture_output=True, text=True, cwd=ROOT, timeout=CHECK_TIMEOUT_S, check=False
    )


@functools.cache
def _official_parse() -> subprocess.CompletedProcess[str]:
    """One run of the validator on the committed file (--print-json: with the YAML as it reads back)."""
    return _run(str(ASYNCAPI_FILE.relative_to(ROOT)), "--print-json")


def test_the_official_parser_accepts_it() -> None:
    result = _official_parse()
    assert result.returncode == 0, f"@asyncapi/parser rejects schemas/asyncapi.yaml:\n{result.stderr}"
    assert "valid AsyncAPI 3.0.0 document" in result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_the_yaml_reads_back_as_the_document(document: dict[str, Any]) -> None:
    result = _official_parse()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == document


def test_the_parser_rejects_a_broken_document(tmp_path: Path) -> None:
    """The check can fail: a dangling reference and an unknown action are errors, and exit 1."""
    broken = render_asyncapi().replace("action: receive", "action: listen", 1)
    broken = broken.replace("#/components/schemas/ErrorReply", "#/components/schemas/NoSuchModel", 1)
    path = tmp_path / "broken.yaml"
    path.write_text(broken, encoding="utf-8")
    result = _run(str(path))
    assert result.returncode == 1, result.stderr
    errors_found = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any("/operations/receiveEvents/action" in line for line in errors_found), result.stderr
    assert any("NoSuchModel" in line for line in errors_found), result.stderr


AWKWARD: Final[dict[str, JsonValue]] = {
    "words": ["yes", "No", "ON", "off", "y", "n", "true", "False", "null", "Null", "~", ""],
    "numbers": ["1", "0x1f", "1e3", "1_000", "3.0.0", "12:30", ".inf", "-.5", "+1", "2024-01-01", "0o7"],
    "indicators": [
        "-",
        "- x",
        "? x",
        ": x",
        "#x",
        "&a",
        "*a",
        "!tag",
        "|",
        ">",
        "%x",
        "@x",
        "`x",
        "'x",
        '"x',
        "{x",
        "[x",
    ],
    "inside": ["a: b", "a #b", "a:", "a ", " a", "a,b", "a[b]{c}", "a'b\"c", "a\\b", "a:b", "a#b", "a\tb"],
    "lines": ["a\nb", "a\n\nb", "a\n", "\na", "a \nb", " a\nb", "a\n b", "a\r\nb", "a\n#b", "a\n- b", "a\n\n"],
    "unicode": ["≥ 80 %", "é", "\u0085", "\u2028", "\x7f", "\x00", "\ufeff", "\U0001f600", "\ud7ff", "\ue000"],
    "scalars": [0, -1, 2**53 - 1, 0.5, -1.25e-7, 1e300, True, False, None],
    "empty": {"dict": {}, "list": [], "nested": [[], {}, [[]], [{"a": [1, {"b": None}]}]]},
    "keys": {"$ref": 1, "a b": 2, "yes": 3, "1": 4, "a: b": 5, "-": 6, "": 7, "x\ny": 8},
    "deep": [{"a": {"b": [{"c": "d\ne"}, ["f", ["g"]]]}}],
}


def test_the_yaml_emitter_round_trips_awkward_values(tmp_path: Path) -> None:
    path = tmp_path / "awkward.yaml"
    path.write_text(to_yaml(AWKWARD), encoding="utf-8")
    result = _run(str(path), "--load-only")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == AWKWARD
