"""The one way ctxmeter connects to NATS: servers, credentials, TLS, reconnect policy and logs.

Functions and edge both connect here, so both reconnect the same way, report the same events and take
the same credentials. A connection that closes without being asked to (the server refused a message
and dropped it, for instance) sets ``lost``; the part's runner then starts over with a new connection.

Secrets never leave this module: URLs are logged and reported without their password or token, and a
credentials file is checked (is it there, is it what it claims to be) without its content ever being
quoted. What nats-py leaves open is closed here:
- TLS asked for (a ``tls://`` URL or any TLS setting) is TLS or nothing: nats-py would otherwise carry on
  in plaintext, credentials included, with a server that does not require TLS;
- a user and password (or a token) in the URL also authenticate to the cluster's other servers, which
  the client learns from the one it reached (nats-py sends URL credentials to that URL's server only);
- a refusal says what was wrong in one line: which file, which side's certificate, which credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

import nats
import nats.errors
import nkeys  # type: ignore[import-untyped]
from nats.aio.client import Client as NATS

from ctxmeter import limits
from ctxmeter.settings import Settings

log = logging.getLogger(__name__)

REDACTED = "***"
TLS_SCHEME: Final = "tls"
# Markers of a .creds file, as `nsc generate creds` writes them.
CREDS_JWT_MARKER: Final = "BEGIN NATS USER JWT"
CREDS_SEED_MARKER: Final = "BEGIN USER NKEY SEED"

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


def strip_credentials(urls: str) -> str:
    """``urls`` with any ``user:password@`` or ``token@`` removed: the servers alone."""
    stripped = []
    for url in split_servers(urls):
        try:
            parts = urlsplit(url)
        except ValueError:  # not a URL nats-py can use either: it fails there, with its own error
            stripped.append(url)
            continue
        host = parts.netloc.rpartition("@")[2]
        stripped.append(urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)))
    return ",".join(stripped)


def service_settings(settings: Settings) -> Settings | None:
    """The settings of the functions' service connection (requests in, replies out) when it is to be a
    NATS user of its own: the servers and TLS of ``settings`` with the ``CTXMETER_NATS_SERVICE_*``
    credentials, none of the state connection's; None when no such setting is given."""
    if settings.nats_service_url is None and settings.nats_service_creds is None and settings.nats_service_nkey is None:
        return None
    return settings.model_copy(
        update={
            "nats_url": settings.nats_service_url or strip_credentials(settings.nats_url),
            "nats_creds": settings.nats_service_creds,
            "nats_nkey": settings.nats_service_nkey,
            "nats_token": None,
        }
    )


def _existing_file(path: Path | None, setting: str) -> str | None:
    if path is None:
        return None
    if not path.is_file():
        raise NatsConnectError(f"{setting}: no such file: {path}")
    return str(path)


def _read_secret_file(path: Path, setting: str) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise NatsConnectError(f"{setting}: cannot read {path}: {error.strerror or type(error).__name__}") from None


def _is_seed(text: str) -> bool:
    try:
        nkeys.from_seed(bytearray(text.strip().encode())).wipe()
    except Exception:  # nkeys raises its own errors, and others (binascii, IndexError) on garbage
        return False
    return True


def _line_after(lines: list[str], marker: str) -> str:
    for index, line in enumerate(lines[:-1]):
        if marker in line:
            return lines[index + 1].strip()
    return ""


def _creds_file(path: Path | None) -> str | None:
    """A ``.creds`` file that holds a user JWT and a valid seed (nats-py would fail obscurely, or spin
    forever looking for a JWT marker that is not there); its content is never quoted."""
    setting = "CTXMETER_NATS_CREDS"
    found = _existing_file(path, setting)
    if found is None or path is None:
        return None
    lines = _read_secret_file(path, setting).splitlines()
    if not _line_after(lines, CREDS_JWT_MARKER) or not _is_seed(_line_after(lines, CREDS_SEED_MARKER)):
        raise NatsConnectError(f"{setting}: {path} is not a NATS .creds file (a user JWT and an nkey seed)")
    return found


