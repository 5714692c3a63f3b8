"""The ctxmeter wheel: built as CI builds it (an isolated build with the setuptools pyproject asks for), it
ships every data file the code reads, and setuptools has nothing to warn about."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT_S: Final = 300


@pytest.mark.slow
def test_the_wheel_ships_its_data_without_setuptools_warnings(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--verbose", "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2_000:]
    output = built.stdout + built.stderr
    assert "absent from the `packages` configuration" not in output
    (wheel,) = tmp_path.glob("ctxmeter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "functions/data/models.toml",
        "schemas/asyncapi.yaml",
        "schemas/json/UsageRequest.json",
        "ws_edge/static/ctxmeter.js",
        "ws_edge/static/index.html",
    }
    assert expected <= names, sorted(expected - names)
