"""Who a request comes from, behind trusted proxies or not: the forwarding headers as proxies write them.
(The same rules end to end, through a real nginx: test_nginx.py.)"""

from __future__ import annotations

import ipaddress
import ssl
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from ws_edge.proxies import TRUSTED_PROXIES, Client, client_of

TRUSTED = "127.0.0.1, 10.0.0.0/8, ::1"


def request_from(peer: str, headers: dict[str, str] | list[tuple[str, str]], *, tls: bool = False) -> web.Request:
    app = web.Application()
    app[TRUSTED_PROXIES] = tuple(ipaddress.ip_network(net.strip()) for net in TRUSTED.split(","))
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (peer, 40000) if name == "peername" else default
    return make_mocked_request(
        "GET",
        "/",
        headers=headers,
        app=app,
        transport=transport,
        sslcontext=ssl.create_default_context() if tls else None,
    )


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        # Not a trusted proxy: its headers are its own claims.
        ("203.0.113.7", {"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https"}, ("203.0.113.7", "http")),
        ("203.0.113.7", {"Forwarded": "for=198.51.100.1;proto=https"}, ("203.0.113.7", "http")),
        # A trusted proxy: the nearest hop it does not trust, from the right.
        ("127.0.0.1", {"X-Forwarded-For": "198.51.100.1"}, ("198.51.100.1", "http")),
        ("127.0.0.1", {"X-Forwarded-For": "6.6.6.6, 198.51.100.1, 10.1.2.3"}, ("198.51.100.1", "http")),
        ("127.0.0.1", [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.1")], ("198.51.100.1", "http")),
        ("127.0.0.1", {"X-Forwarded-For": "198.51.100.1:5555"}, ("198.51.100.1", "http")),
        ("127.0.0.1", {"X-Forwarded-For": "10.9.9.9, 10.1.2.3"}, ("10.9.9.9", "http")),  # all trusted: the first
        ("127.0.0.1", {"X-Forwarded-For": "6.6.6.6, not-an-address"}, ("127.0.0.1", "http")),  # broken chain
        ("127.0.0.1", {"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https"}, ("198.51.100.1", "https")),
        ("127.0.0.1", {"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "gopher"}, ("198.51.100.1", "http")),
        ("127.0.0.1", {"Forwarded": 'for="[2001:db8::1]:4711";proto=https'}, ("2001:db8::1", "https")),
        ("127.0.0.1", {"Forwarded": "for=198.51.100.1, for=10.0.0.2"}, ("198.51.100.1", "http")),
        # X-Forwarded-For first: a Forwarded header a client sent through nginx (which sets only XFF) is ignored.
        ("127.0.0.1", {"X-Forwarded-For": "198.51.100.1", "Forwarded": "for=6.6.6.6"}, ("198.51.100.1", "http")),
        # An edge on "::" sees IPv4 peers as IPv4-mapped IPv6 addresses.
        ("::ffff:127.0.0.1", {"X-Forwarded-For": "198.51.100.1"}, ("198.51.100.1", "http")),
        ("::1", {}, ("::1", "http")),
    ],
)
def test_the_client_of_a_request(
    peer: str, headers: dict[str, str] | list[tuple[str, str]], expected: tuple[str, str]
) -> None:
    assert client_of(request_from(peer, headers)) == Client(*expected)


def test_the_edges_own_tls_makes_the_scheme_https() -> None:
    assert client_of(request_from("203.0.113.7", {}, tls=True)).secure
    assert not client_of(request_from("203.0.113.7", {"X-Forwarded-Proto": "https"})).secure
