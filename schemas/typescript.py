"""TypeScript declarations of the contract's payloads, rendered from the JSON Schema of ``schemas/json/``.

The browser client (``ws_edge/static/ctxmeter.d.ts``) and the Node client (``clients/node/index.d.ts``)
take their payload types from these files instead of writing them again by hand, so they cannot drift
from the models: ``ctxmeter schemas`` writes them with the JSON files, and a test fails when a committed
copy is stale.

Only what pydantic's schemas use is rendered: objects with properties or additional properties,
arrays, ``anyOf``/``oneOf`` unions, enums, consts, ``$ref`` to ``$defs`` and the JSON types. A reply
(``schemas.models.Reply``) always carries every field, defaults included, so its properties are all
required; a request's optional ones are ``?``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from schemas.models import EDGE_MODELS, EXPORTED_MODELS, Reply

ROOT: Final = Path(__file__).resolve().parent.parent
# Beside each client's hand-written declarations, which import their payloads from it.
TYPESCRIPT_FILES: Final = (
    ROOT / "ws_edge" / "static" / "ctxmeter-schemas.d.ts",
    ROOT / "clients" / "node" / "schemas.d.ts",
)
HEADER: Final = """\
// The payloads of ctxmeter's contract, generated from its JSON Schema (schemas/json) by `ctxmeter schemas`
// (schemas/typescript.py). Do not edit: change schemas/models.py and run `ctxmeter schemas`.
"""
JSON_TYPES: Final = {"string": "string", "integer": "number", "number": "number", "boolean": "boolean", "null": "null"}
_REF_PREFIX: Final = "#/$defs/"


class UnsupportedSchema(ValueError):
    """A JSON Schema construct this renderer does not know (a new model used one: extend the renderer)."""


def _type(node: dict[str, Any]) -> str:
    if "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith(_REF_PREFIX):
            raise UnsupportedSchema(f"a $ref outside $defs: {ref}")
        return str(ref[len(_REF_PREFIX) :])
    if "const" in node:
        return json.dumps(node["const"])
    if "enum" in node:
        return " | ".join(json.dumps(value) for value in node["enum"])
    for union in ("anyOf", "oneOf"):
        if union in node:
            members: list[str] = []
            for member in node[union]:
                rendered = _type(member)
                if rendered not in members:
                    members.append(rendered)
            return " | ".join(members)
    kind = node.get("type")
    if kind == "array":
        item = _type(node.get("items", {}))
        return f"Array<{item}>"
    if kind == "object":
        if "properties" in node:
            return _object(node, all_required=False, indent="")
        extra = node.get("additionalProperties", True)
        value = "unknown" if extra is True or extra == {} else _type(extra)
        return f"Record<string, {value}>"
    if isinstance(kind, str) and kind in JSON_TYPES:
        return JSON_TYPES[kind]
    if not node:
        return "unknown"
    raise UnsupportedSchema(f"cannot render {json.dumps(node)[:200]}")


def _doc(node: dict[str, Any], indent: str) -> str:
    description = node.get("description")
    if not description:
        return ""
    lines = " ".join(str(description).split())
    return f"{indent}/** {lines.replace('*/', '* /')} */\n"


def _object(node: dict[str, Any], *, all_required: bool, indent: str) -> str:
    required = set(node.get("required", []))
    lines = ["{"]
    for name, prop in node["properties"].items():
        optional = "" if all_required or name in required else "?"
        key = name if name.isidentifier() else json.dumps(name)
        lines.append(f"{_doc(prop, indent + '  ')}{indent}  {key}{optional}: {_type(prop)};")
    extra = node.get("additionalProperties")
    if extra not in (None, False):
        value = "unknown" if extra is True or extra == {} else _type(extra)
        lines.append(f"{indent}  [key: string]: {value};")
    lines.append(f"{indent}}}")
    return "\n".join(lines)


def _declaration(name: str, node: dict[str, Any], *, all_required: bool) -> str:
    doc = _doc(node, "")
    if node.get("type") == "object" and "properties" in node:
        return f"{doc}export interface {name} {_object(node, all_required=all_required, indent='')}\n"
    return f"{doc}export type {name} = {_type(node)};\n"


def _is_reply(model: type[BaseModel]) -> bool:
    return issubclass(model, Reply)


def render_typescript() -> str:
    """Every exported model and what it refers to, as TypeScript declarations."""
    declarations: dict[str, str] = {}
    for name, model in sorted({**EXPORTED_MODELS, **EDGE_MODELS}.items()):
        reply = _is_reply(model)
        schema = model.model_json_schema()
        # What a model holds is rendered as its holder is: a reply's parts are replies too.
        parts = [(def_name, definition) for def_name, definition in schema.get("$defs", {}).items()]
        parts.append((name, {key: value for key, value in schema.items() if key != "$defs"}))
        for part_name, definition in parts:
            rendered = _declaration(part_name, definition, all_required=reply)
            if declarations.setdefault(part_name, rendered) != rendered:
                raise UnsupportedSchema(f"{part_name} is held by a request and by a reply: give each its own model")
    return HEADER + "".join(f"\n{declarations[name]}" for name in sorted(declarations))


def write_typescript(paths: tuple[Path, ...] = TYPESCRIPT_FILES) -> list[Path]:
    text = render_typescript()
    for path in paths:
        path.write_text(text, encoding="utf-8")
    return list(paths)
