"""The Node.js client (clients/node): its own tests, run by ``node --test`` against real servers.

The pytest suite is the project's one test command, so this wrapper serves what the Node tests need
and runs them as a subprocess:
- ``CTXMETER_NODE_NATS_URL``: the suite's NATS, with the real functions serving (the ``functions`` fixture);
- ``CTXMETER_NODE_BARE_NATS_URL``: a nats-server of the test's own where nothing serves, for the retry
  tests. A Node test asks for the real functions there with a request on ``ctxmeter_test.functions.start``
  (and ``.stop``), so that a call made before they serve is seen to succeed once they do.

Node.js or clients/node/node_modules missing skips the test, except under ``CI=true``, where it fails:
CI installs both (.ci/run), so a missing one there is a broken setup, not a reason to skip.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from types import TracebackType
from typing import Final

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from tests.natsproc import NatsProcess
from tests.tools import require

NODE_DIR: Final = Path(__file__).resolve().parents[2] / "clients" / "node"
START_SUBJECT: Final = "ctxmeter_test.functions.start"
STOP_SUBJECT: Final = "ctxmeter_test.functions.stop"
# The whole Node run; it takes some seconds (the retry tests wait out short deadlines).
NODE_TIMEOUT_S: Final = 240.0


def _node() -> str:
    """The node binary, or a skip (a failure under CI=true) naming what is missing."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node is not on PATH (apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / "@nats-io" / "transport-node").is_dir():
        missing.append("clients/node/node_modules is not installed (npm ci --prefix clients/node)")
    require(missing, "the Node.js client's tests must run")
    assert node is not None
    return node


class LateFunctions:
    """Starts the real functions on a NATS server when a Node test asks, and stops them when it asks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime: FunctionsRuntime | None = None
        self.failures: list[str] = []
        self._nc: NATS | None = None

    async def __aenter__(self) -> LateFunctions:
        self._nc = await nats.connect(self.settings.nats_url)
        await self._nc.subscribe(START_SUBJECT, cb=self._start)
        await self._nc.subscribe(STOP_SUBJECT, cb=self._stop)
        await self._nc.flush()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._nc is not None:
            await self._nc.drain()
        await self._stop_runtime()

    async def _start(self, msg: Msg) -> None:
        try:
            if self.runtime is None:
                self.runtime = FunctionsRuntime(self.settings)
                await self.runtime.start()
            await msg.respond(b"started")
        except Exception as failure:
            self.failures.append(f"starting the functions failed: {failure!r}")
            await msg.respond(f"failed: {failure!r}".encode())

    async def _stop(self, msg: Msg) -> None:
        await self._stop_runtime()
        await msg.respond(b"stopped")

    async def _stop_runtime(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            await runtime.stop()


async def _run(command: list[str], env: dict[str, str]) -> tuple[int | None, str]:
    """Runs ``command`` in clients/node; its exit code (None when it had to be killed) and its output."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=NODE_DIR, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert process.stdout is not None
    chunks: list[bytes] = []

    async def read() -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(65536):
            chunks.append(chunk)

    try:
        await asyncio.wait_for(asyncio.gather(read(), process.wait()), NODE_TIMEOUT_S)
        code: int | None = process.returncode
    except TimeoutError:
        process.kill()
        await process.wait()
        code = None
    return code, b"".join(chunks).decode(errors="replace")


def _summary(output: str) -> dict[str, int]:
    """The counts of the spec reporter's closing lines (an information sign, then ``pass 41``...)."""
    return {name: int(count) for name, count in re.findall(r"^\u2139 (\w+) (\d+)$", output, re.MULTILINE)}


@pytest.mark.slow
@pytest.mark.timeout(NODE_TIMEOUT_S + 60)
async def test_node_client(
    nats_url: str, functions: FunctionsRuntime, settings: Settings, own_nats: NatsProcess
) -> None:
    node = _node()
    files = sorted(path.relative_to(NODE_DIR).as_posix() for path in (NODE_DIR / "test").glob("*.test.js"))
    assert files, "no Node test files in clients/node/test"
    env = {
        **os.environ,
        "CTXMETER_NODE_NATS_URL": nats_url,
        "CTXMETER_NODE_BARE_NATS_URL": own_nats.url,
        "NODE_OPTIONS": "",
    }
    async with LateFunctions(settings.model_copy(update={"nats_url": own_nats.url})) as late:
        code, output = await _run([node, "--test", "--test-reporter=spec", *files], env)

    report = f"node --test exited with {code}:\n{output}"
    assert code == 0, report
    assert not late.failures, f"{late.failures}\n{report}"
    summary = _summary(output)
    assert summary.get("pass", 0) > 0 and summary.get("fail") == 0, report
    # A skipped or todo test would pass without asserting anything.
    assert summary.get("skipped") == 0 and summary.get("todo") == 0, report
