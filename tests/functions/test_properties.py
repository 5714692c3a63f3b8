"""Property-based: random payloads never crash a handler, and invalid ones change no state.

The functions and a client run on an event loop in a background thread (one per module), so
hypothesis drives plain synchronous tests and every example is one round trip over real NATS.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, Final, TypeVar

import nats
import nats.js.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
from pydantic import BaseModel, ValidationError

from ctxmeter.bucket import open_bucket
from ctxmeter.settings import Settings
from functions.runner import FunctionsRuntime
from functions.service import OPERATIONS
from schemas import subjects
from schemas.models import ContextUsage, ErrorReply, TokenCount, TokenUsage
from schemas.subjects import is_session_id
from tests.conftest import STORE_TEST_BYTES
from tests.functions.helpers import STATUS_OF_CODE

T = TypeVar("T")

EXAMPLES: Final = 60
CALL_TIMEOUT_S: Final = 30.0
SESSION: Final = f"prop-{uuid.uuid4().hex[:8]}"

REPLY_MODELS: Final[dict[str, type[BaseModel]]] = {
    "count": TokenCount,
    "draft": TokenUsage,
    **{op: ContextUsage for op in ("get", "set", "add", "free", "usage", "reset")},
}
# Errors a request that passes validation may still get.
DOMAIN_ERRORS: Final = {"unknown_model", "payload_too_large"}
PROPERTY_SETTINGS: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Harness:
    """An event loop in a thread with the functions and a client connected to the test server."""

    def __init__(self, nats_url: str) -> None:
        self.settings = Settings(
            nats_url=nats_url,
            kv_bucket=f"P{uuid.uuid4().hex[:12]}",
            kv_ttl=600,
            kv_max_bytes=STORE_TEST_BYTES,
            history_max_bytes=STORE_TEST_BYTES,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="property-loop", daemon=True)
        self.runtime = FunctionsRuntime(self.settings)
        self.nc: NATS | None = None
        self.kv: KeyValue | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT_S)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        self.nc = await nats.connect(self.settings.nats_url)
        self.kv = await open_bucket(self.nc.jetstream(), self.settings)
        await self.runtime.start()

    def stop(self) -> None:
        try:
            self.run(self._stop())
            self.run(self.loop.shutdown_asyncgens())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()

    async def _stop(self) -> None:
        await self.runtime.stop()
        assert self.nc is not None
        await self.nc.jetstream().delete_key_value(self.settings.kv_bucket)
        await self.nc.drain()

    async def revisions(self, session_id: str) -> tuple[int | None, ...]:
        assert self.kv is not None
        found: list[int | None] = []
        for key in (subjects.context_key(session_id), subjects.tokens_key(session_id)):
            try:
                found.append((await self.kv.get(key)).revision)
            except nats.js.errors.KeyNotFoundError:
                found.append(None)
        return tuple(found)

    async def exchange(
        self, subject: str, payload: bytes, session_id: str
    ) -> tuple[Msg, tuple[Any, ...], tuple[Any, ...]]:
        """The reply, with the session's KV revisions before and after."""
        assert self.nc is not None
        before = await self.revisions(session_id) if is_session_id(session_id) else ()
        reply = await self.nc.request(subject, payload, timeout=CALL_TIMEOUT_S)
        after = await self.revisions(session_id) if is_session_id(session_id) else ()
        return reply, before, after


@pytest.fixture(scope="module")
def harness(nats_url: str) -> Iterator[Harness]:
    running = Harness(nats_url)
    running.start()
    try:
        yield running
    finally:
        running.stop()


# -- strategies -----------------------------------------------------------------------------

