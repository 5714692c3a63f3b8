"""ctxmeter on a 3-node cluster running the shipped users (deploy/nats/auth.conf): replicated state,
parts on different nodes, each connected as its least-privilege user to one node only (it learns the
others from the cluster), and the loss of the node leading the bucket's stream in the middle of a load.

The failover test asserts correctness only (no change lost, none applied twice, sockets end on the
final value, /readyz back to ready); the times it measures are printed, for ctxmeter and for a bare
nats-py KV writer that sees the same kill, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

import aiohttp
import nats
import nats.errors
import nats.js.errors
import pytest
from ctxmeter_client import CtxMeter, RetryPolicy
from nats.aio.client import Client as NATS
from nats.js.api import StreamInfo
from nats.micro.request import ERROR_CODE_HEADER

from ctxmeter.settings import Settings
from functions.counting import TokenCounter
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.subjects import ContextOp
from tests.edge.helpers import frames_until, next_frame, used_is, ws_url
from tests.production.conftest import SecuredCluster, part_settings, round_trip
from ws_edge.app import EdgeServer
from ws_edge.keys import METRICS

REPLICAS: Final = 3
# One attempt of a change waits this long for a reply: longer than the functions' own NATS timeout, so
# functions that keep to it answer (an error at worst) before the client gives up on the attempt.
ATTEMPT_TIMEOUT_S: Final = 3.0
FUNCTIONS_TIMEOUT_S: Final = 2.0
RETRY_WAIT_S: Final = 0.05
# Codes a client retries (with the same idempotency key); anything else is a bug here.
RETRIED_CODES: Final = frozenset({"conflict", "internal", "unavailable"})
IDEMPOTENCY_HEADER: Final = "Nats-Msg-Id"
DUPLICATE_HEADER: Final = "Ctxmeter-Duplicate"
SESSIONS: Final = 4
WRITERS_PER_SESSION: Final = 2
# Load before the kill, and at least this long after it once every writer got through again.
LOAD_BEFORE_KILL_S: Final = 1.0
LOAD_AFTER_RECOVERY_S: Final = 1.0
# Pacing between one writer's changes: a steady load the two shared cores can carry.
PACE_S: Final = 0.01
# A safety net: the whole failover must be over by then (it takes seconds); never a performance bound.
FAILOVER_LIMIT_S: Final = 40.0

# Adds acknowledged after the kill that show the client's session got through the failover.
RECOVERED_AFTER: Final = 50

# The bucket the shipped permissions name.
BUCKET: Final = "CTXMETER"
STREAM: Final = f"KV_{BUCKET}"

pytestmark = pytest.mark.slow


def cluster_settings(url: str, **values: object) -> Settings:
    return part_settings(url, kv_replicas=REPLICAS, request_timeout=FUNCTIONS_TIMEOUT_S, **values)


@contextlib.asynccontextmanager
async def functions_on(
    cluster: SecuredCluster, counter: TokenCounter, node: str | None = None
) -> AsyncIterator[FunctionsRuntime]:
    """The functions connected to ``node`` (every node when None) as their two users."""
    urls = cluster.functions_urls(node)
    runtime = FunctionsRuntime(cluster_settings(urls["nats_url"], nats_service_url=urls["nats_service_url"]), counter)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def stream_info(nc: NATS, stream: str) -> StreamInfo:
    return await nc.jetstream().stream_info(stream)


# -- replicas and placement -------------------------------------------------------------------


async def test_replicated_bucket_with_parts_on_different_nodes(cluster: SecuredCluster, counter: TokenCounter) -> None:
    """Two functions and two edges, each connected to one node: a change made through one edge reaches a
    socket on the other, and the bucket and its history are replicated on every node."""
    async with (
        functions_on(cluster, counter, "n1"),
        functions_on(cluster, counter, "n2"),
        EdgeServer(cluster_settings(cluster.url("edge", "n2"))) as edge_a,
        EdgeServer(cluster_settings(cluster.url("edge", "n3"))) as edge_b,
        aiohttp.ClientSession() as http,
    ):
        session_id = f"s-{uuid.uuid4().hex}"
        async with http.ws_connect(ws_url(edge_b.url, session_id)) as ws:
            assert (await next_frame(ws))["data"]["used"] == 0
            async with http.post(f"{edge_a.url}/api/counters/context/{session_id}", json={"used": 42}) as reply:
                assert reply.status == 200, await reply.text()
            await frames_until(ws, used_is(42))
        await round_trip(edge_b, f"s-{uuid.uuid4().hex}", 7)
        # The parts really are on different nodes: each node's /connz lists its own clients.
        names = {
            node.name: {conn.get("name") for conn in cluster.nodes.monitor(node.name, "/connz")["connections"]}
            for node in cluster.nodes.nodes
        }
        assert "ctxmeter-functions" in names["n1"] and "ctxmeter-functions" in names["n2"]
        assert "ctxmeter-edge" in names["n2"] and "ctxmeter-edge" in names["n3"]
    nc = await nats.connect(cluster.url("functions").split(","))
    try:
        for stream in (STREAM, f"{BUCKET}_HISTORY"):
            info = await stream_info(nc, stream)
            assert info.config.num_replicas == REPLICAS
            assert info.cluster is not None and info.cluster.leader is not None
            assert len(info.cluster.replicas or []) == REPLICAS - 1
    finally:
        await nc.close()


# -- failover ---------------------------------------------------------------------------------


@dataclass
class Writes:
    """What one kind of writer saw: per change, how long from its first attempt to its success."""

    name: str
    waits: list[float] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)  # monotonic times of each success
    attempts: int = 0
    duplicates: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    # Set when a change first tried after ``kill_at`` (once the test has set it) got through.
    kill_at: float | None = None
    recovered: asyncio.Event = field(default_factory=asyncio.Event)
    # The slowest change: when it started, and each attempt's (start, outcome).
    slowest: tuple[float, list[tuple[float, str]]] = (0.0, [])

    def failed(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def record(self, started: float, tried: list[tuple[float, str]]) -> None:
        now = time.monotonic()
        self.waits.append(now - started)
        self.successes.append(now)
        if now - started >= max(self.waits):
            self.slowest = (started, [*tried, (now, "answered")])
        if self.kill_at is not None and started > self.kill_at:
            self.recovered.set()

    def longest_gap(self, since: float) -> float:
        """The longest time with no change succeeding at all, from ``since`` on."""
        times = sorted([since, *(at for at in self.successes if at > since)])
        return max((later - earlier for earlier, later in itertools.pairwise(times)), default=0.0)

    def summary(self, kill_at: float) -> str:
        reasons = ", ".join(f"{reason} ×{count}" for reason, count in sorted(self.failures.items())) or "none"
        return (
            f"{self.name}: {len(self.waits)} changes, {self.attempts} attempts; longest wait for one change "
            f"{max(self.waits, default=0.0):.2f} s; longest time with no change going through after the kill "
            f"{self.longest_gap(kill_at):.2f} s; failed attempts: {reasons}\n"
            f"  the slowest change, from the kill: "
            + ", ".join(f"{at - kill_at:+.2f} s {outcome}" for at, outcome in self.slowest[1])
        )


async def change_until_done(nc: NATS, session_id: str, key: str, writes: Writes) -> None:
    """One ``add 1`` with idempotency key ``key``, retried with that same key until it is answered,
    as the client libraries do."""
    subject = subjects.context(ContextOp.ADD, session_id)
    started = time.monotonic()
    tried: list[tuple[float, str]] = []
    while True:
        writes.attempts += 1
        attempt = time.monotonic()
        try:
            reply = await nc.request(
                subject, b'{"tokens": 1}', timeout=ATTEMPT_TIMEOUT_S, headers={IDEMPOTENCY_HEADER: key}
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError) as error:
            writes.failed(type(error).__name__)
            tried.append((attempt, type(error).__name__))
            await asyncio.sleep(RETRY_WAIT_S)
            continue
        headers = reply.headers or {}
        if ERROR_CODE_HEADER in headers:
            code = json.loads(reply.data)["error"]["code"]
            assert code in RETRIED_CODES, reply.data
            writes.failed(code)
            tried.append((attempt, code))
            await asyncio.sleep(RETRY_WAIT_S)
            continue
        if headers.get(DUPLICATE_HEADER) == "true":
            writes.duplicates += 1
        tried.append((attempt, "duplicate" if headers.get(DUPLICATE_HEADER) == "true" else "applied"))
        writes.record(started, tried)
        return


async def ctxmeter_writer(nc: NATS, session_id: str, writer: int, stop: asyncio.Event, writes: Writes) -> int:
    """Changes one after another until ``stop``; the number made (each acknowledged exactly once)."""
    made = 0
    while not stop.is_set():
        await change_until_done(nc, session_id, f"{session_id}-{writer}-{made}", writes)
        made += 1
        await asyncio.sleep(PACE_S)
    return made


async def bare_kv_writer(nc: NATS, stop: asyncio.Event, writes: Writes) -> tuple[int, int]:
    """A counter kept with nats-py's KV alone: read, ``update`` with the revision read (CAS), retry on any
    error. (acknowledged increments, stored value): a timed-out write may have landed, and a plain CAS
    writer cannot tell, so the two may differ."""
    key = "bare.counter"
    js = nc.jetstream(timeout=FUNCTIONS_TIMEOUT_S)
    kv = await js.key_value(BUCKET)
    await kv.put(key, b"0")
    acknowledged = 0
    while not stop.is_set():
        started = time.monotonic()
        tried: list[tuple[float, str]] = []
        while True:
            writes.attempts += 1
            attempt = time.monotonic()
            try:
                entry = await kv.get(key)
                assert entry.value is not None and entry.revision is not None
                await kv.update(key, str(int(entry.value) + 1).encode(), last=entry.revision)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as error:
                writes.failed(type(error).__name__)
                tried.append((attempt, type(error).__name__))
                await asyncio.sleep(RETRY_WAIT_S)
                continue
            tried.append((attempt, "applied"))
            break
        writes.record(started, tried)
        acknowledged += 1
        await asyncio.sleep(PACE_S)
    stored = await kv.get(key)
    assert stored.value is not None
    return acknowledged, int(stored.value)


async def watch_ready(http: aiohttp.ClientSession, edge: EdgeServer, stop: asyncio.Event) -> list[tuple[float, int]]:
    """/readyz polled until ``stop``: (time, status) at each change of status."""
    seen: list[tuple[float, int]] = []
    while not stop.is_set():
        try:
            async with http.get(f"{edge.url}/readyz", timeout=aiohttp.ClientTimeout(total=3)) as reply:
                status = reply.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        if not seen or seen[-1][1] != status:
            seen.append((time.monotonic(), status))
        await asyncio.sleep(0.02)
    return seen


async def expected_errors(error: Exception) -> None:
    """The test's own clients see their node vanish: connection refused while they move. Expected."""


