"""Edge fixtures: a real edge (real sockets, port 0) in front of the in-process functions on real NATS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import aiohttp
import pytest
import uvloop

from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from ws_edge.app import EdgeServer

# Short enough to keep the suite fast, long enough that a burst is coalesced.
TEST_THROTTLE_MS = 50

EdgeFactory = Callable[..., contextlib.AbstractAsyncContextManager[EdgeServer]]


def edge_settings(settings: Settings, **overrides: Any) -> Settings:
    """The test's settings (its own bucket) for an edge on a free port, with ``overrides``."""
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "throttle_ms": TEST_THROTTLE_MS}
    values.update(overrides)
    # Validated again, so an override of the wrong type fails here rather than deep in the edge.
    return Settings.model_validate({**settings.model_dump(), **values})


@pytest.fixture
def make_edge(settings: Settings) -> EdgeFactory:
    """An edge with setting overrides; stopped when the ``async with`` ends."""

    @contextlib.asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[EdgeServer]:
        async with EdgeServer(edge_settings(settings, **overrides)) as edge:
            yield edge

    return make


@pytest.fixture
async def edge(functions: FunctionsRuntime, make_edge: EdgeFactory) -> AsyncIterator[EdgeServer]:
    async with make_edge() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# Tests that also run on uvloop, the loop ``ctxmeter`` runs on: a socket's flow control and the hand-over
# of its transport (plain and TLS) are the loop's code as much as ours.
ON_BOTH_LOOPS: Final = frozenset(
    {"tests.edge.test_sockets", "tests.edge.test_peer", "tests.edge.test_limits", "tests.edge.test_tls"}
)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    module = getattr(item, "module", None)
    if module is not None and module.__name__ in ON_BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}
