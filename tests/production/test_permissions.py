"""The shipped least-privilege users (deploy/nats/auth.conf, permissions.conf) on a real nats-server:
the functions and the edge work under their own users; an agent reaches the request subjects and
nothing else (no forged events, no bucket, no JetStream); a watcher reads and cannot change anything;
and the functions run without the right to create streams once an operator has provisioned them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import aiohttp
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ctxmeter.bucket import StoreUnavailable, bucket_config
from ctxmeter.settings import Settings
from functions.counting import TokenCounter
from functions.history import stream_config
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.subjects import ContextOp
from tests.edge.helpers import context_event, frames_until, next_frame, used_is, ws_url
from tests.natsproc import NatsProcess
from tests.production.conftest import USERS, WAIT_S, monitor, part_settings, round_trip, running
from tests.production.servers import AUTH_CONF, PERMISSIONS_CONF, include, start_server

# How long a denied request waits for the reply that cannot come (the violation itself is immediate).
DENIED_REQUEST_S: Final = 0.5


def password(user: str) -> str:
    return f"pw-{user}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def passwords(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Each user's password, in the environment nats-server reads them from (as auth.conf expects)."""
    chosen = {user: password(user) for user in USERS}
    for user, secret in chosen.items():
        monkeypatch.setenv(f"CTXMETER_{user.upper()}_PASSWORD", secret)
    return chosen


@pytest.fixture
def server(tmp_path: Path, passwords: dict[str, str]) -> Iterator[NatsProcess]:
    process = start_server(tmp_path, include(tmp_path, AUTH_CONF))
    yield process
    process.stop()


def url(server: NatsProcess, passwords: dict[str, str], user: str) -> str:
    return f"nats://ctxmeter-{user}:{passwords[user]}@127.0.0.1:{server.port}"


def functions_settings(server: NatsProcess, passwords: dict[str, str]) -> Settings:
    """The functions as their two users: state as ctxmeter-functions, requests and replies as ctxmeter-service."""
    return part_settings(url(server, passwords, "functions"), nats_service_url=url(server, passwords, "service"))


