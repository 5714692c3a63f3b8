"""Shared helpers for the functions' tests: requests over real NATS, replies, events and KV state."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
from pydantic import BaseModel

from functions.service import flush_subscriptions
from schemas import subjects
from schemas.models import ContextUpdateEvent, ErrorReply, TokenCountEvent

M = TypeVar("M", bound=BaseModel)

REQUEST_TIMEOUT_S: Final = 10.0
WAIT_TIMEOUT_S: Final = 15.0

# The micro status sent with each error code.
STATUS_OF_CODE: Final = {
    "invalid_json": "400",
    "invalid_request": "400",
    "invalid_session_id": "400",
    "unknown_model": "404",
    "payload_too_large": "413",
    "conflict": "409",
    "internal": "500",
    "store_full": "507",
}


def body(payload: bytes | str | dict[str, Any] | list[Any] | None) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload).encode()


async def call(nc: NATS, subject: str, payload: bytes | str | dict[str, Any] | list[Any] | None = None) -> Msg:
    """A request with an empty body when ``payload`` is None."""
    return await nc.request(subject, b"" if payload is None else body(payload), timeout=REQUEST_TIMEOUT_S)


def ok(msg: Msg, model: type[M]) -> M:
    """The reply as ``model``; fails with the error body when the reply is an error."""
    assert not (msg.headers or {}).get(ERROR_HEADER), f"unexpected error reply: {msg.data!r}"
    return model.model_validate_json(msg.data)


def error(msg: Msg, code: str) -> ErrorReply:
    """The reply as an error with ``code``, its body and the micro headers agreeing."""
    reply = ErrorReply.model_validate_json(msg.data)
    assert reply.error.code == code, reply
    assert reply.error.message
    headers = msg.headers or {}
    assert headers.get(ERROR_CODE_HEADER) == STATUS_OF_CODE[code], headers
    assert headers.get(ERROR_HEADER) == reply.error.message
    return reply


async def kv_revision(kv: KeyValue, key: str) -> int | None:
    """The stored revision of ``key``, or None when nothing is stored."""
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None
    return entry.revision


async def kv_value(kv: KeyValue, key: str) -> bytes | None:
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None
    return entry.value


async def next_event(sub: Subscription) -> ContextUpdateEvent | TokenCountEvent:
    msg = await sub.next_msg(timeout=REQUEST_TIMEOUT_S)
    decoded = json.loads(msg.data)
    if decoded["type"] == "context_update":
        return ContextUpdateEvent.model_validate(decoded)
    return TokenCountEvent.model_validate(decoded)


async def subscribe_events(nc: NATS, session_id: str) -> Subscription:
    sub = await nc.subscribe(subjects.events(session_id))
    await flush_subscriptions(nc)
    return sub


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, within: float = WAIT_TIMEOUT_S) -> None:
    """Poll ``check`` until it holds; fail (naming ``what``) when it never does."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def collect_replies(nc: NATS, subject: str, payload: bytes, want: int, within: float = 1.0) -> list[Msg]:
    """Publish once and gather every reply (micro discovery answers once per instance)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    replies: list[Msg] = []
    try:
        await nc.publish(subject, payload, reply=inbox)
        deadline = time.monotonic() + within
        while len(replies) < want and (left := deadline - time.monotonic()) > 0:
            try:
                replies.append(await sub.next_msg(timeout=left))
            except TimeoutError:
                break
    finally:
        await sub.unsubscribe()
    return replies


ROOT: Final = Path(__file__).resolve().parents[2]


def start_functions_process(nats_url: str, bucket: str, log: Path) -> subprocess.Popen[bytes]:
    """``ctxmeter functions`` as its own process, serving ``bucket`` (its output in ``log``)."""
    env = {**os.environ, "CTXMETER_KV_BUCKET": bucket, "CTXMETER_NATS_URL": nats_url}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ctxmeter_cli", "functions", "--nats-url", nats_url],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
