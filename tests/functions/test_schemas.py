"""The committed JSON Schema files are current and well formed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.export import SCHEMA_DIR, render_schemas
from schemas.models import EXPORTED_MODELS, ContextUsage
from schemas.typescript import TYPESCRIPT_FILES, render_typescript


def test_committed_schemas_are_current() -> None:
    rendered = render_schemas()
    committed = {path.name: path.read_text(encoding="utf-8") for path in SCHEMA_DIR.glob("*.json")}
    assert set(committed) == set(rendered), "run `ctxmeter schemas` and commit schemas/json/"
    stale = sorted(name for name, text in rendered.items() if committed[name] != text)
    assert not stale, f"stale schema files (run `ctxmeter schemas`): {stale}"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


@pytest.mark.parametrize("name", sorted(EXPORTED_MODELS))
def test_schema_file_is_a_titled_json_schema(name: str) -> None:
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(schema, dict)
    assert schema["title"] == name
    assert schema["type"] == "object"
    assert isinstance(schema["properties"], dict)
    assert set(schema.get("required", [])) <= set(schema["properties"])
    definitions = schema.get("$defs", {})
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/"), ref
        assert ref.removeprefix("#/$defs/") in definitions, ref


def test_strict_request_schemas_forbid_extra_fields() -> None:
    for name in ("TokenCountRequest", "DraftRequest", "ContextSetRequest", "TokensDelta", "EmptyRequest"):
        schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8"))
        assert schema["additionalProperties"] is False, name


def test_committed_typescript_declarations_are_current() -> None:
    rendered = render_typescript()
    for path in TYPESCRIPT_FILES:
        assert path.read_text(encoding="utf-8") == rendered, f"{path} is stale: run `ctxmeter schemas`"


def test_typescript_declarations_follow_the_models() -> None:
    rendered = render_typescript()
    # Every field of a reply is there, required (a reply always carries it); a request's defaults are optional.
    usage = rendered[rendered.index("export interface ContextUsage {") :]
    usage = usage[: usage.index("\n}")]
    for field in ContextUsage.model_fields:
        assert f"\n  {field}: " in usage, field
    assert "  model: string | null;" in usage
    request = rendered[rendered.index("export interface ContextSetRequest {") :]
    assert "  used: number;" in request and "  total?: number | null;" in request
    assert 'export type ContextLevel = "normal" | "warning" | "critical";' in rendered