class Client:
    """A plain nats-py client under one of the users, keeping the errors the server sends it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: NATS | None = None
        self._error = asyncio.Condition()

    async def connect(self, url: str) -> NATS:
        async def on_error(error: Exception) -> None:
            async with self._error:
                self.errors.append(str(error))
                self._error.notify_all()

        self.nc = await nats.connect(url, error_cb=on_error, max_reconnect_attempts=-1)
        return self.nc

    async def denied(self, action: str, subject: str) -> None:
        """The server told this client it may not ``action`` (Publish, Subscription) ``subject``."""
        expected = f'permissions violation for {action} to "{subject}"'.lower()
        async with asyncio.timeout(WAIT_S), self._error:
            await self._error.wait_for(lambda: any(expected in error.lower() for error in self.errors))


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    one = Client()
    yield one
    if one.nc is not None:
        await one.nc.close()


def server_log(server: NatsProcess) -> str:
    return (server.store / "nats-server.log").read_text()


async def request(nc: NATS, subject: str, body: object) -> dict[str, object]:
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=WAIT_S)
    answer: dict[str, object] = json.loads(reply.data)
    assert "error" not in answer, answer
    return answer


async def test_functions_and_edge_under_their_own_users(
    server: NatsProcess, passwords: dict[str, str], counter: TokenCounter
) -> None:
    functions = functions_settings(server, passwords)
    edge = part_settings(url(server, passwords, "edge"))
    session_id = f"s-{uuid.uuid4().hex}"
    async with running(functions, edge, counter) as (_, edge_server), aiohttp.ClientSession() as http:
        await round_trip(edge_server, session_id, 10)
        base = f"{edge_server.url}/api/counters"
        calls = [
            ("POST", f"{base}/context/{session_id}/add", {"tokens": 5}),
            ("POST", f"{base}/context/{session_id}/compact", {"used": 3}),
            ("GET", f"{base}/context/{session_id}/history", None),
            ("POST", f"{base}/tokens/{session_id}", {"text": "hello world"}),
            ("POST", f"{base}/tokens", {"text": "hello world"}),
            ("GET", f"{base}/models", None),
        ]
        for method, address, body in calls:
            async with http.request(method, address, json=body) as reply:
                assert reply.status == 200, (address, await reply.text())
        async with http.get(f"{base}/context/{session_id}/history") as reply:
            assert [point["op"] for point in (await reply.json())["points"]] == ["set", "add", "compact"]
    assert "Violation" not in server_log(server)


async def test_functions_restart_on_the_bucket_they_made(
    server: NatsProcess, passwords: dict[str, str], counter: TokenCounter
) -> None:
    """The second start binds what the first created: info and reads, no create."""
    settings = functions_settings(server, passwords)
    for _ in range(2):
        runtime = FunctionsRuntime(settings, counter)
        await runtime.start()
        await runtime.stop()
    assert "Violation" not in server_log(server)


async def test_agent_reaches_every_request_subject(
    server: NatsProcess, passwords: dict[str, str], counter: TokenCounter, client: Client
) -> None:
    functions = FunctionsRuntime(functions_settings(server, passwords), counter)
    await functions.start()
    try:
        nc = await client.connect(url(server, passwords, "agent"))
        session_id = f"s-{uuid.uuid4().hex}"
        await request(nc, subjects.context(ContextOp.SET, session_id), {"used": 100, "total": 1000})
        await request(nc, subjects.context(ContextOp.ADD, session_id), {"tokens": 50})
        await request(nc, subjects.context(ContextOp.FREE, session_id), {"tokens": 30})
        usage = {"prompt_tokens": 200, "completion_tokens": 20}
        await request(nc, subjects.context(ContextOp.USAGE, session_id), {"usage": usage})
        assert (await request(nc, subjects.context(ContextOp.GET, session_id), {}))["used"] == 220
        history = await request(nc, subjects.context(ContextOp.HISTORY, session_id), {})
        assert len(history["points"]) == 4  # type: ignore[arg-type]
        assert (await request(nc, "ctxmeter.tokens.count", {"text": "hello world"}))["count"] == 2
        assert (await request(nc, f"ctxmeter.tokens.draft.{session_id}", {"text": "hello world"}))["count"] == 2
        assert (await request(nc, "ctxmeter.models", {}))["models"]
        await request(nc, subjects.context(ContextOp.RESET, session_id), {})
        assert client.errors == []
    finally:
        await functions.stop()


async def test_an_agent_cannot_forge_events(
    server: NatsProcess, passwords: dict[str, str], counter: TokenCounter, client: Client
) -> None:
    """A forged frame published by an agent never reaches a browser's socket; the agent cannot listen
    to other sessions' events either."""
    functions = functions_settings(server, passwords)
    edge = part_settings(url(server, passwords, "edge"))
    session_id = f"s-{uuid.uuid4().hex}"
    async with running(functions, edge, counter) as (_, edge_server), aiohttp.ClientSession() as http:
        nc = await client.connect(url(server, passwords, "agent"))
        async with http.ws_connect(ws_url(edge_server.url, session_id)) as ws:
            assert (await next_frame(ws))["data"]["used"] == 0
            forged = context_event(session_id, 999_999, revision=1_000_000)
            await nc.publish(subjects.events(session_id), forged)
            await client.denied("Publish", subjects.events(session_id))
            # What the socket gets next is the real change, and nothing forged came before it.
            await request(nc, subjects.context(ContextOp.SET, session_id), {"used": 7})
            frames = await frames_until(ws, used_is(7))
            assert all(frame["data"]["used"] != 999_999 for frame in frames)

        listener = await nc.subscribe(subjects.events(session_id))
        await client.denied("Subscription", subjects.events(session_id))
        await request(nc, subjects.context(ContextOp.SET, session_id), {"used": 8})
        with pytest.raises(TimeoutError):
            await listener.next_msg(timeout=DENIED_REQUEST_S)


