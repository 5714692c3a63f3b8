"""Fixtures of the Python client's tests; NATS, the bucket and the functions come from tests/conftest.py."""

from __future__ import annotations

import pytest
from ctxmeter_client import CtxMeter, RetryPolicy
from nats.aio.client import Client as NATS


@pytest.fixture
def meter(nc: NATS) -> CtxMeter:
    """The client on the test's own connection (so closing it is the fixture's business)."""
    return CtxMeter(nc, retry=RetryPolicy(deadline=10))
