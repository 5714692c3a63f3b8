"""The asyncio client: one method per ctxmeter subject, typed replies, retries that never double count."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from ctxmeter_client import _subjects as subjects
from ctxmeter_client._errors import RETRYABLE, CtxMeterError
from ctxmeter_client._models import (
    ContextHistory,
    ContextUsage,
    ErrorCode,
    ModelsReply,
    TokenCount,
    TokenUsage,
    _ChangeReply,
)
from ctxmeter_client._usage import messages_body, type_name, usage_body

R = TypeVar("R", bound=BaseModel)

DEFAULT_SERVERS: Final = "nats://127.0.0.1:4222"
# The shortest wait for a reply, even when the deadline has (nearly) passed.
LAST_ATTEMPT_S: Final = 0.05
# How long connect() waits for any server to accept a TCP connection before it says none answers (nats-py
# alone would retry 60 times, 2 s apart, logging a traceback each time).
REACH_TIMEOUT_S: Final = 2.0
# Ports of a URL that names none, by scheme (nats-py's defaults).
DEFAULT_PORTS: Final = {"nats": 4222, "tls": 4222, "ws": 80, "wss": 443}

# NATS micro's error status → the code, for an error reply whose body cannot be read (a proxy or an
# older service answering): the body's code is preferred whenever there is one.
_CODE_OF_STATUS: Final = {
    "400": ErrorCode.INVALID_REQUEST.value,
    "404": ErrorCode.UNKNOWN_MODEL.value,
    "409": ErrorCode.CONFLICT.value,
    "413": ErrorCode.PAYLOAD_TOO_LARGE.value,
    "503": ErrorCode.UNAVAILABLE.value,
    "507": ErrorCode.STORE_FULL.value,
}

# No answer (nobody serving, a lost request or reply, a connection between servers). Sending again is
# safe even if the first attempt was applied: a change carries its idempotency key, a read changes nothing.
_UNREACHABLE: Final = (
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    asyncio.TimeoutError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
)


def url_credentials(servers: str | list[str]) -> dict[str, str]:
    """``user``/``password`` (or ``token``) from the servers' URLs, when every URL that has some has the
    same; else nothing."""
    urls = servers.split(",") if isinstance(servers, str) else servers
    found: set[tuple[str, str | None]] = set()
    for url in urls:
        try:
            parts = urlsplit(url.strip())
        except ValueError:
            continue
        if parts.username is not None:
            found.add((unquote(parts.username), None if parts.password is None else unquote(parts.password)))
    if len(found) != 1:
        return {}
    ((user, password),) = found
    return {"token": user} if password is None else {"user": user, "password": password}


def _server_urls(servers: str | list[str]) -> list[str]:
    return [url.strip() for url in (servers.split(",") if isinstance(servers, str) else servers) if url.strip()]


async def _answers(url: str, timeout: float) -> bool:
    """True when something accepts a TCP connection at ``url``'s host and port."""
    try:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        port = parts.port or DEFAULT_PORTS.get(parts.scheme, 4222)
    except ValueError:
        return True  # not ours to judge: nats-py says what is wrong with it
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname or "localhost", port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    # It answered; how it hangs up does not matter.
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _check_reachable(servers: str | list[str], timeout: float) -> None:
    """Fail fast, in one line, when no server of ``servers`` answers at all."""
    urls = _server_urls(servers)
    if not urls or any(await asyncio.gather(*(_answers(url, timeout) for url in urls))):
        return
    # Credentials in a URL stay out of the message.
    shown = ", ".join(urlsplit(url)._replace(netloc=urlsplit(url).netloc.rpartition("@")[2]).geturl() for url in urls)
    raise CtxMeterError(
        ErrorCode.UNAVAILABLE.value,
        f"no NATS server answers at {shown} (nothing accepted a connection within {timeout:g} s): "
        "start ctxmeter there (`ctxmeter up`) or pass your deployment's NATS URL",
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How long a call keeps trying, and how it waits between attempts.

    ``deadline``: seconds from the call's start after which it gives up with :class:`CtxMeterError`.
    ``attempt_timeout``: seconds one request waits for its reply (capped by what is left of the deadline).
    Between attempts the client sleeps a random time in ``[0, min(max_backoff, first_backoff * 2**n))``
    ("full jitter"), so many clients retrying at once spread out instead of arriving together.
    """

    deadline: float = 10.0
    attempt_timeout: float = 3.0
    first_backoff: float = 0.05
    max_backoff: float = 1.0

    def __post_init__(self) -> None:
        for name in ("deadline", "attempt_timeout", "first_backoff", "max_backoff"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RetryPolicy.{name} must be > 0")

    def backoff(self, failed_attempts: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.first_backoff * 2 ** min(failed_attempts - 1, 32)))


def _new_key(idempotency_key: str | None) -> str:
    # Made once per call and sent with every attempt of it: the functions apply a key at most once per
    # session, so a retry after a lost reply (or a killed functions process) cannot count twice.
    return str(uuid.uuid4()) if idempotency_key is None else subjects.check_idempotency_key(idempotency_key)


def _error_of(msg: Msg, attempts: int) -> CtxMeterError | None:
    headers = msg.headers or {}
    status = headers.get(subjects.ERROR_CODE_HEADER)
    if status is None:
        return None
    code = _CODE_OF_STATUS.get(status, ErrorCode.INTERNAL.value)
    message = headers.get(subjects.ERROR_HEADER) or f"error status {status}"
    try:
        detail = json.loads(msg.data)["error"]
        if isinstance(detail.get("code"), str):
            code = detail["code"]
        if isinstance(detail.get("message"), str):
            message = detail["message"]
    except (ValueError, TypeError, KeyError, AttributeError):
        pass  # the status and header message stand in for an unreadable body
    return CtxMeterError(code, message, attempts=attempts)


class _Connecting:
    """What :meth:`CtxMeter.connect` returns: await it, or use it as ``async with``."""

    def __init__(self, open_meter: Callable[[], Awaitable[CtxMeter]]) -> None:
        self._open = open_meter
        self._meter: CtxMeter | None = None

    def __await__(self) -> Generator[Any, None, CtxMeter]:
        return self._enter().__await__()

    async def _enter(self) -> CtxMeter:
        self._meter = await self._open()
        return self._meter

    async def __aenter__(self) -> CtxMeter:
        return await self._enter()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._meter is not None:
            await self._meter.close()


class CtxMeter:
    """ctxmeter over NATS, for asyncio code.

    ``CtxMeter(nc)`` uses a connection you already have (:meth:`close` then leaves it open);
    ``await CtxMeter.connect(servers, **nats_options)`` opens its own (closed by :meth:`close`).
    One instance serves any number of concurrent tasks.
    """

    def __init__(self, nc: NATS, *, retry: RetryPolicy | None = None) -> None:
        self._nc = nc
        self._retry = retry or RetryPolicy()
        self._owns_connection = False

    @classmethod
    def connect(
        cls, servers: str | list[str] = DEFAULT_SERVERS, *, retry: RetryPolicy | None = None, **nats_options: Any
    ) -> _Connecting:
        """Connect to NATS (``nats_options`` go to ``nats.connect``: credentials, TLS, reconnects...)."""

        async def open_meter() -> CtxMeter:
            options: dict[str, Any] = {"name": "ctxmeter-client", **nats_options}
            if not {"user", "password", "token"} & options.keys():
                # nats-py sends a URL's user and password to that server only; as options they reach the
                # servers a cluster tells the client about too, so it can fail over to them.
                options.update(url_credentials(servers))
            await _check_reachable(servers, float(options.get("connect_timeout", REACH_TIMEOUT_S)))
            try:
                nc = await nats.connect(servers, **options)
            except (nats.errors.Error, OSError, asyncio.TimeoutError) as failed:
                raise CtxMeterError(
                    ErrorCode.UNAVAILABLE.value, f"cannot connect to NATS: {type(failed).__name__}: {failed}"
                ) from failed
            meter = cls(nc, retry=retry)
            meter._owns_connection = True
            return meter

        return _Connecting(open_meter)

    @property
    def nc(self) -> NATS:
        """The NATS connection the client uses."""
        return self._nc

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

    async def close(self) -> None:
        """Close the connection if :meth:`connect` opened it (after sending what is buffered)."""
        if not self._owns_connection or self._nc.is_closed:
            return
        try:
            await self._nc.drain()
        except nats.errors.Error:
            # Draining needs a live connection; while reconnecting there is nothing to drain to.
            await self._nc.close()

    async def __aenter__(self) -> CtxMeter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- context --------------------------------------------------------------------------

    async def get(self, session_id: str) -> ContextUsage:
        """The session's context usage (the zero state with the default window when it has none)."""
        return await self._call(subjects.context("get", session_id), {}, ContextUsage)

    async def set(
        self,
        session_id: str,
        used: int,
        total: int | None = None,
        model: str | None = None,
        reserved: int | None = None,
        compact_at: int | None = None,
        estimated: bool = False,
        *,
        idempotency_key: str | None = None,
    ) -> ContextUsage:
        """Set the context used; ``total``, ``model``, ``reserved`` and ``compact_at`` are kept as stored
        when omitted. ``estimated=True`` marks ``used`` as the caller's estimate rather than a count."""
        body: dict[str, Any] = {"used": used}
        optional = {"total": total, "model": model, "reserved": reserved, "compact_at": compact_at}
        body.update({name: value for name, value in optional.items() if value is not None})
        if estimated:
            body["estimated"] = True
        return await self._change(subjects.context("set", session_id), body, ContextUsage, idempotency_key)

    async def add(self, session_id: str, tokens: int, *, idempotency_key: str | None = None) -> ContextUsage:
        """Add ``tokens`` to the context used (an estimate until the next :meth:`report`)."""
        return await self._change(
            subjects.context("add", session_id), {"tokens": tokens}, ContextUsage, idempotency_key
        )

    async def free(self, session_id: str, tokens: int, *, idempotency_key: str | None = None) -> ContextUsage:
        """Take ``tokens`` off the context used (floors at 0)."""
        return await self._change(
            subjects.context("free", session_id), {"tokens": tokens}, ContextUsage, idempotency_key
        )

    async def reset(self, session_id: str, *, idempotency_key: str | None = None) -> ContextUsage:
        """Back to zero used; the window, model, reserved and compact_at are kept."""
        return await self._change(subjects.context("reset", session_id), {}, ContextUsage, idempotency_key)

    async def compact(self, session_id: str, used: int, *, idempotency_key: str | None = None) -> ContextUsage:
        """Record a compaction: ``used`` is the context's size after it."""
        return await self._change(
            subjects.context("compact", session_id), {"used": used}, ContextUsage, idempotency_key
        )

    async def report(
        self,
        session_id: str,
        usage_or_response: object,
        model: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> ContextUsage:
        """Report a model response's usage: what the next request carries of it becomes the context used.

        Takes a response (OpenAI Chat Completions or Responses, Anthropic ``Message``, Gemini
        ``GenerateContentResponse``, LiteLLM ``ModelResponse``, LangChain ``AIMessage``, pydantic-ai
        ``ModelResponse``), a stream event carrying usage (the last chunk; OpenAI ``response.completed``;
        Anthropic ``message_start`` then ``message_delta``), an agent run's result (OpenAI Agents SDK
        ``RunResult``, pydantic-ai ``AgentRunResult``: its last response), a usage object, or a dict of any
        of them. A run's total usage is refused: it sums several requests. The model is ``model``, else the
        one the response names; a known model sets the session's window.
        """
        subject = subjects.context("usage", session_id)
        body = usage_body(usage_or_response, model)
        try:
            return await self._change(subject, body, ContextUsage, idempotency_key)
        except CtxMeterError as refused:
            if refused.code != ErrorCode.INVALID_REQUEST.value or not refused.message.startswith("usage"):
                raise
            # The server saw fields; the developer knows the object by its type.
            raise CtxMeterError(
                refused.code,
                f"{refused.message} (reported object: {type_name(usage_or_response)})",
                attempts=refused.attempts,
            ) from refused

    async def history(self, session_id: str, limit: int | None = None) -> ContextHistory:
        """The session's latest changes (``limit`` 1-1000, the server's default 200), oldest first."""
        body = {} if limit is None else {"limit": limit}
        return await self._call(subjects.context("history", session_id), body, ContextHistory)

    # -- tokens ---------------------------------------------------------------------------

    async def count(
        self, text_or_messages: str | Sequence[object], model: str | None = None, encoding: str | None = None
    ) -> TokenCount:
        """Count a text, or chat messages (with OpenAI's per-message overhead), with a model's tokenizer or
        an encoding (``o200k_base``, ``cl100k_base``); neither given: the server's default."""
        body: dict[str, Any] = (
            {"text": text_or_messages}
            if isinstance(text_or_messages, str)
            else {"messages": messages_body(text_or_messages)}
        )
        if model is not None:
            body["model"] = model
        if encoding is not None:
            body["encoding"] = str(encoding)
        return await self._call(subjects.TOKENS_COUNT, body, TokenCount)

    async def draft(
        self,
        session_id: str,
        text: str,
        model: str | None = None,
        max: int | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> TokenUsage:
        """Count the message being typed in a session; stored and shown live beside the session's meter."""
        body: dict[str, Any] = {"text": text}
        if model is not None:
            body["model"] = model
        if max is not None:
            body["max"] = max
        return await self._change(subjects.tokens_draft(session_id), body, TokenUsage, idempotency_key)

    async def models(self) -> ModelsReply:
        """The models the server knows: encodings, context windows, whether counts are exact."""
        return await self._call(subjects.MODELS, {}, ModelsReply)

    # -- requests -------------------------------------------------------------------------

    async def _change(self, subject: str, body: dict[str, Any], reply: type[R], idempotency_key: str | None) -> R:
        return await self._call(subject, body, reply, _new_key(idempotency_key))

    async def _call(self, subject: str, body: dict[str, Any], reply: type[R], key: str | None = None) -> R:
        msg = await self._request(subject, json.dumps(body, separators=(",", ":")).encode(), key)
        try:
            result = reply.model_validate_json(msg.data)
        except ValidationError as invalid:
            # Not worth a retry: the same server would send the same reply.
            raise CtxMeterError(
                ErrorCode.INVALID_REPLY.value, f"{subject} sent a reply this client cannot read: {invalid}", attempts=1
            ) from invalid
        if isinstance(result, _ChangeReply):
            duplicate = (msg.headers or {}).get(subjects.DUPLICATE_HEADER, "")
            result._duplicate = duplicate.strip().lower() == "true"
        return result

    async def _request(self, subject: str, payload: bytes, key: str | None) -> Msg:
        """Send until a reply that is not a retryable error, or until the deadline."""
        policy = self._retry
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.deadline
        headers = None if key is None else {subjects.MSG_ID_HEADER: key}
        attempts = 0
        while True:
            attempts += 1
            # The last attempt still gets a moment: a reply is often only milliseconds away.
            timeout = min(policy.attempt_timeout, max(deadline - loop.time(), LAST_ATTEMPT_S))
            try:
                msg = await self._nc.request(subject, payload, timeout=timeout, headers=headers)
            except _UNREACHABLE as unreachable:
                last = CtxMeterError(
                    ErrorCode.UNAVAILABLE.value,
                    "no ctxmeter functions answered"
                    if isinstance(unreachable, nats.errors.NoRespondersError)
                    else f"no reply ({type(unreachable).__name__})",
                    attempts=attempts,
                )
            except nats.errors.MaxPayloadError as too_large:
                raise CtxMeterError(
                    ErrorCode.PAYLOAD_TOO_LARGE.value,
                    f"the request ({len(payload)} bytes) is larger than NATS accepts ({self._nc.max_payload})",
                    attempts=0,
                ) from too_large
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as closed:
                # A closed connection never comes back: waiting for the deadline would only delay this.
                raise CtxMeterError(
                    ErrorCode.UNAVAILABLE.value, "the NATS connection is closed", attempts=attempts - 1
                ) from closed
            else:
                error = _error_of(msg, attempts)
                if error is None:
                    return msg
                if error.code not in RETRYABLE:
                    raise error
                last = error
            left = deadline - loop.time()
            if left <= 0:
                raise CtxMeterError(
                    last.code,
                    f"gave up after {attempts} attempt(s) in {policy.deadline:g} s: {last.message}",
                    attempts=attempts,
                )
            # A backoff reaching past the deadline is cut short for one last attempt at the deadline.
            await asyncio.sleep(min(policy.backoff(attempts), left))