async def test_an_agent_cannot_touch_the_bucket_or_jetstream(
    server: NatsProcess, passwords: dict[str, str], counter: TokenCounter, client: Client
) -> None:
    functions = FunctionsRuntime(functions_settings(server, passwords), counter)
    await functions.start()
    try:
        nc = await client.connect(url(server, passwords, "agent"))
        session_id = f"s-{uuid.uuid4().hex}"
        await request(nc, subjects.context(ContextOp.SET, session_id), {"used": 5})
        key_subject = f"$KV.CTXMETER.{subjects.context_key(session_id)}"
        # A direct write of the state, a read, bucket info, deleting the stream, any JetStream API.
        await nc.publish(key_subject, b'{"used": 999999}')
        await client.denied("Publish", key_subject)
        for subject in (
            f"$JS.API.DIRECT.GET.KV_CTXMETER.{key_subject}",
            "$JS.API.STREAM.MSG.GET.KV_CTXMETER",
            "$JS.API.STREAM.INFO.KV_CTXMETER",
            "$JS.API.STREAM.DELETE.KV_CTXMETER",
            "$JS.API.STREAM.PURGE.KV_CTXMETER",
            "$JS.API.INFO",
        ):
            await nc.publish(subject, b"{}", reply=nc.new_inbox())
            await client.denied("Publish", subject)
        # Nor the history stream, nor the functions' discovery, nor someone else's inbox traffic.
        for subject in ("ctxmeter.history.CTXMETER.x", "$SRV.STATS.ctxmeter"):
            await nc.publish(subject, b"{}")
            await client.denied("Publish", subject)
        await nc.subscribe("$KV.CTXMETER.>")
        await client.denied("Subscription", "$KV.CTXMETER.>")
        # Nothing changed: the state is what the functions wrote.
        assert (await request(nc, subjects.context(ContextOp.GET, session_id), {}))["used"] == 5
    finally:
        await functions.stop()


def reply_routes(victim: str) -> list[str]:
    """Every subject a reply could be aimed at to touch a session or the store through the functions."""
    return [
        f"$KV.CTXMETER.{subjects.context_key(victim)}",
        f"$KV.CTXMETER.{subjects.tokens_key(victim)}",
        subjects.history("CTXMETER", victim),
        subjects.events(victim),
        "$JS.API.STREAM.PURGE.KV_CTXMETER",
        "$JS.API.STREAM.PURGE.CTXMETER_HISTORY",
    ]


async def victim_as_it_was(agent: NATS, victim: str, revision: object) -> None:
    """The victim's state and history are exactly what its own changes made."""
    state = await request(agent, subjects.context(ContextOp.GET, victim), {})
    assert (state["used"], state["revision"]) == (10, revision)
    history = await request(agent, subjects.context(ContextOp.HISTORY, victim), {})
    assert [point["used"] for point in history["points"]] == [10]  # type: ignore[attr-defined, index]


async def test_agents_cannot_touch_the_bucket_through_reply_subjects(
    server: NatsProcess, passwords: dict[str, str], counter: TokenCounter, client: Client
) -> None:
    """The docs' claim, every route tried: requests whose reply subject is a victim's key, history or
    events, or the JetStream API, from an agent (every endpoint) and a watcher (discovery)."""
    functions = FunctionsRuntime(functions_settings(server, passwords), counter)
    await functions.start()
    watcher = await nats.connect(url(server, passwords, "watcher"))
    try:
        agent = await client.connect(url(server, passwords, "agent"))
        attacker, victim = f"a-{uuid.uuid4().hex}", f"v-{uuid.uuid4().hex}"
        await request(agent, subjects.context(ContextOp.SET, attacker), {"used": 99_999, "total": 100_000})
        revision = (await request(agent, subjects.context(ContextOp.SET, victim), {"used": 10}))["revision"]
        events = await watcher.subscribe(subjects.events(victim))
        await watcher.flush()
        asks = [
            (agent, subjects.context(ContextOp.GET, attacker), b"{}"),
            (agent, subjects.context(ContextOp.ADD, attacker), b'{"tokens": 1}'),
            (agent, subjects.tokens_count(), b'{"text": "hi"}'),
            (agent, subjects.models(), b"{}"),
            (watcher, "$SRV.PING.ctxmeter", b""),
            (watcher, "$SRV.STATS.ctxmeter", b""),
        ]
        for nc, subject, payload in asks:
            for route in reply_routes(victim):
                await nc.publish(subject, payload, reply=route)
            # History is pushed out by volume: many more than one session's points would be needed.
            for _ in range(50):
                await nc.publish(subject, payload, reply=subjects.history("CTXMETER", victim))
        # Each endpoint takes its requests in order: these answers come after every refusal above.
        for nc, subject, payload in asks:
            await nc.request(subject, payload, timeout=WAIT_S)

        await victim_as_it_was(agent, victim, revision)
        # Of the attacker's adds, only the last (to its inbox) was applied.
        assert (await request(agent, subjects.context(ContextOp.GET, attacker), {}))["used"] == 100_000
        with pytest.raises(TimeoutError):
            await events.next_msg(timeout=DENIED_REQUEST_S)
        total = functions.metrics.registry.get_sample_value(
            "ctxmeter_functions_replies_refused_total", {"endpoint": "get"}
        )
        assert total == len(reply_routes(victim)) + 50
        # Refused by the functions themselves: the permissions were not even needed.
        assert "Violation" not in server_log(server)
        assert client.errors == []
    finally:
        await watcher.close()
        await functions.stop()


