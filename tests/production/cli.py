"""``ctxmeter functions`` and ``ctxmeter edge`` as real processes, with every line they print kept."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

CTXMETER: Final = str(Path(sys.executable).parent / "ctxmeter")
PROJECT: Final = Path(__file__).resolve().parents[2]
# Safety nets (a start loads the encodings; a stop drains NATS); never performance bounds.
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 30.0
EDGE_URL: Final = re.compile(r"ctxmeter edge: (http://\S+?)/ ")


def clean_env(**values: str) -> dict[str, str]:
    """The environment without CTXMETER_* settings (so only what the test gives counts), plus ``values``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CTXMETER_")}
    return {**env, **values}


class Cli:
    """One ``ctxmeter`` process; ``output`` is everything it wrote, stdout and stderr."""

    def __init__(self, *args: str, env: Mapping[str, str]) -> None:
        self.args = args
        self.env = dict(env)
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._new_line = asyncio.Condition()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            CTXMETER,
            *self.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            cwd=PROJECT,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(stream)) for stream in (self.process.stdout, self.process.stderr)
        ]

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            async with self._new_line:
                self.lines.append(line.decode(errors="replace").rstrip("\n"))
                self._new_line.notify_all()

    async def wait_for(self, pattern: str | re.Pattern[str]) -> re.Match[str]:
        """The first line matching ``pattern`` (waiting for it); fails if the process ends first."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        async with asyncio.timeout(START_TIMEOUT_S), self._new_line:
            while True:
                for line in self.lines:
                    if found := regex.search(line):
                        return found
                assert self.process is not None
                if self.process.returncode is not None or all(reader.done() for reader in self._readers):
                    raise AssertionError(f"ctxmeter {self.args[0]} ended:\n{self.output}")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._new_line.wait()

    async def wait(self) -> int:
        """Until the process ends on its own; its exit status."""
        assert self.process is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            code = await self.process.wait()
            await asyncio.gather(*self._readers)
        return code

    async def stop(self) -> int:
        """SIGTERM, as a supervisor stops it; its exit status."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                code = await self.process.wait()
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        await asyncio.gather(*self._readers)
        return code
