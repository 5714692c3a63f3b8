"""Write (or check) the committed JSON Schema files in ``schemas/json/`` and ``schemas/asyncapi.yaml``."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.asyncapi import ASYNCAPI_FILE, render_asyncapi, write_asyncapi
from schemas.models import EXPORTED_MODELS

__all__ = ["ASYNCAPI_FILE", "SCHEMA_DIR", "render_asyncapi", "render_schemas", "write_asyncapi", "write_schemas"]

SCHEMA_DIR = Path(__file__).parent / "json"


def render_schemas() -> dict[str, str]:
    """File name → JSON text, exactly as committed."""
    return {
        f"{name}.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in sorted(EXPORTED_MODELS.items())
    }


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in render_schemas().items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
