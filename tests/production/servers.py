"""nats-server configurations for the production tests: the project's nats.conf plus TLS, users,
tokens, nkeys, operator JWTs or the shipped authorization block, each in a directory of the test's own."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Final

from ctxmeter.natsserver import NATS_CONF
from tests.natsproc import NatsProcess

PROJECT: Final = Path(__file__).resolve().parents[2]
DEPLOY_NATS: Final = PROJECT / "deploy" / "nats"
AUTH_CONF: Final = DEPLOY_NATS / "auth.conf"
PERMISSIONS_CONF: Final = DEPLOY_NATS / "permissions.conf"
CLUSTER_CONF: Final = DEPLOY_NATS / "cluster.conf"


def quoted(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def tls_block(cert: Path, key: Path, ca: Path | None = None, *, verify: bool = False) -> str:
    """The server's client-TLS block; ``verify`` asks every client for a certificate signed by ``ca``."""
    lines = [f"  cert_file: {quoted(cert)}", f"  key_file: {quoted(key)}", "  timeout: 2"]
    if ca is not None:
        lines.append(f"  ca_file: {quoted(ca)}")
    if verify:
        lines.append("  verify: true")
    return "tls {\n" + "\n".join(lines) + "\n}\n"


def include(directory: Path, shipped: Path) -> str:
    """An ``include`` of a file of deploy/nats as shipped, copied beside the config with the files it
    includes itself (nats-server resolves an include relative to the including file)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in (shipped, PERMISSIONS_CONF):
        shutil.copy(path, directory / path.name)
    return f"include {shipped.name}\n"


def start_server(directory: Path, extra: str) -> NatsProcess:
    """nats-server with nats.conf as ctxmeter ships it, followed by ``extra``; started."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "server.conf"
    config.write_text(NATS_CONF.read_text() + "\n# -- the test's own --\n" + extra)
    server = NatsProcess(directory / "store", config=config)
    server.start()
    return server
