"""Every place ctxmeter reaches past a library's public API, each with the check that fails first when an
upgrade moves what it reaches, and an upper bound in pyproject.toml that keeps an unchecked version out.

- nats-py, functions/microstats.py: micro ``Service._endpoints[-1]`` and ``Endpoint._num_requests`` with the
  other stats fields (requests are answered in tasks of their own; nats.micro counts time and errors only
  around the callback); ``Request._msg`` (its reply subject, to refuse replies that are not to an inbox);
  ``Service._handle_{ping,info,stats}_request`` overridden (discovery answers any reply subject, no hook).
  Checked by ``test_nats_micro_internals_are_where_the_functions_reach`` and tests/functions/test_replies.py.
- nats-py, ws_edge/overview.py: ``KeyWatcher._sub``, the watch's consumer (the watch has no "caught up"
  signal for a bucket whose last update was a delete). Checked by ``test_the_kv_watcher_keeps_its_subscription``.
- nats-py, ctxmeter/connection.py: ``Client._process_info`` overridden (the INFO is the only place to refuse a
  server without TLS, or upgrade one that merely offers it, before credentials are sent). Checked by
  ``test_the_client_still_reads_info_where_tls_is_decided`` and tests/production (test_connect_errors.py
  ``test_tls_asked_for_is_tls_or_nothing``, test_credentials.py ``test_optional_tls_is_used_when_asked_for``).
- tiktoken, functions/encodings.py: ``Encoding._core_bpe.encode_to_tiktoken_buffer`` (only
  ``encode_to_numpy`` counts without a Python list, and numpy is not a dependency) and
  ``del Encoding._mergeable_ranks`` (36 MB for o200k_base, kept only for pickling). Checked by
  ``test_tiktoken_counts_through_its_core_buffer`` and ``test_tiktoken_keeps_the_ranks_where_they_are_dropped``.
- aiohttp, ws_edge/sockets.py: a connection handed over from aiohttp's handler (``transport.set_protocol``),
  so a socket lives outside it (no Python task per socket). Checked by tests/edge/test_hardening.py
  ``test_the_hand_over_still_fits_aiohttp``.

The KV compare-and-set writer (functions/kvwriter.py) is no reach: it speaks JetStream's documented
protocol (the expected-last-subject-sequence header from nats-py's ``Header``), and every functions test
goes through it. It does re-implement ``KeyValue.update``, so ``test_our_cas_writes_agree_with_key_value``
holds the two to the same revisions and the same refusal of a stale one.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import tomllib
from pathlib import Path
from typing import Final

import pytest
import tiktoken
from nats.aio.client import Client as NATS
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from nats.micro.request import Request
from nats.micro.service import ServiceConfig

from ctxmeter.connection import _TlsOnlyClient
from ctxmeter.settings import Settings
from functions.encodings import get_encoding
from functions.kvwriter import EXPECTED_LAST_SUBJECT_SEQUENCE, PLAIN_ACK, KvCasWriter, WrongRevision
from functions.microstats import EndpointStats, GuardedService, reply_subject
from schemas import subjects
from schemas.models import Encoding

ROOT: Final = Path(__file__).resolve().parent.parent
# The libraries reached into (above): each must have an upper version bound.
REACHED: Final = ("nats-py", "tiktoken", "aiohttp")


@pytest.mark.parametrize("library", REACHED)
def test_each_library_reached_into_has_an_upper_bound(library: str) -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    specs = [spec for spec in dependencies if re.match(rf"{re.escape(library)}\s*[<>=!~]", spec)]
    assert len(specs) == 1, specs
    assert re.search(r"<\s*\d", specs[0]), f"{specs[0]} has no upper bound"


def test_tiktoken_counts_through_its_core_buffer() -> None:
    # Without it, counting silently falls back to ``encode_ordinary`` (correct, 6-8 % slower).
    core = getattr(get_encoding(Encoding.O200K_BASE), "_core_bpe", None)
    assert callable(getattr(core, "encode_to_tiktoken_buffer", None))


def test_tiktoken_keeps_the_ranks_where_they_are_dropped() -> None:
    built = tiktoken.Encoding(
        name="reach-probe", pat_str=r"\S+|\s+", mergeable_ranks={bytes([i]): i for i in range(256)}, special_tokens={}
    )
    assert isinstance(built._mergeable_ranks, dict)
    assert not hasattr(get_encoding(Encoding.O200K_BASE), "_mergeable_ranks")


async def test_nats_micro_internals_are_where_the_functions_reach(nc: NATS) -> None:
    replies: list[str] = []

    async def handler(request: Request) -> None:
        replies.append(reply_subject(request))
        await request.respond(b"ok")

    service = GuardedService(nc, ServiceConfig(name="reach_probe", version="0.0.1"), lambda reply, label: True)
    await service.start()
    try:
        await service.add_endpoint(name="probe", subject="ctxmeter_reach_probe", handler=handler)
        stats = EndpointStats.of_last_endpoint(service)  # raises when the endpoint's fields moved
        answer = await nc.request("ctxmeter_reach_probe", b"", timeout=5)
        assert answer.data == b"ok"
        assert replies and replies[0].startswith("_INBOX.")
        stats.record(0, "probe error")
        info = service.stats()
        endpoint = next(endpoint for endpoint in info.endpoints if endpoint.name == "probe")
        assert (endpoint.num_requests, endpoint.num_errors, endpoint.last_error) == (1, 1, "probe error")
        assert endpoint.processing_time > 0
        ping = await nc.request("$SRV.PING.reach_probe", b"", timeout=5)
        assert b"reach_probe" in ping.data  # the overridden discovery handler still answers
    finally:
        await service.stop()


async def test_the_kv_watcher_keeps_its_subscription(kv: KeyValue) -> None:
    watcher = await kv.watch("context.*")
    try:
        subscription = watcher._sub
        assert subscription is not None
        info = await asyncio.wait_for(subscription.consumer_info(), 5)
        assert info.num_pending is not None
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]


async def test_our_cas_writes_agree_with_key_value(nc: NATS, kv: KeyValue, settings: Settings) -> None:
    writer = KvCasWriter(nc, settings.kv_bucket, timeout=5)
    await writer.start()
    ours = await writer.write("cas.probe", b"ours", 0)
    entry = await kv.get("cas.probe")
    assert (entry.value, entry.revision) == (b"ours", ours)
    # Another key's writes move the bucket's sequence on: the revision checked is the key's own.
    await kv.put("cas.other", b"1")
    theirs = await kv.update("cas.probe", b"theirs", last=ours)
    await kv.put("cas.other", b"2")
    with pytest.raises(WrongRevision):
        await writer.write("cas.probe", b"stale", ours)
    assert await writer.write("cas.probe", b"ours again", theirs) > theirs
    with pytest.raises(KeyWrongLastSequenceError):
        await kv.update("cas.probe", b"stale", last=theirs)
    assert (await kv.get("cas.probe")).value == b"ours again"


async def test_the_servers_acknowledgements_are_read_by_the_plain_pattern(
    nc: NATS, kv: KeyValue, settings: Settings
) -> None:
    # Not a reach (an ack of another layout still goes through json.loads), but the writer's speed relies on
    # nats-server's layout: an upgrade that changes it shows here rather than as a slower change path.
    subject = subjects.kv_key_subject(settings.kv_bucket, "ack.probe")
    ack = await nc.request(subject, b"x", headers={EXPECTED_LAST_SUBJECT_SEQUENCE: "0"})
    plain = PLAIN_ACK.match(ack.data)
    assert plain is not None and int(plain[1]) == (await kv.get("ack.probe")).revision
    # Expecting the key absent again: the wrong last sequence, an error, which must not pass for an ack.
    refused = await nc.request(subject, b"x", headers={EXPECTED_LAST_SUBJECT_SEQUENCE: "0"})
    assert PLAIN_ACK.match(refused.data) is None and "error" in json.loads(refused.data)


def test_the_client_still_reads_info_where_tls_is_decided() -> None:
    # _TlsOnlyClient's override; tests/production prove it still decides the upgrade end to end.
    parameters = list(inspect.signature(NATS._process_info).parameters)
    assert parameters == ["self", "info", "initial_connection"]
    assert NATS._process_info is not _TlsOnlyClient._process_info
