"""Every way ctxmeter takes NATS credentials, against a nats-server configured for it: TLS with a
private CA, mutual TLS, user and password, a token, an nkey seed and a ``.creds`` file (operator, account
and user JWTs made here). Each runs the real functions and edge through the whole path."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import nkeys

from ctxmeter.settings import Settings
from functions.counting import TokenCounter
from tests.production.conftest import monitor, part_settings, round_trip, running
from tests.production.natsjwt import Identity, Operator, write_creds
from tests.production.pki import Pki
from tests.production.servers import PERMISSIONS_CONF, start_server, tls_block


def session() -> str:
    return f"s-{uuid.uuid4().hex}"


async def prove(functions: Settings, edge: Settings, counter: TokenCounter) -> None:
    async with running(functions, edge, counter) as (_, edge_server):
        await round_trip(edge_server, session(), 1234)


def client_tls_versions(monitor_port: int) -> dict[str, str]:
    """Each client connection's name and TLS version, as the server sees them."""
    return {
        conn.get("name", ""): conn.get("tls_version", "") for conn in monitor(monitor_port, "/connz")["connections"]
    }


async def test_tls_with_a_private_ca(tmp_path: Path, pki: Pki, counter: TokenCounter) -> None:
    server = start_server(tmp_path, tls_block(pki.server.cert, pki.server.key))
    try:
        settings = part_settings(f"tls://127.0.0.1:{server.port}", nats_tls_ca=pki.ca)
        async with running(settings, settings, counter) as (_, edge):
            await round_trip(edge, session(), 1234)
            versions = client_tls_versions(server.monitor_port)
            assert versions["ctxmeter-functions"].startswith("1.") and versions["ctxmeter-edge"].startswith("1.")
    finally:
        server.stop()


async def test_mutual_tls(tmp_path: Path, pki: Pki, counter: TokenCounter) -> None:
    """The server asks every client for a certificate signed by the CA; a nats:// URL is upgraded."""
    server = start_server(tmp_path, tls_block(pki.server.cert, pki.server.key, pki.ca, verify=True))
    try:
        settings = part_settings(
            server.url, nats_tls_ca=pki.ca, nats_tls_cert=pki.client.cert, nats_tls_key=pki.client.key
        )
        async with running(settings, settings, counter) as (_, edge):
            await round_trip(edge, session(), 99)
            assert set(client_tls_versions(server.monitor_port)) >= {"ctxmeter-functions", "ctxmeter-edge"}
    finally:
        server.stop()


async def test_optional_tls_is_used_when_asked_for(tmp_path: Path, pki: Pki, counter: TokenCounter) -> None:
    """A server that offers TLS without requiring it (``allow_non_tls``): nats-py alone would stay in
    plaintext; ctxmeter, given a CA, upgrades."""
    server = start_server(tmp_path, tls_block(pki.server.cert, pki.server.key) + "allow_non_tls: true\n")
    try:
        settings = part_settings(server.url, nats_tls_ca=pki.ca)
        async with running(settings, settings, counter) as (_, edge):
            await round_trip(edge, session(), 5)
            versions = client_tls_versions(server.monitor_port)
            assert versions["ctxmeter-functions"].startswith("1.") and versions["ctxmeter-edge"].startswith("1.")
    finally:
        server.stop()


async def test_user_and_password_in_the_url(tmp_path: Path, counter: TokenCounter) -> None:
    server = start_server(tmp_path, 'authorization { user: ctxmeter, password: "p4ss-w0rd" }\n')
    try:
        settings = part_settings(f"nats://ctxmeter:p4ss-w0rd@127.0.0.1:{server.port}")
        await prove(settings, settings, counter)
    finally:
        server.stop()


async def test_token(tmp_path: Path, counter: TokenCounter) -> None:
    server = start_server(tmp_path, 'authorization { token: "t0ken-s3cret" }\n')
    try:
        settings = part_settings(server.url, nats_token="t0ken-s3cret")
        await prove(settings, settings, counter)
    finally:
        server.stop()


async def test_token_in_the_url(tmp_path: Path, counter: TokenCounter) -> None:
    server = start_server(tmp_path, 'authorization { token: "t0ken-s3cret" }\n')
    try:
        settings = part_settings(f"nats://t0ken-s3cret@127.0.0.1:{server.port}")
        await prove(settings, settings, counter)
    finally:
        server.stop()


