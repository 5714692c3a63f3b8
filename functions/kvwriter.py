"""Compare-and-set writes to the KV bucket, acknowledged through one shared reply subscription.

``KeyValue.update`` in nats.py is a full request per write: a fresh random inbox token from
``os.urandom``, an ``asyncio.wait_for`` and a dataclass per acknowledgement. On the ``context.*`` hot
path that was a third of the functions' CPU. This writer publishes to the bucket's subject with the
``Nats-Expected-Last-Subject-Sequence`` header (exactly what ``update`` sends) and matches the
acknowledgements on one wildcard inbox by a counter, as nats.go's async publish does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from typing import Final

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import Header

from ctxmeter.limits import ACK_SWEEP_S
from schemas import subjects

EXPECTED_LAST_SUBJECT_SEQUENCE: Final = Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value
# JetStream's error codes for "wrong last sequence": someone else wrote (or deleted) the key first.
# 10071 carries the actual sequence in its text; newer servers answer 10164, without it.
WRONG_LAST_SEQUENCE_CODES: Final = frozenset({10071, 10164})
NO_RESPONDERS_STATUS: Final = "503"
# JetStream's refusals of a write for want of room: the stream's own limit (10077, a store failure
# whose text says "maximum bytes exceeded") or the account's or server's storage (10023, "insufficient
# resources"). nats.py would raise them as ServiceUnavailableError, which is retried as an election is.
INSUFFICIENT_RESOURCES_CODE: Final = 10023
STORE_FAILED_CODE: Final = 10077
LIMIT_TEXT: Final = "maximum"
# A plain acknowledgement as nats-server writes it (``{"stream":"KV_x","seq":5}``, ``domain`` or ``duplicate``
# after the sequence): read by this pattern, as json.loads was a thirtieth of a change's work. Any other
# answer (an error's JSON starts with ``error``) goes through json.loads.
PLAIN_ACK: Final = re.compile(rb'\{"stream":"[^"\\]*","seq":(\d+)[,}]')


class KvWriteTimeout(TimeoutError):
    pass


class NoRoom(Exception):
    """JetStream refused the write: no room left in the stream or on the server."""


class WrongRevision(Exception):
    """The key is no longer at the expected revision: another writer (or a delete) got there first."""


class KvCasWriter:
    def __init__(self, nc: NATS, bucket: str, timeout: float) -> None:
        self._nc = nc
        self._bucket = bucket
        self._timeout = timeout
        self._inbox = nc.new_inbox()
        self._tokens = itertools.count()
        # Each write's acknowledgement waiter and when it gives up, oldest first (one timeout for all).
        self._waiting: dict[str, tuple[asyncio.Future[Msg], float]] = {}
        self._sweep: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        # Lives as long as the connection; draining the connection ends it.
        await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)

    async def _on_ack(self, msg: Msg) -> None:
        waiting = self._waiting.pop(msg.subject, None)
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result(msg)

    def _expire(self) -> None:
        """Fail the writes waiting past their timeout; look again while any is left."""
        self._sweep = None
        now = time.monotonic()
        expired = []
        for reply, (waiter, gives_up) in self._waiting.items():
            if gives_up > now:
                break  # the rest are younger
            expired.append(reply)
            if not waiter.done():
                waiter.set_exception(KvWriteTimeout(f"no JetStream acknowledgement in {self._timeout} s"))
        for reply in expired:
            del self._waiting[reply]
        if self._waiting:
            self._sweep = asyncio.get_running_loop().call_later(ACK_SWEEP_S, self._expire)

    async def write(self, key: str, payload: bytes, expected_revision: int) -> int:
        """Store ``payload`` if the key is still at ``expected_revision`` (0: absent); its new revision.

        Raises ``WrongRevision`` when another writer got there first, ``KvWriteTimeout`` when no
        acknowledgement came within the timeout (plus up to ``ACK_SWEEP_S``).
        """
        loop = asyncio.get_running_loop()
        reply = f"{self._inbox}.{next(self._tokens)}"
        waiter: asyncio.Future[Msg] = loop.create_future()
        self._waiting[reply] = (waiter, time.monotonic() + self._timeout)
        if self._sweep is None:
            self._sweep = loop.call_later(ACK_SWEEP_S, self._expire)
        try:
            await self._nc.publish(
                subjects.kv_key_subject(self._bucket, key),
                payload,
                reply=reply,
                headers={EXPECTED_LAST_SUBJECT_SEQUENCE: str(expected_revision)},
            )
            ack = await waiter
        finally:
            self._waiting.pop(reply, None)
        if ack.headers and ack.headers.get("Status") == NO_RESPONDERS_STATUS:
            raise nats.js.errors.NoStreamResponseError
        plain = PLAIN_ACK.match(ack.data)
        if plain is not None:
            return int(plain[1])
        answer = json.loads(ack.data)
        if "error" in answer:
            error = answer["error"]
            code, description = error.get("err_code"), str(error.get("description", ""))
            if code in WRONG_LAST_SEQUENCE_CODES:
                raise WrongRevision(description)
            if code == INSUFFICIENT_RESOURCES_CODE or (code == STORE_FAILED_CODE and LIMIT_TEXT in description):
                raise NoRoom(description)
            # nats.py's from_error raises (it does not return) the APIError subclass for the code.
            nats.js.errors.APIError.from_error(error)
            raise nats.js.errors.APIError(**error)
        return int(answer["seq"])
