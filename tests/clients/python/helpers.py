"""Helpers of the client's tests: a stand-in responder for retry tests, and a functions process."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from tests.functions.helpers import STATUS_OF_CODE

# What the client's idempotency keys look like (uuid4).
UUID4: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def context_usage(session_id: str, used: int = 5) -> dict[str, Any]:
    """A ContextUsage body as the functions send it."""
    return {
        "session_id": session_id,
        "used": used,
        "total": 1000,
        "percentage": used / 10,
        "level": "normal",
        "model": None,
        "revision": 1,
        "updated_at": "2025-01-01T00:00:00Z",
        "reserved": 0,
        "compact_at": 1000,
        "left": 1000 - used,
        "estimated": True,
        "compactions": 0,
        "compacted_at": None,
    }


async def reply_error(nc: NATS, msg: Msg, code: str, message: str = "stand-in error") -> None:
    """Answer as the functions do: the error body and NATS micro's two headers."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = {"Nats-Service-Error": message, "Nats-Service-Error-Code": STATUS_OF_CODE[code]}
    # Not msg.respond(): it would send the request's own headers back.
    await nc.publish(msg.reply, body, headers=headers)


async def reply_json(nc: NATS, msg: Msg, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    await nc.publish(msg.reply, json.dumps(body).encode(), headers=headers)


class Responder:
    """Answers one subject in place of the functions, recording every request it got."""

    def __init__(self, nc: NATS, answer: Callable[[Msg, int], Awaitable[None]]) -> None:
        self.nc = nc
        self.answer = answer
        self.requests: list[Msg] = []
        self.subscription: Subscription | None = None

    async def start(self, subject: str) -> Responder:
        async def handle(msg: Msg) -> None:
            self.requests.append(msg)
            await self.answer(msg, len(self.requests))

        self.subscription = await self.nc.subscribe(subject, cb=handle)
        await self.nc.flush()
        return self

    async def stop(self) -> None:
        if self.subscription is not None:
            await self.subscription.unsubscribe()

    def keys(self) -> list[str | None]:
        return [(msg.headers or {}).get("Nats-Msg-Id") for msg in self.requests]