def metric(edge: EdgeServer, name: str) -> float:
    value = edge.app[METRICS].registry.get_sample_value(f"ctxmeter_edge_{name}_total", {})
    return 0.0 if value is None else value


async def test_failover_when_the_bucket_leader_dies(cluster: SecuredCluster, counter: TokenCounter) -> None:
    # The bucket (R3) exists first, so that its leader is known before placing the parts.
    async with functions_on(cluster, counter):
        pass
    leader = cluster.nodes.wait_stream_leader(STREAM)
    others = [node.name for node in cluster.nodes.nodes if node.name != leader]
    sessions = [f"s-{uuid.uuid4().hex}" for _ in range(SESSIONS)]
    # Parts given the leader's URL alone lose their node with it and must move to one they were told of
    # by the cluster (with the same credentials); the others see the leader change only.
    async with (
        functions_on(cluster, counter, leader),
        functions_on(cluster, counter, others[0]),
        EdgeServer(cluster_settings(cluster.url("edge", leader))) as doomed_edge,
        EdgeServer(cluster_settings(cluster.url("edge", others[1]))) as safe_edge,
        aiohttp.ClientSession() as http,
    ):
        client_options = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.1, "error_cb": expected_errors}
        agents = await nats.connect(cluster.url("agent").split(","), **client_options)
        # The bare writer (with the functions' rights on the bucket) starts on the leader too.
        bare_urls = cluster.url("functions").split(",")
        bare_urls.sort(key=lambda address: not address.endswith(f":{cluster.nodes.node(leader).process.port}"))
        bare = await nats.connect(bare_urls, dont_randomize=True, **client_options)
        sockets = []
        try:
            for session_id in sessions:
                for edge in (doomed_edge, safe_edge):
                    ws = await http.ws_connect(ws_url(edge.url, session_id))
                    assert (await next_frame(ws))["data"]["used"] == 0
                    sockets.append((session_id, ws))
            stop = asyncio.Event()
            ctx_writes, bare_writes = Writes("ctxmeter (agent → functions → KV)"), Writes("bare nats-py KV writer")
            writers = [
                asyncio.create_task(ctxmeter_writer(agents, session_id, writer, stop, ctx_writes))
                for session_id in sessions
                for writer in range(WRITERS_PER_SESSION)
            ]
            bare_task = asyncio.create_task(bare_kv_writer(bare, stop, bare_writes))
            readiness = {
                name: asyncio.create_task(watch_ready(http, edge, stop))
                for name, edge in (("edge on the killed node", doomed_edge), ("edge on a surviving node", safe_edge))
            }

            await asyncio.sleep(LOAD_BEFORE_KILL_S)
            kill_at = ctx_writes.kill_at = bare_writes.kill_at = time.monotonic()
            cluster.nodes.kill(leader)
            async with asyncio.timeout(FAILOVER_LIMIT_S):
                await asyncio.gather(ctx_writes.recovered.wait(), bare_writes.recovered.wait())
                await asyncio.sleep(LOAD_AFTER_RECOVERY_S)
                stop.set()
                made = await asyncio.gather(*writers)
                acknowledged, stored = await bare_task
                ready_log = {name: await task for name, task in readiness.items()}
            new_leader = cluster.nodes.stream_leader(STREAM)

            # No change lost, none applied twice: each session holds exactly its acknowledged changes.
            per_session = {session_id: 0 for session_id in sessions}
            for (session_id, _), count in zip(
                [(s, w) for s in sessions for w in range(WRITERS_PER_SESSION)], made, strict=True
            ):
                per_session[session_id] += count
            for session_id, expected in per_session.items():
                reply = await agents.request(subjects.context(ContextOp.GET, session_id), b"{}", timeout=5)
                assert json.loads(reply.data)["used"] == expected, (session_id, expected, reply.data)
            # Every socket, on either edge, kept its session and ends on the final value.
            for session_id, ws in sockets:
                await frames_until(ws, used_is(per_session[session_id]))
                assert not ws.closed
            # The edge on the killed node saw the outage and came back; both are ready at the end.
            assert metric(doomed_edge, "nats_reconnects") >= 1
            assert metric(safe_edge, "nats_reconnects") == 0
            for edge in (doomed_edge, safe_edge):
                async with http.get(f"{edge.url}/readyz") as ready:
                    assert ready.status == 200
            for name, log in ready_log.items():
                assert log[-1][1] == 200, (name, log)
        finally:
            for _, ws in sockets:
                await ws.close()
            await agents.close()
            await bare.close()
            cluster.nodes.restart(leader)
            cluster.nodes.wait_ready()

    report = [
        "",
        f"failover: killed {leader} (leader of {STREAM}); new leader {new_leader}",
        ctx_writes.summary(kill_at),
        f"  changes acknowledged {sum(made)}, stored {sum(per_session.values())}; "
        f"answered as duplicates of an earlier attempt: {ctx_writes.duplicates}",
        bare_writes.summary(kill_at),
        f"  increments acknowledged {acknowledged}, stored {stored} (a CAS writer cannot tell whether a timed-out "
        "write landed)",
    ]
    for name, log in ready_log.items():
        changes = ", ".join(f"{at - kill_at:+.2f} s → {status}" for at, status in log)
        report.append(f"/readyz of the {name}: {changes}")
    print("\n".join(report))


