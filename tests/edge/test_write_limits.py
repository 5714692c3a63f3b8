"""What one HTTP client can write: a per-IP rate of state-changing requests (429 in the JSON shape, reads
untouched), and a full bucket answered 507 ``store_full`` at once."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from ctxmeter.limits import KIB
from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from tests.edge.conftest import EdgeFactory
from tests.edge.test_http import expect_error

BURST = 5


async def test_writes_beyond_the_ip_rate_are_429(
    functions: FunctionsRuntime, make_edge: EdgeFactory, http: aiohttp.ClientSession
) -> None:
    async with make_edge(ip_write_rate=0.01, ip_write_burst=BURST) as edge:
        base = f"{edge.url}/api/counters/context"
        for n in range(BURST):
            async with http.post(f"{base}/s-{n}-{uuid.uuid4().hex}", json={"used": n}) as r:
                assert r.status == 200, await r.text()
        created = f"s-late-{uuid.uuid4().hex}"
        async with http.post(f"{base}/{created}", json={"used": 1}) as r:
            await expect_error(r, 429, "rate_limited")
        async with http.post(f"{edge.url}/api/counters/tokens", json={"text": "hi"}) as r:
            await expect_error(r, 429, "rate_limited")
        # Nothing was stored for the refused one; reads are not limited.
        for _ in range(BURST * 2):
            async with http.get(f"{base}/{created}") as r:
                assert r.status == 200
                assert (await r.json())["revision"] == 0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"kv_max_bytes": 64 * KIB})


async def test_a_full_bucket_is_507_over_http(
    functions: FunctionsRuntime, make_edge: EdgeFactory, http: aiohttp.ClientSession
) -> None:
    async with make_edge(ip_write_burst=10_000) as edge:
        prefix = f"{edge.url}/api/counters/context/s-{uuid.uuid4().hex[:8]}"
        for n in range(1_000):
            async with http.post(f"{prefix}-{n}", json={"used": n}) as r:
                if r.status != 200:
                    await expect_error(r, 507, "store_full")
                    break
        else:
            pytest.fail("1,000 sessions fitted in 64 KiB")
