"""Limits live in two places: the bounds of messages (the contract) in ``schemas/limits.py``, the running
parts' limits and intervals in ``ctxmeter/limits.py``. Any other module-level number is a fact of a protocol,
a format or a library, listed below with what it is; a new one fails here until it is put in a limits
module or listed as a fact."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
PACKAGES: Final = ("schemas", "ctxmeter", "functions", "ws_edge", "ctxmeter_cli")
LIMITS_MODULES: Final = ("schemas/limits.py", "ctxmeter/limits.py")
UNITS: Final = ("KIB", "MIB", "GIB")

# Numbers that are not limits: changing one would be a bug, not a tuning.
FACTS: Final = {
    "ctxmeter/natsserver.py:_PR_SET_PDEATHSIG": "Linux's prctl option number",
    "ctxmeter/natsserver.py:RANDOM_PORT": "nats-server's value for 'pick a free port'",
    "functions/counting.py:REPLY_PRIMING_TOKENS": "OpenAI's documented reply priming",
    "functions/counting.py:UTF8_MAX_BYTES_PER_CHAR": "UTF-8",
    "functions/kvwriter.py:INSUFFICIENT_RESOURCES_CODE": "a JetStream error code",
    "functions/kvwriter.py:STORE_FAILED_CODE": "a JetStream error code",
    "functions/storeuse.py:UNLIMITED": "JetStream's 'no limit'",
    "schemas/state.py:PERCENT_DECIMALS": "the contract's percent format",
    "schemas/state.py:_PERCENT_UNITS": "the same format counted in its smallest step",
    "ws_edge/otlp/decode.py:GZIP_WBITS": "zlib's window bits for a gzip header",
    "ws_edge/peer.py:_WRITE_HIGH_WATER": "asyncio's transport semantics (pause at any unsent byte)",
    "ws_edge/sockets.py:CLIENT_CLOSED_REQUEST": "the HTTP status logged for a client's reset (nginx's 499)",
}


def _is_number(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int | float) and not isinstance(node.value, bool)
    if isinstance(node, ast.UnaryOp):
        return _is_number(node.operand)
    if isinstance(node, ast.BinOp):
        sides = (node.left, node.right)
        return any(_is_number(side) for side in sides) and all(
            _is_number(side) or isinstance(side, ast.Name) for side in sides
        )
    return False


def _numbers(path: Path) -> list[str]:
    found = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else node.targets[0]
            if isinstance(node, ast.Assign)
            else None
        )
        value = node.value if isinstance(node, ast.AnnAssign | ast.Assign) else None
        if isinstance(target, ast.Name) and target.id.lstrip("_").isupper() and value is not None and _is_number(value):
            found.append(target.id)
    return found


def test_every_number_outside_the_limits_modules_is_a_listed_fact() -> None:
    stray = [
        f"{path.relative_to(ROOT)}:{name}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in LIMITS_MODULES
        for name in _numbers(path)
    ]
    unlisted = sorted(set(stray) - set(FACTS))
    assert not unlisted, f"limits outside schemas/limits.py and ctxmeter/limits.py: {unlisted}"
    assert not set(FACTS) - set(stray), f"facts listed that no longer exist: {sorted(set(FACTS) - set(stray))}"


def test_every_limit_is_final_and_has_its_reason() -> None:
    # A limit's reason is the comment above it (a run of names may share one).
    for module in LIMITS_MODULES:
        lines = (ROOT / module).read_text(encoding="utf-8").splitlines()
        reasoned = False
        for number, line in enumerate(lines):
            if line.startswith("#"):
                reasoned = True
            elif not line.strip():
                reasoned = False
            elif line[:1].isupper() and "=" in line:
                name = line.split(":", 1)[0].split("=", 1)[0].strip()
                if name in UNITS:
                    continue
                assert ": Final" in line, f"{module}:{number + 1} {name} is not Final"
                assert reasoned, f"{module}:{number + 1} {name} has no comment saying why"


def test_the_contracts_limits_import_nothing_of_ours() -> None:
    tree = ast.parse((ROOT / "schemas/limits.py").read_text(encoding="utf-8"))
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported == ["__future__", "typing"]