def _seed_file(path: Path | None) -> str | None:
    setting = "CTXMETER_NATS_NKEY"
    found = _existing_file(path, setting)
    if found is None or path is None:
        return None
    if not _is_seed(_read_secret_file(path, setting)):
        raise NatsConnectError(f"{setting}: {path} does not hold an nkey seed (a line starting SU)")
    return found


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


def wants_tls(settings: Settings) -> bool:
    """TLS was asked for: a ``tls://`` URL, or any TLS setting."""
    schemes = {urlsplit(url).scheme for url in split_servers(settings.nats_url)}
    tls_files = (settings.nats_tls_ca, settings.nats_tls_cert, settings.nats_tls_key)
    return TLS_SCHEME in schemes or any(path is not None for path in tls_files)


def url_credentials(urls: str) -> dict[str, str]:
    """``user``/``password`` or ``token`` options from the URLs' userinfo, when every URL that has one
    has the same: nats-py then sends them to every server, those the cluster tells it about too."""
    found: set[tuple[str, str | None]] = set()
    for url in split_servers(urls):
        with contextlib.suppress(ValueError):
            parts = urlsplit(url)
            if parts.username is not None:
                found.add((unquote(parts.username), None if parts.password is None else unquote(parts.password)))
    if len(found) != 1:
        return {}
    ((user, password),) = found
    return {"token": user} if password is None else {"user": user, "password": password}


def connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` carrying the credentials and TLS of ``settings``."""
    options: dict[str, Any] = {}
    if creds := _creds_file(settings.nats_creds):
        options["user_credentials"] = creds
    if seed := _seed_file(settings.nats_nkey):
        options["nkeys_seed"] = seed
    from_urls = url_credentials(settings.nats_url)
    if settings.nats_token is not None:
        from_urls.pop("token", None)
        options["token"] = settings.nats_token.get_secret_value()
    options.update(from_urls)
    if (context := tls_context(settings)) is not None:
        options["tls"] = context
    return options


NO_TLS: Final = "the server offers no TLS, and TLS was asked for (tls:// or a TLS setting): not connecting in plaintext"


class _TlsOnlyClient(NATS):
    """A nats-py client that upgrades every connection to TLS, whatever the server requires.

    nats-py upgrades only when the server's INFO says ``tls_required``, even for a ``tls://`` URL, and
    would otherwise send its credentials in plaintext. The INFO is read before anything is sent: here a
    server that offers TLS is told to be upgraded, and one that offers none is refused (the error goes
    to the next server, or fails the connect).
    """

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection:
            if not (info.get("tls_required") or info.get("tls_available")):
                raise nats.errors.Error(f"nats: {NO_TLS}")
            # The dict nats-py consults next, to decide on the upgrade.
            info["tls_required"] = True
        await super()._process_info(info, initial_connection)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[: limits.LOG_EXCERPT_CHARS]


def _is_auth_error(error: BaseException) -> bool:
    return isinstance(error, nats.errors.AuthorizationError) or "authorization violation" in str(error).lower()


def _is_fatal(error: BaseException) -> bool:
    """Errors that retrying cannot fix: wrong credentials, a bad certificate, a missing key file."""
    return (
        isinstance(error, ssl.SSLError | FileNotFoundError)
        or _is_auth_error(error)
        or NO_TLS in str(error)
        or "no ssl context" in str(error)
    )


NO_CREDENTIALS: Final = "no credentials"


def offered_credentials(settings: Settings) -> str:
    """What this process offers the server, by kind only (never a secret): for error messages."""
    offered = []
    if settings.nats_creds is not None:
        offered.append(f"the .creds file {settings.nats_creds}")
    if settings.nats_nkey is not None:
        offered.append(f"the nkey seed in {settings.nats_nkey}")
    kinds = url_credentials(settings.nats_url)
    if "password" in kinds:
        offered.append(f"user {kinds['user']!r} with a password (in the URL)")
    if settings.nats_token is not None or "token" in kinds:
        offered.append("a token")
    if settings.nats_tls_cert is not None:
        offered.append(f"the client certificate {settings.nats_tls_cert}")
    return ", ".join(offered) or NO_CREDENTIALS


def explain(error: BaseException, settings: Settings) -> str:
    """One line: the error, and what it means for these settings."""
    text = _one_line(error)
    if _is_auth_error(error):
        offered = offered_credentials(settings)
        if offered == NO_CREDENTIALS:
            return "authorization violation: the server requires credentials, and none were given"
        return f"authorization violation: the server refused {offered}"
    if isinstance(error, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        if settings.nats_tls_ca is None:
            hint = "checked against the system's CAs: set CTXMETER_NATS_TLS_CA to the CA that signed it"
        else:
            hint = f"checked against CTXMETER_NATS_TLS_CA {settings.nats_tls_ca}"
        return f"the server's TLS certificate is not trusted: {text} ({hint})"
    if "CERTIFICATE_REQUIRED" in text or ("HANDSHAKE_FAILURE" in text and settings.nats_tls_cert is None):
        return f"the server asks for a client certificate: {text} (CTXMETER_NATS_TLS_CERT and CTXMETER_NATS_TLS_KEY)"
    if "permissions violation" in text.lower():
        return f"{text}: this NATS user lacks the permission (deploy/nats/permissions.conf lists what each part needs)"
    if "ALERT_UNKNOWN_CA" in text or "ALERT_BAD_CERTIFICATE" in text or "CERTIFICATE_UNKNOWN" in text:
        return (
            f"the server refused our client certificate {settings.nats_tls_cert}: {text} "
            "(is it signed by a CA the server trusts?)"
        )
    return text


class NatsConnection:
    """One named NATS connection of a part (functions or edge), with its lifecycle hooks."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        on_disconnected: Hook | None = None,
        on_reconnected: Hook | None = None,
        lost: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        # Shared by the connections of a part that needs them all (the functions' state and service).
        self.lost = lost or asyncio.Event()
        self._on_disconnected = on_disconnected
        self._on_reconnected = on_reconnected
        self._closing = False
        self._opened = False
        self._nc: NATS | None = None
        # Safe to log: passwords and tokens replaced.
        self.url = redact_servers(settings.nats_url)

    @property
    def connected(self) -> bool:
        """Connected now (not while reconnecting, nor after a close)."""
        return self._nc is not None and self._nc.is_connected

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
            if not self._opened and _is_fatal(error):
                # Raised from open() in one line; a warning as well would only repeat it.
                if not failed.done():
                    failed.set_result(error)
                return
            # nats-py calls this once per message a slow consumer drops, thousands of times a second: the
            # log's rate limit keeps one kind per error type, so a flood of one hides no other.
            kind = f"nats error {type(error).__name__}"
            log.warning("NATS error: %s", explain(error, self.settings), extra={"url": self.url, "kind": kind})

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

        options = connect_options(self.settings)
        nc = _TlsOnlyClient() if wants_tls(self.settings) else NATS()
        self._nc = nc
        connecting = asyncio.ensure_future(
            nc.connect(
                servers=split_servers(self.settings.nats_url),
                name=self.name,
                max_reconnect_attempts=-1,
                # nats-py annotates an int but sleeps for any number of seconds.
                reconnect_time_wait=limits.NATS_RECONNECT_WAIT_S,  # type: ignore[arg-type]
                connect_timeout=limits.NATS_CONNECT_TIMEOUT_S,
                inbox_prefix=self.settings.inbox_prefix,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                closed_cb=on_closed,
                **options,
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
        raise NatsConnectError(f"cannot connect to NATS at {self.url}: {explain(reason, self.settings)}")

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
