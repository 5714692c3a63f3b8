"""Source trees to measure: the working tree ("now") and a git revision exported beside it ("before").

Every figure of ``python -m bench`` is measured for both trees in the same run, one after the other on
the same machine, so "before" and "now" share the machine's state (load, caches, temperature). A tree's
processes (``ctxmeter functions``, ``ctxmeter edge``, ``ctxmeter up``) run from its own directory with
the same virtualenv: ``cwd`` and ``PYTHONPATH`` put its packages ahead of the editable install.
The revision is exported with ``git archive`` (the repository itself is never touched).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Tree:
    label: str  # "before" or "now"
    path: Path
    revision: str  # what it is: a git revision, or "working tree"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        paths = [str(self.path), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(extra or {})}

    def command(self, *args: str) -> list[str]:
        """``python -m <its CLI> ARGS`` from this tree (run with ``cwd=self.path``); revisions before the CLI
        left ``ctxmeter/`` for a package of its own run it from ``ctxmeter.cli``."""
        module = "ctxmeter_cli" if (self.path / "ctxmeter_cli").is_dir() else "ctxmeter.cli"
        return [sys.executable, "-m", module, *args]

    def spawn(self, *args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``ctxmeter --log-level WARNING ARGS`` from this tree, its output appended to ``log``."""
        with log.open("ab") as out:
            return subprocess.Popen(
                self.command("--log-level", "WARNING", *args),
                cwd=self.path,
                env=self.env(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )


def working_tree() -> Tree:
    return Tree("now", ROOT, "working tree")


@contextlib.contextmanager
def exported(revision: str) -> Iterator[Tree]:
    """``revision`` of this repository as a temporary directory (``git archive``, nothing checked out)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision], check=True, capture_output=True
    ).stdout
    label = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", revision], check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="ctxmeter-before-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Tree("before", Path(tmp), label)
