"""The one way ctxmeter connects to NATS: servers, credentials, TLS, reconnect policy and logs.

Functions and edge both connect here, so both reconnect the same way, report the same events and take
the same credentials. A connection that closes without being asked to (the server refused a message
and dropped it, for instance) sets ``lost``; the part's runner then starts over with a new connection.
URLs are logged without their password or token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
from nats.aio.client import Client as NATS

from ctxmeter import limits
from ctxmeter.settings import Settings

log = logging.getLogger(__name__)

REDACTED = "***"

Hook = Callable[[], None]


class NatsConnectError(RuntimeError):
    """NATS cannot be reached with these settings; the message is one line, safe to print."""


def split_servers(urls: str) -> list[str]:
    return [server.strip() for server in urls.split(",") if server.strip()]


def redact_url(url: str) -> str:
    """``url`` with any password or token replaced: ``nats://user:***@host:4222``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    # A lone user part is a token (nats://token@host): hide it too.
    user = f"{parts.username}:{REDACTED}" if parts.password is not None else REDACTED
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


def redact_servers(urls: str) -> str:
    return ",".join(redact_url(url) for url in split_servers(urls))


def _existing_file(path: Path | None, setting: str) -> str | None:
    if path is None:
        return None
    if not path.is_file():
        raise NatsConnectError(f"{setting}: no such file: {path}")
    return str(path)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A TLS context from the CA, certificate and key settings; None when none is set (``tls://``
    URLs then use the system's trusted CAs)."""
    ca = _existing_file(settings.nats_tls_ca, "CTXMETER_NATS_TLS_CA")
    cert = _existing_file(settings.nats_tls_cert, "CTXMETER_NATS_TLS_CERT")
    key = _existing_file(settings.nats_tls_key, "CTXMETER_NATS_TLS_KEY")
    if ca is None and cert is None:
        if key is not None:
            raise NatsConnectError("CTXMETER_NATS_TLS_KEY is set without CTXMETER_NATS_TLS_CERT")
        return None
    try:
        context = ssl.create_default_context(cafile=ca)
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError, OSError) as error:
        raise NatsConnectError(f"cannot load the NATS TLS files: {_one_line(error)}") from None
    return context


def connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` carrying the credentials and TLS of ``settings``."""
    options: dict[str, Any] = {}
    if creds := _existing_file(settings.nats_creds, "CTXMETER_NATS_CREDS"):
        options["user_credentials"] = creds
    if seed := _existing_file(settings.nats_nkey, "CTXMETER_NATS_NKEY"):
        options["nkeys_seed"] = seed
    if settings.nats_token is not None:
        options["token"] = settings.nats_token.get_secret_value()
    if (context := tls_context(settings)) is not None:
        options["tls"] = context
    return options


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[: limits.LOG_EXCERPT_CHARS]


def _is_fatal(error: BaseException) -> bool:
    """Errors that retrying cannot fix: wrong credentials, a bad certificate, a missing key file."""
    return isinstance(error, nats.errors.AuthorizationError | ssl.SSLError | FileNotFoundError) or (
        "authorization violation" in str(error).lower()
    )


class NatsConnection:
    """One named NATS connection of a part (functions or edge), with its lifecycle hooks."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        on_disconnected: Hook | None = None,
        on_reconnected: Hook | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.lost = asyncio.Event()
        self._on_disconnected = on_disconnected
        self._on_reconnected = on_reconnected
        self._closing = False
        self._opened = False
        self._nc: NATS | None = None
        # Safe to log: passwords and tokens replaced.
        self.url = redact_servers(settings.nats_url)

    @property
    def nc(self) -> NATS:
        assert self._nc is not None, "open() first"
        return self._nc

    async def open(self) -> NATS:
        """Connect, retrying while the servers are unreachable (up to ``nats_connect_wait``); errors that
        retrying cannot fix (credentials, TLS, files) fail at once with a one-line ``NatsConnectError``."""
        failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        last_error: list[BaseException] = []

        async def on_error(error: Exception) -> None:
            last_error[:] = [error]
            if not self._opened and _is_fatal(error) and not failed.done():
                failed.set_result(error)
            log.warning("NATS error: %s", _one_line(error), extra={"url": self.url})

        async def on_disconnect() -> None:
            if self._closing:
                return
            log.warning("disconnected from NATS", extra={"url": self.url})
            if self._on_disconnected is not None:
                self._on_disconnected()

        async def on_reconnect() -> None:
            log.info("reconnected to NATS", extra={"url": self.url})
            if self._on_reconnected is not None:
                self._on_reconnected()

        async def on_closed() -> None:
            if self._closing:
                return
            reason = nc.last_error
            log.error(
                "the NATS connection was closed: %s",
                _one_line(reason) if reason else "no reason given",
                extra={"url": self.url},
            )
            self.lost.set()

        nc = NATS()
        self._nc = nc
        connecting = asyncio.ensure_future(
            nc.connect(
                servers=split_servers(self.settings.nats_url),
                name=self.name,
                max_reconnect_attempts=-1,
                # nats-py annotates an int but sleeps for any number of seconds.
                reconnect_time_wait=limits.NATS_RECONNECT_WAIT_S,  # type: ignore[arg-type]
                connect_timeout=limits.NATS_CONNECT_TIMEOUT_S,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                closed_cb=on_closed,
                **connect_options(self.settings),
            )
        )
        racing: set[asyncio.Future[Any]] = {connecting, failed}
        done, _ = await asyncio.wait(
            racing, timeout=self.settings.nats_connect_wait, return_when=asyncio.FIRST_COMPLETED
        )
        if connecting in done and connecting.exception() is None:
            failed.cancel()
            self._opened = True
            return nc
        reason: BaseException
        if connecting.done() and (raised := connecting.exception()) is not None:
            reason = raised
        elif failed.done() and not failed.cancelled():
            reason = failed.result()
        else:
            reason = (
                last_error[0] if last_error else TimeoutError(f"no answer in {self.settings.nats_connect_wait:g} s")
            )
        failed.cancel()
        connecting.cancel()
        self._closing = True
        with contextlib.suppress(BaseException):
            await connecting
        with contextlib.suppress(Exception):
            await nc.close()
        raise NatsConnectError(f"cannot connect to NATS at {self.url}: {_one_line(reason)}")

    async def close(self) -> None:
        """Drain (bounded), then close; never reported as lost."""
        self._closing = True
        nc = self._nc
        if nc is None or nc.is_closed:
            return
        try:
            async with asyncio.timeout(limits.NATS_DRAIN_TIMEOUT_S):
                await nc.drain()
        except Exception as error:
            log.info("NATS drain did not finish: %s", _one_line(error), extra={"url": self.url})
        if not nc.is_closed:
            await nc.close()
