"""Tests that need a tool beyond Python (Chromium, Node.js and npm packages): skipped on a developer's
machine without it, failed under ``CI=true``, where `.ci/run` installs every tool, so a missing one is a
broken setup and never a reason to skip."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def tool_missing(reason: str, purpose: str) -> NoReturn:
    """Skip, or fail under CI (``purpose`` says what must run there)."""
    if in_ci():
        pytest.fail(f"CI=true, so {purpose}: {reason}", pytrace=False)
    pytest.skip(reason)


def require(missing: list[str], purpose: str) -> None:
    """Go on when nothing is ``missing``; else ``tool_missing``."""
    if missing:
        tool_missing("; ".join(missing), purpose)
