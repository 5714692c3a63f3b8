"""The client's reply models against the committed JSON Schema of the server (schemas/json/).

Compared: each field's name, type (nested models, lists, nullability), required-ness and default. Not
compared, on purpose: descriptions and titles (prose), numeric bounds (the server enforces them, a reply
never breaks them), ``additionalProperties`` (the client ignores extra fields, the server forbids them)
and enum values (the client reads enum fields as strings; its enum classes are checked separately).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest
from ctxmeter_client import (
    ContextLevel,
    ContextUsage,
    Encoding,
    ErrorCode,
    HistoryOp,
    ModelsReply,
    TokenCount,
)
from ctxmeter_client._models import REPLY_MODELS
from pydantic import BaseModel

SCHEMA_DIR: Final = Path(__file__).resolve().parents[3] / "schemas" / "json"


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        node = {**root["$defs"][name], **{key: value for key, value in node.items() if key != "$ref"}}
    return node


def shape(node: dict[str, Any], root: dict[str, Any]) -> Any:
    """A schema node reduced to what a reader of the JSON depends on, in a form that compares with ==."""
    node = _resolve(node, root)
    if "anyOf" in node:
        return {"anyOf": sorted((shape(option, root) for option in node["anyOf"]), key=json.dumps)}
    if "enum" in node:
        # An enum's values are strings on the wire; see test_enum_values_match_the_schema.
        return {"type": node.get("type", "string")}
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        required = set(node.get("required", []))
        return {
            "object": {
                name: {
                    "type": shape(field, root),
                    "required": name in required,
                    "default": field.get("default", "<none>"),
                }
                for name, field in sorted(node.get("properties", {}).items())
            }
        }
    if kind == "array":
        return {"array": shape(node.get("items", {}), root)}
    return {"type": kind}


def server_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return schema


def client_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


@pytest.mark.parametrize("name", sorted(REPLY_MODELS))
def test_client_reply_model_matches_the_server_schema(name: str) -> None:
    server = server_schema(name)
    client = client_schema(REPLY_MODELS[name])
    assert shape(client, client) == shape(server, server)


def test_every_reply_schema_has_a_client_model() -> None:
    # The request schemas and the events are not replies to a client call.
    not_replies = {name for name in (p.stem for p in SCHEMA_DIR.glob("*.json")) if name.endswith(("Request", "Event"))}
    not_replies |= {"TokensDelta"}
    replies = {p.stem for p in SCHEMA_DIR.glob("*.json")} - not_replies
    assert replies == set(REPLY_MODELS)


def test_the_comparison_notices_drift() -> None:
    """A renamed field, a field made optional, and a changed type each fail the comparison."""
    server = server_schema("ContextUsage")
    client_shape = shape(client_schema(ContextUsage), client_schema(ContextUsage))

    renamed = json.loads(json.dumps(server))
    renamed["properties"]["used_tokens"] = renamed["properties"].pop("used")
    renamed["required"] = ["used_tokens" if field == "used" else field for field in renamed["required"]]
    optional = json.loads(json.dumps(server))
    optional["required"].remove("left")
    retyped = json.loads(json.dumps(server))
    retyped["properties"]["revision"]["type"] = "string"

    assert shape(server, server) == client_shape
    for drifted in (renamed, optional, retyped):
        assert shape(drifted, drifted) != client_shape


def _enum_values(schema_name: str, enum_name: str) -> list[str]:
    values: list[str] = server_schema(schema_name)["$defs"][enum_name]["enum"]
    return values


def test_enum_values_match_the_schema() -> None:
    assert [level.value for level in ContextLevel] == _enum_values("ContextUsage", "ContextLevel")
    assert [encoding.value for encoding in Encoding] == _enum_values("TokenCount", "Encoding")
    assert [op.value for op in HistoryOp] == _enum_values("ContextHistory", "HistoryOp")
    # The client adds one code of its own: a reply it cannot read.
    assert [code.value for code in ErrorCode] == [*_enum_values("ErrorReply", "ErrorCode"), "invalid_reply"]


def test_a_newer_server_does_not_break_the_client() -> None:
    """Fields the client does not know are ignored, and an enum value added later passes through."""
    body = {
        "count": 3,
        "model": None,
        "encoding": "o300k_future",
        "exact": False,
        "a_field_from_the_future": {"nested": [1, 2]},
    }
    count = TokenCount.model_validate_json(json.dumps(body))
    assert count.count == 3
    assert count.encoding == "o300k_future"
    assert not hasattr(count, "a_field_from_the_future")
    models = ModelsReply.model_validate(
        {
            "models": [
                {
                    "name": "m",
                    "aliases": [],
                    "encoding": "o200k_base",
                    "context_window": 10,
                    "max_output": None,
                    "exact": True,
                    "price": 1.5,
                }
            ],
            "next_page": None,
        }
    )
    assert models.models[0].encoding == Encoding.O200K_BASE


def test_an_older_server_reply_gets_the_schema_defaults() -> None:
    """A ContextUsage without the fields that have defaults reads with those defaults."""
    body = {
        "session_id": "s",
        "used": 10,
        "total": 100,
        "percentage": 10.0,
        "level": "normal",
        "model": None,
        "revision": 1,
        "updated_at": "2025-01-01T00:00:00Z",
        "compact_at": 100,
        "left": 90,
    }
    usage = ContextUsage.model_validate(body)
    assert (usage.reserved, usage.estimated, usage.compactions, usage.compacted_at) == (0, False, 0, None)
    assert usage.duplicate is False
    assert usage.level == ContextLevel.NORMAL
    assert str(ContextLevel.NORMAL) == "normal"