async def test_the_python_client_rides_out_the_leader_kill(cluster: SecuredCluster, counter: TokenCounter) -> None:
    """The client library's own retries (one idempotency key per call, reused on every retry) across the
    loss of the node leading the bucket: every acknowledged add is stored once, none twice."""
    async with functions_on(cluster, counter):
        pass
    leader = cluster.nodes.wait_stream_leader(STREAM)
    others = [node.name for node in cluster.nodes.nodes if node.name != leader]
    session_id = f"client-{uuid.uuid4().hex}"
    # A failover takes seconds: the deadline is set above it, as a clustered deployment would.
    retry = RetryPolicy(deadline=FAILOVER_LIMIT_S, attempt_timeout=ATTEMPT_TIMEOUT_S)
    async with (
        functions_on(cluster, counter, leader),
        functions_on(cluster, counter, others[0]),
        await CtxMeter.connect(
            cluster.url("agent", leader).split(","), retry=retry, max_reconnect_attempts=-1,
            reconnect_time_wait=0.1, error_cb=expected_errors,
        ) as meter,
    ):  # fmt: skip
        stop, recovered = asyncio.Event(), asyncio.Event()
        acknowledged = 0
        after_kill: int | None = None

        async def adds() -> None:
            nonlocal acknowledged
            while not stop.is_set():
                await meter.add(session_id, 1)
                acknowledged += 1
                if after_kill is not None and acknowledged >= after_kill + RECOVERED_AFTER:
                    recovered.set()
                await asyncio.sleep(PACE_S)

        try:
            workers = [asyncio.create_task(adds()) for _ in range(WRITERS_PER_SESSION * 2)]
            await asyncio.sleep(LOAD_BEFORE_KILL_S)
            after_kill = acknowledged
            cluster.nodes.kill(leader)
            async with asyncio.timeout(FAILOVER_LIMIT_S):
                await recovered.wait()
            stop.set()
            await asyncio.gather(*workers)
            assert (await meter.get(session_id)).used == acknowledged
        finally:
            cluster.nodes.restart(leader)
            cluster.nodes.wait_ready()
