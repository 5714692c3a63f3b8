"""Fixtures of the functions' tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from tests.functions.helpers import subscribe_events

WatchEvents = Callable[..., Awaitable[Subscription]]


@pytest.fixture
async def watch_events(nc: NATS) -> AsyncIterator[WatchEvents]:
    """Subscribe to a session's events (on ``nc`` or a given client); unsubscribed after the test.

    Unsubscribing drops events the test did not read; a drain would wait for someone to read them.
    """
    subscriptions: list[Subscription] = []

    async def watch(session_id: str, client: NATS | None = None) -> Subscription:
        subscription = await subscribe_events(client or nc, session_id)
        subscriptions.append(subscription)
        return subscription

    yield watch
    for subscription in subscriptions:
        await subscription.unsubscribe()