FIELD_NAMES = [
    "text", "messages", "model", "encoding", "max", "used", "total", "tokens", "usage", "role", "content", "name",
    "type", "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "cache_creation_input_tokens",
    "cache_read_input_tokens",
]  # fmt: skip
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.integers(min_value=-3, max_value=300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["gpt-4o", "claude-sonnet-4", "o200k_base", "cl100k_base", "nope", "", "user"])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=15,
)
counts = st.integers(min_value=-2, max_value=2**53 + 2) | st.floats(-1, 1e6) | st.text(max_size=3) | st.none()
models = st.sampled_from(["gpt-4o", "gpt-4", "claude-sonnet-4-5", "gemini-2.5-pro", "no-such-model", ""]) | st.text(
    max_size=10
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", ""]) | st.integers()},
        optional={
            "content": st.text(max_size=40)
            | st.none()
            | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}), max_size=2),
            "name": st.text(max_size=8),
        },
    ),
    max_size=3,
)
usages = st.fixed_dictionaries(
    {},
    optional={
        "prompt_tokens": counts,
        "completion_tokens": counts,
        "input_tokens": counts,
        "output_tokens": counts,
        "cache_creation_input_tokens": counts,
        "cache_read_input_tokens": counts,
        "total_tokens": counts,
    },
)
# Close to valid: the contract's field names with plausible and implausible values.
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "text": st.text(max_size=60) | st.integers(),
        "messages": messages,
        "model": models,
        "encoding": st.sampled_from(["o200k_base", "cl100k_base", "p50k_base", ""]),
        "max": counts,
        "used": counts,
        "total": counts,
        "tokens": counts,
        "usage": usages,
    },
)


def encode(value: Any) -> bytes:
    # allow_nan: NaN and Infinity are not JSON, so they must come back as invalid_json.
    return json.dumps(value, allow_nan=True).encode()


payloads = (
    near_valid.map(encode)
    | json_values.map(encode)
    | st.binary(max_size=64)
    | st.just(b"")
    | st.text(max_size=30).map(lambda text: text.encode("utf-8", "surrogatepass"))
)


def _subject(name: str, session_id: str) -> str:
    if name == "count":
        return subjects.tokens_count()
    group = "tokens" if name == "draft" else "context"
    return f"ctxmeter.{group}.{name}.{session_id}"


def _check(
    name: str, payload: bytes, reply: Msg, before: tuple[Any, ...], after: tuple[Any, ...], *, sid_ok: bool
) -> None:
    op = next(op for op in OPERATIONS if op.op.value == name)
    headers = reply.headers or {}
    try:
        op.request_model.model_validate_json(payload or b"{}")
        valid = True
    except ValidationError:
        valid = False
    if ERROR_HEADER in headers:
        failure = ErrorReply.model_validate_json(reply.data)
        assert headers[ERROR_CODE_HEADER] == STATUS_OF_CODE[failure.error.code.value]
        assert headers[ERROR_HEADER] == failure.error.message
        if not sid_ok:
            assert failure.error.code == "invalid_session_id"
        elif valid:
            assert failure.error.code in DOMAIN_ERRORS, failure
        else:
            assert failure.error.code in {"invalid_json", "invalid_request"}, failure
        assert failure.error.code != "internal"
        # Bad input changes no state.
        assert before == after
        return
    assert valid and sid_ok, (payload, reply.data)
    parsed = REPLY_MODELS[name].model_validate_json(reply.data)
    if name in ("draft", "set", "add", "free", "usage", "reset"):
        assert before != after
        assert getattr(parsed, "revision", None) in after
    else:
        assert before == after


@pytest.mark.parametrize("name", list(REPLY_MODELS))
@PROPERTY_SETTINGS
@given(payload=payloads)
def test_random_payloads_never_crash_a_handler(harness: Harness, name: str, payload: bytes) -> None:
    reply, before, after = harness.run(harness.exchange(_subject(name, SESSION), payload, SESSION))
    _check(name, payload, reply, before, after, sid_ok=True)


subject_tokens = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Cf"), blacklist_characters=".*>"),
    min_size=1,
    max_size=140,
) | st.from_regex(r"[A-Za-z0-9_-]{1,130}", fullmatch=True)


@pytest.mark.parametrize("name", ["get", "add", "draft"])
@settings(max_examples=40, deadline=None, database=None)
@given(token=subject_tokens)
def test_random_session_tokens(harness: Harness, name: str, token: str) -> None:
    payload = encode({"text": "x"} if name == "draft" else {"tokens": 1} if name == "add" else {})
    reply, before, after = harness.run(harness.exchange(_subject(name, token), payload, token))
    _check(name, payload, reply, before, after, sid_ok=is_session_id(token))
    if is_session_id(token):
        assert ERROR_HEADER not in (reply.headers or {})
