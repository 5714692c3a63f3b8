"""The ``ctxmeter`` command: count, schemas, and ``up`` as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import nats
import nats.errors
import pytest

from ctxmeter.natsserver import free_port
from schemas import subjects
from schemas.export import render_schemas
from schemas.models import ContextUsage, TokenCount
from schemas.subjects import ContextOp
from tests.natsproc import NatsProcess

CTXMETER: Final = str(Path(sys.executable).parent / "ctxmeter")
PROJECT: Final = Path(__file__).resolve().parents[2]
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 30.0


def _env() -> dict[str, str]:
    """The environment without CTXMETER_* settings, so flags alone decide."""
    return {name: value for name, value in os.environ.items() if not name.startswith("CTXMETER_")}


def _ctxmeter(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CTXMETER, *args], input=stdin, capture_output=True, text=True, env=_env(), cwd=PROJECT, timeout=60
    )


# -- count ----------------------------------------------------------------------------------


def test_count_argument_and_stdin() -> None:
    by_argument = _ctxmeter("count", "hello world", "--model", "gpt-4o")
    assert (by_argument.returncode, by_argument.stdout) == (0, "2\n")
    # Known ids: [519, 85342, 34500, 479, 8997, 2191] in cl100k_base.
    by_stdin = _ctxmeter("count", "--encoding", "cl100k_base", stdin="antidisestablishmentarianism")
    assert (by_stdin.returncode, by_stdin.stdout) == (0, "6\n")
    special = _ctxmeter("count", "--encoding", "cl100k_base", stdin="<|endoftext|>")
    assert (special.returncode, special.stdout) == (0, "7\n")


def test_count_json() -> None:
    result = _ctxmeter("count", "hello world", "--model", "claude-sonnet-4", "--json")
    assert result.returncode == 0
    reply = TokenCount.model_validate_json(result.stdout)
    assert (reply.count, reply.model, reply.encoding.value, reply.exact) == (2, "claude-sonnet-4", "cl100k_base", False)
    default = TokenCount.model_validate_json(_ctxmeter("count", "--json", stdin="hello world").stdout)
    assert (default.count, default.model, default.encoding.value, default.exact) == (2, None, "o200k_base", True)


def test_count_unknown_model() -> None:
    result = _ctxmeter("count", "hi", "--model", "no-such-model")
    assert result.returncode == 2
    assert "no-such-model" in result.stderr
    assert result.stdout == ""
    with_encoding = _ctxmeter("count", "hi there", "--model", "no-such-model", "--encoding", "o200k_base", "--json")
    assert json.loads(with_encoding.stdout) == {
        "count": 2,
        "model": "no-such-model",
        "encoding": "o200k_base",
        "exact": False,
    }


# -- schemas --------------------------------------------------------------------------------


def test_schemas_command_writes_the_schema_files(tmp_path: Path) -> None:
    result = _ctxmeter("schemas", "--out", str(tmp_path))
    assert result.returncode == 0
    expected = render_schemas()
    assert sorted(Path(line).name for line in result.stdout.splitlines()) == sorted(expected)
    for name, text in expected.items():
        assert (tmp_path / name).read_text(encoding="utf-8") == text


# -- up -------------------------------------------------------------------------------------


def _nats_server_children(pid: int) -> list[int]:
    """nats-server processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            name = fields[0].split("(", 1)[1]
            parent = int(fields[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and name == "nats-server":
            found.append(int(stat.parent.name))
    return found


def _process_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


class Up:
    def __init__(self, process: asyncio.subprocess.Process, nats_port: int) -> None:
        self.process = process
        self.nats_port = nats_port
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        await self._reader
        return code


@asynccontextmanager
async def running_up(store: Path, *flags: str) -> AsyncIterator[Up]:
    nats_port, monitor_port, edge_port = free_port(), free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        CTXMETER,
        "up",
        "--nats-port",
        str(nats_port),
        "--nats-monitor-port",
        str(monitor_port),
        "--port",
        str(edge_port),
        "--store",
        str(store),
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=_env(),
        cwd=PROJECT,
    )
    up = Up(process, nats_port)
    try:
        yield up
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _request_when_serving(up: Up, subject: str, payload: bytes) -> bytes:
    """Connect to the embedded server and retry until the functions answer."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert up.process.returncode is None, up.output
        try:
            client = await nats.connect(f"nats://127.0.0.1:{up.nats_port}", allow_reconnect=False, connect_timeout=1)
        except (OSError, nats.errors.Error):
            client = None
        if client is not None:
            try:
                return (await client.request(subject, payload, timeout=2)).data
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                pass
            finally:
                await client.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"ctxmeter up never answered: {up.output}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_up_serves_stops_cleanly_and_keeps_state(tmp_path: Path, session_id: str) -> None:
    store = tmp_path / "store"
    add = subjects.context(ContextOp.ADD, session_id)
    get = subjects.context(ContextOp.GET, session_id)

    async with running_up(store) as up:
        written = ContextUsage.model_validate_json(await _request_when_serving(up, add, b'{"tokens": 4321}'))
        assert written.used == 4321
        servers = _nats_server_children(up.process.pid)
        assert len(servers) == 1, servers
        assert f"nats://127.0.0.1:{up.nats_port}" in up.output
        assert str(store.resolve()) in up.output
        assert await up.stop() == 0
        # Everything it started is gone: no orphan nats-server, nothing listening on its port.
        assert not _process_exists(servers[0])
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", up.nats_port)
        assert "stopped" in up.output

    async with running_up(store) as again:
        read = ContextUsage.model_validate_json(await _request_when_serving(again, get, b"{}"))
        assert (read.used, read.revision) == (4321, written.revision)
        assert await again.stop() == 0


def test_up_refuses_a_nats_port_another_server_holds(own_nats: NatsProcess, tmp_path: Path) -> None:
    """A port that accepts connections is not proof that *our* server started: fail, never attach to it."""
    flags = ["--nats-port", str(own_nats.port), "--nats-monitor-port", "0", "--port", str(free_port())]
    result = subprocess.run(
        [CTXMETER, "up", *flags, "--store", str(tmp_path / "store")],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=PROJECT,
        timeout=60,
    )
    assert result.returncode == 1
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert "ctxmeter up: functions" not in result.stdout


@pytest.mark.slow
async def test_functions_serve_their_metrics(own_nats: NatsProcess, session_id: str) -> None:
    metrics_port = free_port()
    process = await asyncio.create_subprocess_exec(
        CTXMETER, "functions", "--nats-url", own_nats.url, "--metrics-port", str(metrics_port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=_env(), cwd=PROJECT,
    )  # fmt: skip
    up = Up(process, own_nats.port)
    try:
        await _request_when_serving(up, subjects.context(ContextOp.ADD, session_id), b'{"tokens": 1}')
        await _request_when_serving(up, subjects.context(ContextOp.ADD, session_id), b'{"tokens": "x"}')
        reader, writer = await asyncio.open_connection("127.0.0.1", metrics_port)
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        exposition = (await reader.read()).decode()
        writer.close()
        assert 'ctxmeter_functions_request_duration_seconds_count{endpoint="add",outcome="ok"}' in exposition
        assert 'ctxmeter_functions_errors_total{code="invalid_request",reply="sent"} 1.0' in exposition
        assert "ctxmeter_functions_events_published_total" in exposition
        assert f"metrics http://127.0.0.1:{metrics_port}/metrics" in up.output
    finally:
        assert await up.stop() == 0
