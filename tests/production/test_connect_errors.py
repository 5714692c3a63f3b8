"""What a part says when it cannot connect: one line naming the cause, at once (retrying cannot fix a
wrong credential or certificate), and never a secret. And TLS asked for is TLS or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxmeter.connection import NatsConnectError, NatsConnection
from ctxmeter.settings import Settings
from tests.natsproc import NatsProcess
from tests.production.cli import Cli, clean_env
from tests.production.conftest import part_settings
from tests.production.natsjwt import Operator, write_creds
from tests.production.pki import Pki
from tests.production.servers import start_server, tls_block

# A wrong credential must fail at once, not after the (long) wait for a server that is not up yet.
PATIENT_S = 60.0
PASSWORD = "s3cret-Pa55word"


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[NatsProcess]:
    server = start_server(tmp_path / "plain", "")
    yield server
    server.stop()


@pytest.fixture
def passworded(tmp_path: Path) -> Iterator[NatsProcess]:
    server = start_server(tmp_path / "password", f'authorization {{ user: ctxmeter, password: "{PASSWORD}" }}\n')
    yield server
    server.stop()


async def refusal(settings: Settings) -> str:
    """The one-line error opening a connection with ``settings`` fails with, well before any timeout."""
    connection = NatsConnection(settings, "ctxmeter-test")
    with pytest.raises(NatsConnectError) as refused:
        await connection.open()
    message = str(refused.value)
    assert "\n" not in message
    return message


def patient(url: str, **values: object) -> Settings:
    """Settings that would keep trying for a minute: a refusal that comes at once was judged fatal."""
    return part_settings(url, nats_connect_wait=PATIENT_S, **values)


# -- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "setting"),
    [
        ("nats_creds", "CTXMETER_NATS_CREDS"),
        ("nats_nkey", "CTXMETER_NATS_NKEY"),
        ("nats_tls_ca", "CTXMETER_NATS_TLS_CA"),
        ("nats_tls_cert", "CTXMETER_NATS_TLS_CERT"),
    ],
)
async def test_a_missing_file(plain: NatsProcess, tmp_path: Path, field: str, setting: str) -> None:
    missing = tmp_path / "nowhere" / "file"
    message = await refusal(patient(plain.url, **{field: missing}))
    assert message == f"{setting}: no such file: {missing}"


async def test_files_that_are_not_what_they_claim(plain: NatsProcess, tmp_path: Path) -> None:
    """A file of the wrong kind is named, and its content (which may be a secret) is never quoted."""
    leaked = tmp_path / "leaked.txt"
    leaked.write_text("SUPERSECRETVALUE-not-a-seed\n")
    assert await refusal(patient(plain.url, nats_nkey=leaked)) == (
        f"CTXMETER_NATS_NKEY: {leaked} does not hold an nkey seed (a line starting SU)"
    )
    message = await refusal(patient(plain.url, nats_creds=leaked))
    assert message == f"CTXMETER_NATS_CREDS: {leaked} is not a NATS .creds file (a user JWT and an nkey seed)"
    # A seed but no JWT: nats-py would look for the JWT forever.
    operator = Operator.new()
    half = tmp_path / "half.creds"
    half.write_text("".join(operator.user_creds("x").partition("************************* IMPORTANT")[1:]))
    assert "is not a NATS .creds file" in await refusal(patient(plain.url, nats_creds=half))


async def test_a_key_that_does_not_match_the_certificate(plain: NatsProcess, pki: Pki) -> None:
    message = await refusal(patient(plain.url, nats_tls_cert=pki.client.cert, nats_tls_key=pki.server.key))
    assert message.startswith("cannot load the NATS TLS files:")
    assert "KEY_VALUES_MISMATCH" in message


# -- certificates -----------------------------------------------------------------------------


async def test_a_server_certificate_from_an_unknown_ca(tmp_path: Path, pki: Pki) -> None:
    server = start_server(tmp_path, tls_block(pki.server.cert, pki.server.key))
    try:
        message = await refusal(patient(f"tls://127.0.0.1:{server.port}", nats_tls_ca=pki.rogue_ca))
        assert "the server's TLS certificate is not trusted" in message
        assert f"checked against CTXMETER_NATS_TLS_CA {pki.rogue_ca}" in message
        # Without a CA setting, the system's CAs are used, and said to be.
        message = await refusal(patient(f"tls://127.0.0.1:{server.port}"))
        assert "set CTXMETER_NATS_TLS_CA to the CA that signed it" in message
    finally:
        server.stop()


async def test_a_client_certificate_the_server_does_not_trust(tmp_path: Path, pki: Pki) -> None:
    server = start_server(tmp_path, tls_block(pki.server.cert, pki.server.key, pki.ca, verify=True))
    try:
        rogue = patient(
            server.url, nats_tls_ca=pki.ca, nats_tls_cert=pki.rogue_client.cert, nats_tls_key=pki.rogue_client.key
        )
        message = await refusal(rogue)
        assert f"the server refused our client certificate {pki.rogue_client.cert}" in message
        message = await refusal(patient(server.url, nats_tls_ca=pki.ca))
        assert "the server asks for a client certificate" in message
        assert "CTXMETER_NATS_TLS_CERT" in message
    finally:
        server.stop()


async def test_tls_asked_for_is_tls_or_nothing(plain: NatsProcess, passworded: NatsProcess, pki: Pki) -> None:
    """nats-py alone would carry on in plaintext (and send the password) to a server without TLS."""
    message = await refusal(patient(f"tls://127.0.0.1:{plain.port}"))
    assert message.endswith("not connecting in plaintext")
    # A CA set means TLS too, whatever the URL's scheme.
    assert (await refusal(patient(plain.url, nats_tls_ca=pki.ca))).endswith("not connecting in plaintext")
    message = await refusal(patient(f"tls://ctxmeter:{PASSWORD}@127.0.0.1:{passworded.port}"))
    assert message.endswith("not connecting in plaintext") and PASSWORD not in message
    # The password never reached the server: refused before a CONNECT was written, not for a bad one.
    log = (passworded.store / "nats-server.log").read_text()
    assert "Authorization Violation" not in log


# -- credentials ------------------------------------------------------------------------------


async def test_authorization_violations(passworded: NatsProcess, tmp_path: Path) -> None:
    message = await refusal(patient(f"nats://ctxmeter:wrong-{PASSWORD}@127.0.0.1:{passworded.port}"))
    assert message == (
        f"cannot connect to NATS at nats://ctxmeter:***@127.0.0.1:{passworded.port}: "
        "authorization violation: the server refused user 'ctxmeter' with a password (in the URL)"
    )
    assert await refusal(patient(passworded.url)) == (
        f"cannot connect to NATS at {passworded.url}: "
        "authorization violation: the server requires credentials, and none were given"
    )
    message = await refusal(patient(passworded.url, nats_token=PASSWORD))
    assert message.endswith("authorization violation: the server refused a token")
    assert PASSWORD not in message


async def test_creds_of_another_operator(tmp_path: Path) -> None:
    trusted, foreign = Operator.new(), Operator.new()
    server = start_server(tmp_path, trusted.server_config())
    try:
        creds = write_creds(tmp_path / "foreign.creds", foreign.user_creds("intruder"))
        message = await refusal(patient(server.url, nats_creds=creds))
        assert message.endswith(f"authorization violation: the server refused the .creds file {creds}")
    finally:
        server.stop()


# -- the command line -------------------------------------------------------------------------


@pytest.mark.slow
async def test_ctxmeter_functions_prints_the_error_and_exits_1(passworded: NatsProcess) -> None:
    wrong = f"wrong-{PASSWORD}"
    functions = Cli(
        "functions", env=clean_env(CTXMETER_NATS_URL=f"nats://ctxmeter:{wrong}@127.0.0.1:{passworded.port}")
    )
    await functions.start()
    assert await functions.wait() == 1
    last = functions.lines[-1]
    assert last == (
        f"ctxmeter: cannot connect to NATS at nats://ctxmeter:***@127.0.0.1:{passworded.port}: "
        "authorization violation: the server refused user 'ctxmeter' with a password (in the URL)"
    )
    assert wrong not in functions.output and PASSWORD not in functions.output
    assert "Traceback" not in functions.output