async def test_nkey_seed(tmp_path: Path, counter: TokenCounter) -> None:
    """The server knows the public keys only; each part signs the server's nonce with its seed."""
    functions_user, edge_user = Identity.new(nkeys.PREFIX_BYTE_USER), Identity.new(nkeys.PREFIX_BYTE_USER)
    users = ", ".join(f"{{ nkey: {user.public_key} }}" for user in (functions_user, edge_user))
    server = start_server(tmp_path, f"authorization {{ users = [ {users} ] }}\n")
    seeds = []
    for name, user in (("functions", functions_user), ("edge", edge_user)):
        seed = tmp_path / f"{name}.nk"
        seed.write_bytes(user.seed + b"\n")
        seed.chmod(0o600)
        seeds.append(seed)
    try:
        await prove(
            part_settings(server.url, nats_nkey=seeds[0]), part_settings(server.url, nats_nkey=seeds[1]), counter
        )
    finally:
        server.stop()


async def test_creds_file(tmp_path: Path, counter: TokenCounter) -> None:
    """Operator mode: the server trusts an operator whose account (JetStream enabled) signed the users'
    JWTs; each part connects with a .creds file (user JWT + seed), as ``nsc`` writes them."""
    operator = Operator.new()
    server = start_server(tmp_path, operator.server_config())
    try:
        functions = write_creds(tmp_path / "functions.creds", operator.user_creds("ctxmeter-functions"))
        edge = write_creds(tmp_path / "edge.creds", operator.user_creds("ctxmeter-edge"))
        await prove(
            part_settings(server.url, nats_creds=functions), part_settings(server.url, nats_creds=edge), counter
        )
    finally:
        server.stop()


async def test_creds_over_mutual_tls(tmp_path: Path, pki: Pki, counter: TokenCounter) -> None:
    """Both at once, as a hardened deployment runs: JWT credentials inside mutual TLS."""
    operator = Operator.new()
    tls = tls_block(pki.server.cert, pki.server.key, pki.ca, verify=True)
    server = start_server(tmp_path, operator.server_config() + tls)
    try:
        creds = write_creds(tmp_path / "part.creds", operator.user_creds("ctxmeter"))
        settings = part_settings(
            f"tls://localhost:{server.port}",
            nats_creds=creds,
            nats_tls_ca=pki.ca,
            nats_tls_cert=pki.client.cert,
            nats_tls_key=pki.client.key,
        )
        await prove(settings, settings, counter)
    finally:
        server.stop()


def shipped_permissions(name: str) -> tuple[list[str], list[str], bool]:
    """(publish allow list, subscribe allow list, allow_responses) of one set in permissions.conf."""
    text = re.sub(r"#.*", "", PERMISSIONS_CONF.read_text())
    block = text[text.index(f"{name} = {{") :]
    block = block[: block.index("\n}\n")]

    def allowed(section: str) -> list[str]:
        part = block[block.index(f"{section} = {{") :]
        part = part[part.index("allow = [") : part.index("]")]
        return re.findall(r'"([^"]+)"', part)

    return allowed("publish"), allowed("subscribe"), "allow_responses = true" in block


async def test_jwt_users_with_the_shipped_permissions(tmp_path: Path, counter: TokenCounter) -> None:
    """Operator mode with the permission sets of permissions.conf in the users' JWTs, as docs/deploy.md
    says to carry them over (`nsc add user --allow-pub ... --allow-sub ...`); the functions as two users."""
    operator = Operator.new()
    server = start_server(tmp_path, operator.server_config())
    try:
        creds = {}
        for part in ("functions", "service", "edge"):
            pub, sub, responses = shipped_permissions(f"CTXMETER_{part.upper()}_PERMISSIONS")
            text = operator.user_creds(f"ctxmeter-{part}", pub=pub, sub=sub, responses=responses)
            creds[part] = write_creds(tmp_path / f"{part}.creds", text)
        functions = part_settings(server.url, nats_creds=creds["functions"], nats_service_creds=creds["service"])
        async with running(functions, part_settings(server.url, nats_creds=creds["edge"]), counter) as (_, edge):
            await round_trip(edge, session(), 77)
        assert "Violation" not in (server.store / "nats-server.log").read_text()
    finally:
        server.stop()
