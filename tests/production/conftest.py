"""Production tests: real nats-servers configured for TLS, credentials and least-privilege users, and a
3-node cluster; the real functions and edge run against them.

Each test starts the servers it needs (the shared test server cannot be reconfigured), so the shared
``nats_url`` fixture is not used here.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import pytest

from ctxmeter.settings import Settings
from functions.counting import TokenCounter
from functions.encodings import preload
from functions.runner import FunctionsRuntime
from tests.cluster import NatsCluster
from tests.edge.helpers import frames_until, next_frame, used_is, ws_url
from tests.production.pki import Pki
from tests.production.servers import AUTH_CONF, PERMISSIONS_CONF
from ws_edge.app import EdgeServer

# A safety net so a broken part fails a test instead of hanging it; never a performance bound.
WAIT_S: Final = 20.0
# Short enough that a failing credential fails fast; the real default (30 s) is for real deployments.
CONNECT_WAIT_S: Final = 5.0


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def counter() -> Iterator[TokenCounter]:
    """One set of counting workers for every functions runtime of these tests (building encodings costs)."""
    preload()
    shared = TokenCounter(workers=1)
    shared.start_workers()
    try:
        yield shared
    finally:
        shared.close()


def part_settings(nats_url: str, **values: Any) -> Settings:
    """Settings for a part under test: the edge on a free loopback port, quick to fail on bad credentials."""
    base: dict[str, Any] = {
        "nats_url": nats_url,
        "nats_connect_wait": CONNECT_WAIT_S,
        "host": "127.0.0.1",
        "port": 0,
        "throttle_ms": 20,
        "kv_ttl": 600,
    }
    return Settings(**{**base, **values})


@contextlib.asynccontextmanager
async def running(
    functions_settings: Settings, edge_settings: Settings, counter: TokenCounter
) -> AsyncIterator[tuple[FunctionsRuntime, EdgeServer]]:
    """The functions and an edge, each on its own connection and settings (credentials), started."""
    functions = FunctionsRuntime(functions_settings, counter)
    await functions.start()
    try:
        async with EdgeServer(edge_settings) as edge:
            yield functions, edge
    finally:
        await functions.stop()


async def round_trip(edge: EdgeServer, session_id: str, used: int, total: int = 100_000) -> None:
    """The whole path: a socket opens (the edge reads the bucket), a change goes HTTP → edge → NATS →
    functions → KV → event → edge → the socket's frame; and /readyz says ready."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{edge.url}/readyz") as ready:
            assert ready.status == 200, await ready.text()
        async with http.ws_connect(ws_url(edge.url, session_id)) as ws:
            first = await next_frame(ws)
            assert first["type"] == "context_update"
            body = {"used": used, "total": total}
            async with http.post(f"{edge.url}/api/counters/context/{session_id}", json=body) as reply:
                assert reply.status == 200, await reply.text()
                assert (await reply.json())["used"] == used
            frames = await frames_until(ws, used_is(used))
            assert frames[-1]["data"]["total"] == total


def monitor(port: int, path: str) -> Any:
    """A JSON page of a nats-server's monitoring endpoint (``/connz``, ``/jsz?streams=true``...)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


# The users of deploy/nats/auth.conf (the functions connect as two: functions for the state, service for
# the requests and their replies).
USERS: Final = ("functions", "service", "edge", "agent", "watcher")


@dataclass(frozen=True)
class SecuredCluster:
    """A 3-node cluster running the shipped deploy/nats/auth.conf: each part connects as its own
    least-privilege user."""

    nodes: NatsCluster
    passwords: dict[str, str]

    def url(self, user: str, node: str | None = None) -> str:
        """``user``'s URL(s), with the password: one node's, or every node's comma-separated."""
        chosen = [self.nodes.node(node)] if node is not None else self.nodes.nodes
        secret = self.passwords[user]
        return ",".join(one.url.replace("nats://", f"nats://ctxmeter-{user}:{secret}@", 1) for one in chosen)

    def functions_urls(self, node: str | None = None) -> dict[str, str]:
        """The functions' settings for their two users (state, and the service connection)."""
        return {"nats_url": self.url("functions", node), "nats_service_url": self.url("service", node)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredCluster]:
    """Three nats-servers routed on loopback with JetStream and the shipped users, shared by one test
    module; a test that kills a node starts it again before it ends."""
    passwords = {user: f"pw-{user}-{uuid.uuid4().hex[:8]}" for user in USERS}
    with pytest.MonkeyPatch.context() as env:
        # nats-server reads the passwords auth.conf names from its environment (on restarts too).
        for user, secret in passwords.items():
            env.setenv(f"CTXMETER_{user.upper()}_PASSWORD", secret)
        nodes = NatsCluster(
            tmp_path_factory.mktemp("cluster"),
            extra=f"include {AUTH_CONF.name}\n",
            files=(AUTH_CONF, PERMISSIONS_CONF),
        )
        nodes.start()
        try:
            yield SecuredCluster(nodes, passwords)
        finally:
            nodes.stop()