async def test_the_service_user_can_reply_to_inboxes_only(
    server: NatsProcess, passwords: dict[str, str], counter: TokenCounter, client: Client
) -> None:
    """Were the functions' code wrong: a service that answers whatever reply subject it is handed (as
    ``allow_responses`` would let it) is stopped by the server, and the victim keeps its state."""
    functions = FunctionsRuntime(functions_settings(server, passwords), counter)
    await functions.start()
    agent = await nats.connect(url(server, passwords, "agent"))
    try:
        careless = await client.connect(url(server, passwords, "service"))

        async def answer_anything(msg: Msg) -> None:
            # "{}" is a valid purge request and a state any KV write would store.
            await careless.publish(msg.reply, b"{}")

        attacker, victim = f"a-{uuid.uuid4().hex}", f"v-{uuid.uuid4().hex}"
        await careless.subscribe(subjects.context(ContextOp.GET, attacker), cb=answer_anything)
        await careless.flush()
        revision = (await request(agent, subjects.context(ContextOp.SET, victim), {"used": 10}))["revision"]
        for route in reply_routes(victim):
            await agent.publish(subjects.context(ContextOp.GET, attacker), b"{}", reply=route)
            await client.denied("Publish", route)
        # An inbox is answered (by the functions and by the careless service both).
        inbox = agent.new_inbox()
        answers = await agent.subscribe(inbox)
        await agent.publish(subjects.context(ContextOp.GET, attacker), b"{}", reply=inbox)
        bodies = {(await answers.next_msg(timeout=WAIT_S)).data for _ in range(2)}
        assert b"{}" in bodies
        await victim_as_it_was(agent, victim, revision)
    finally:
        await agent.close()
        await functions.stop()


async def test_allow_responses_lets_a_reply_through_a_deny_list(tmp_path: Path) -> None:
    """Why the replies go out as a user of their own: nats-server's response permission is checked after
    the publish deny list and overrides it, so a user that answers requests with ``allow_responses``
    can publish into ``$KV.>`` by being handed that reply subject, even with ``$KV.>`` denied."""
    users = (
        "authorization { users = [\n"
        '  { user: responder, password: r, permissions: { publish: { deny: ["$KV.>"] }, allow_responses: true } }\n'
        "  { user: anyone, password: a }\n"
        "] }\n"
    )
    server = start_server(tmp_path, users)
    responder = await nats.connect(f"nats://responder:r@127.0.0.1:{server.port}")
    anyone = await nats.connect(f"nats://anyone:a@127.0.0.1:{server.port}")
    try:

        async def answer(msg: Msg) -> None:
            await responder.publish(msg.reply, b"through")

        await responder.subscribe("ask", cb=answer)
        await responder.flush()
        landed = await anyone.subscribe("$KV.B.k")
        await anyone.flush()
        await anyone.publish("ask", b"", reply="$KV.B.k")
        assert (await landed.next_msg(timeout=WAIT_S)).data == b"through"
        # Published on its own, the same subject is denied.
        await responder.publish("$KV.B.k", b"denied")
        with pytest.raises(TimeoutError):
            await landed.next_msg(timeout=DENIED_REQUEST_S)
    finally:
        await responder.close()
        await anyone.close()
        server.stop()


async def test_a_watcher_reads_and_cannot_change(
    server: NatsProcess, passwords: dict[str, str], counter: TokenCounter, client: Client
) -> None:
    functions = FunctionsRuntime(functions_settings(server, passwords), counter)
    await functions.start()
    agent = await nats.connect(url(server, passwords, "agent"))
    try:
        nc = await client.connect(url(server, passwords, "watcher"))
        session_id = f"s-{uuid.uuid4().hex}"
        events = await nc.subscribe(subjects.events(session_id))
        await nc.flush()
        await request(agent, subjects.context(ContextOp.SET, session_id), {"used": 12})
        event = json.loads((await events.next_msg(timeout=WAIT_S)).data)
        assert event["data"]["used"] == 12
        assert (await request(nc, subjects.context(ContextOp.GET, session_id), {}))["used"] == 12
        assert (await request(nc, subjects.context(ContextOp.HISTORY, session_id), {}))["points"]
        assert (await request(nc, "ctxmeter.models", {}))["models"]
        stats = json.loads((await nc.request("$SRV.STATS.ctxmeter", b"", timeout=WAIT_S)).data)
        assert stats["name"] == "ctxmeter"
        for op in (ContextOp.SET, ContextOp.ADD, ContextOp.RESET):
            subject = subjects.context(op, session_id)
            await nc.publish(subject, b'{"used": 1, "tokens": 1}')
            await client.denied("Publish", subject)
        await nc.publish(subjects.events(session_id), context_event(session_id, 1, revision=99))
        await client.denied("Publish", subjects.events(session_id))
        assert (await request(agent, subjects.context(ContextOp.GET, session_id), {}))["used"] == 12
    finally:
        await agent.close()
        await functions.stop()


