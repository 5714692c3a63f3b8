"""The edge's listening socket: plain, or TLS (HTTPS and ``wss://``), with the connection guard around
aiohttp's protocol for every connection. Made from public pieces so a second listener (another port, the
same rules) is one more call of ``listen``."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from aiohttp import web

from ctxmeter.limits import LISTEN_BACKLOG
from ctxmeter.settings import Settings
from ws_edge.guard import ConnectionGuard
from ws_edge.security import WILDCARD_HOSTS


def server_tls(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of ``--tls-cert``/``--tls-key`` (None: plain HTTP); a bad file fails here, at start."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return tls_context(settings.tls_cert, settings.tls_key)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    # Python's server defaults: TLS 1.2 at least, its cipher list; HTTP/1.1 only (aiohttp speaks no h2), so
    # a browser negotiating ALPN is told so rather than trying HTTP/2.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def listen(
    runner: web.BaseRunner, guard: ConnectionGuard, host: str, port: int, tls: ssl.SSLContext | None = None
) -> asyncio.Server:
    """Listen for ``runner``'s application. aiohttp's sites offer no way to choose the protocol factory,
    so the listener is made from public pieces: the runner's ``server`` is that factory. Close it
    (``close``, ``wait_closed``) before ``runner.cleanup()``, which then ends its open connections."""
    server = runner.server
    if server is None:
        raise RuntimeError("set the runner up before listening")
    return await asyncio.get_running_loop().create_server(
        guard.wrap(server), host or None, port, ssl=tls, backlog=LISTEN_BACKLOG
    )


def url_of(listener: asyncio.Server, host: str, tls: ssl.SSLContext | None) -> str:
    """The base URL a client on this machine uses (loopback for an edge on every address)."""
    port = listener.sockets[0].getsockname()[1]
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls is not None else 'http'}://{host}:{port}"
