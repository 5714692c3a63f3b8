"""How settings become nats-py connect options: URL credentials for every server, TLS when asked for,
URLs safe to print."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxmeter.connection import connect_options, redact_servers, service_settings, url_credentials, wants_tls
from ctxmeter.settings import Settings


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        ("nats://a:1,nats://b:2", {}),
        ("nats://u:p@a:1,nats://u:p@b:2", {"user": "u", "password": "p"}),
        # One URL with credentials, the others without: the same credentials for the servers it learns of.
        ("nats://u:p@a:1,nats://b:2", {"user": "u", "password": "p"}),
        # Percent-encoded, as in any URL: a password may hold '@', ':' or '/'.
        ("nats://u:p%40ss%2Fw%3Ard@a:1", {"user": "u", "password": "p@ss/w:rd"}),
        ("nats://tok@a:1", {"token": "tok"}),
        # Different credentials per server: nats-py's own per-URL handling is kept.
        ("nats://u:p@a:1,nats://v:q@b:2", {}),
    ],
)
def test_url_credentials(urls: str, expected: dict[str, str]) -> None:
    assert url_credentials(urls) == expected


def test_a_token_setting_wins_over_a_token_in_the_url() -> None:
    options = connect_options(Settings(nats_url="nats://from-url@a:1", nats_token="from-setting"))
    assert options["token"] == "from-setting"


def test_redacted_urls() -> None:
    assert (
        redact_servers("nats://u:p%40ss@a:1, tls://tok@b:2,nats://c:3") == "nats://u:***@a:1,tls://***@b:2,nats://c:3"
    )


def test_tls_is_wanted_for_a_tls_url_or_any_tls_setting(tmp_path: Path) -> None:
    assert not wants_tls(Settings(nats_url="nats://a:1,nats://b:2"))
    assert wants_tls(Settings(nats_url="nats://a:1,tls://b:2"))
    assert wants_tls(Settings(nats_url="nats://a:1", nats_tls_ca=tmp_path / "ca.pem"))
    assert wants_tls(Settings(nats_url="nats://a:1", nats_tls_cert=tmp_path / "c.pem", nats_tls_key=tmp_path / "k"))


def test_the_service_connection_takes_none_of_the_state_users_credentials(tmp_path: Path) -> None:
    """The functions' second connection is its own user: the state user's password, token, .creds or
    nkey never go with it (nats-server would take them, and the replies would be the state user's)."""
    state = {
        "nats_url": "tls://functions:secret@a:1,tls://b:2",
        "nats_token": "tok",
        "nats_creds": tmp_path / "functions.creds",
        "nats_nkey": tmp_path / "functions.nk",
        "nats_tls_ca": tmp_path / "ca.pem",
    }
    assert service_settings(Settings(**state)) is None
    service = service_settings(Settings(**state, nats_service_creds=tmp_path / "service.creds"))
    assert service is not None
    assert (service.nats_url, service.nats_creds, service.nats_nkey, service.nats_token) == (
        "tls://a:1,tls://b:2",
        tmp_path / "service.creds",
        None,
        None,
    )
    assert service.nats_tls_ca == tmp_path / "ca.pem"
    by_url = service_settings(Settings(**state, nats_service_url="tls://service:pw@a:1"))
    assert by_url is not None and url_credentials(by_url.nats_url) == {"user": "service", "password": "pw"}
    assert (by_url.nats_creds, by_url.nats_nkey) == (None, None)