# -- a bucket provisioned by an operator --------------------------------------------------------


CREATE_LINES: Final = '"$JS.API.STREAM.CREATE.'
MSG_GET_LINES: Final = '"$JS.API.STREAM.MSG.GET.'


def provisioned_permissions(directory: Path, *deleted: str) -> None:
    """permissions.conf as an operator edits it when provisioning: the lines holding ``deleted`` gone
    (the functions' stream-create lines, as its comments say)."""
    lines = PERMISSIONS_CONF.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not any(text in line for text in deleted)]
    assert len(kept) < len(lines)
    (directory / PERMISSIONS_CONF.name).write_text("".join(kept))


async def provision(server: NatsProcess, settings: Settings) -> None:
    """What an operator runs once, with an admin user: the bucket and the history stream, as ctxmeter
    would make them, except that the bucket allows direct gets (as `nats kv add` makes buckets): the
    parts then read it through ``$JS.API.DIRECT.GET``, the other read permission of the shipped sets."""
    admin = await nats.connect(server.url)
    try:
        js = admin.jetstream()
        await js.create_key_value(dataclasses.replace(bucket_config(settings), direct=True))
        await js.add_stream(stream_config(settings))
    finally:
        await admin.close()


async def test_functions_on_a_provisioned_bucket_need_no_create_right(
    tmp_path: Path, passwords: dict[str, str], counter: TokenCounter
) -> None:
    # The operator provisions with an admin user (here: before the users are switched on), then runs the
    # server with the users, the functions' stream-create rights deleted.
    server = start_server(tmp_path, "")
    try:
        functions = functions_settings(server, passwords)
        edge = part_settings(url(server, passwords, "edge"))
        await provision(server, functions)
        server.stop()
        server.config.write_text(server.config.read_text() + include(tmp_path, AUTH_CONF))
        # A bucket with direct gets is read through them alone: no msg get either.
        provisioned_permissions(tmp_path, CREATE_LINES, MSG_GET_LINES)
        server.start()
        async with running(functions, edge, counter) as (_, edge_server):
            await round_trip(edge_server, f"s-{uuid.uuid4().hex}", 21)
            await round_trip(edge_server, f"s-{uuid.uuid4().hex}", 22)
        assert "Violation" not in server_log(server)
        info = monitor(server.monitor_port, "/jsz?streams=true&config=true")
        streams = {stream["name"]: stream for stream in info["account_details"][0]["stream_detail"]}
        assert streams["KV_CTXMETER"]["config"]["allow_direct"] is True
    finally:
        server.stop()


@pytest.mark.slow
async def test_functions_without_the_right_to_create_a_missing_bucket(
    tmp_path: Path, passwords: dict[str, str], counter: TokenCounter, caplog: pytest.LogCaptureFixture
) -> None:
    """Not provisioned, and no right to create: the functions cannot start, and their log names the
    permission they lack (the refused request itself only times out)."""
    users = include(tmp_path, AUTH_CONF)
    provisioned_permissions(tmp_path, CREATE_LINES)
    server = start_server(tmp_path, users)
    try:
        settings = functions_settings(server, passwords)
        with caplog.at_level(logging.WARNING), pytest.raises(StoreUnavailable) as refused:
            await FunctionsRuntime(settings, counter).start()
        # The error says what was refused, in one line.
        assert "$JS.API.STREAM.CREATE.KV_CTXMETER" in str(refused.value) and "\n" not in str(refused.value)
        # (nats-py lower-cases the server's error text.)
        assert 'permissions violation for publish to "$js.api.stream.create.kv_ctxmeter"' in caplog.text.lower()
        assert "deploy/nats/permissions.conf" in caplog.text
    finally:
        server.stop()
