"""How settings become nats-py connect options: URL credentials for every server, TLS when asked for,
URLs safe to print."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxmeter.connection import connect_options, redact_servers, url_credentials, wants_tls
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
