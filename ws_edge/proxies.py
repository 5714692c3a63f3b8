"""Who a request comes from: the connecting address, or, behind a trusted proxy, the client it speaks for.

Behind a proxy every client shares the proxy's address, so the per-IP limit would throttle them all as
one. ``CTXMETER_TRUSTED_PROXIES`` names the proxies (addresses or CIDRs); only when a request's connecting
address is one of them are its forwarding headers read: the client is the nearest hop of
``X-Forwarded-For`` (or, without it, ``Forwarded``) that is not a trusted proxy, read from the right, where
the proxies appended what they saw; the scheme is the nearest proxy's ``X-Forwarded-Proto`` (or
``Forwarded: proto``). From anyone else those headers change nothing: a client cannot claim to be another.

``client_of`` is the one place this is decided; the per-IP limit, logs and the origin check use it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from aiohttp import hdrs, web

from ctxmeter.limits import MAX_HOPS

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES: Final = frozenset({"http", "https"})
# The client address when a connection has none to report (a Unix socket, or gone).
UNKNOWN: Final = "unknown"


@dataclass(frozen=True, slots=True)
class Client:
    """The client of a request as the edge trusts it: its address and the scheme it used."""

    address: str
    scheme: str

    @property
    def secure(self) -> bool:
        return self.scheme == "https"


def client_of(request: web.Request) -> Client:
    """The request's client."""
    return _client(request, request.app.get(TRUSTED_PROXIES, ()))


def _client(request: web.Request, trusted: tuple[IpNetwork, ...]) -> Client:
    remote = request.remote
    parsed_peer = _address(remote) if remote else None
    peer = str(parsed_peer) if parsed_peer is not None else remote or UNKNOWN
    scheme = request.scheme
    if not trusted or not _is_trusted(parsed_peer, trusted):
        return Client(peer, scheme)
    headers = request.headers
    forwarded_for = headers.getall(hdrs.X_FORWARDED_FOR, [])
    if forwarded_for:
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        proto = headers.getall(hdrs.X_FORWARDED_PROTO, [])
        protos = [value.strip().lower() for line in proto for value in line.split(",")]
    else:
        forwarded = request.forwarded
        hops = [entry.get("for", "") for entry in forwarded]
        protos = [entry.get("proto", "").lower() for entry in forwarded if "proto" in entry]
    address = peer
    for hop in reversed(hops[-MAX_HOPS:]):
        parsed = _address(hop)
        if parsed is None:
            break  # not what a proxy writes: the chain cannot be followed further
        address = str(parsed)
        if not _is_trusted(parsed, trusted):
            break
    if protos and protos[-1] in SCHEMES:
        scheme = protos[-1]
    return Client(address, scheme)


def _address(hop: str) -> IpAddress | None:
    """An address as a forwarding header carries it: bare, with a port, IPv6 in brackets (``Forwarded``
    quotes them; aiohttp has unquoted it)."""
    hop = hop.strip()
    if hop.startswith("["):
        hop = hop[1 : hop.find("]")] if "]" in hop else ""
    elif hop.count(":") == 1:
        hop = hop.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(hop)
    except ValueError:
        return None
    # An edge listening on "::" sees IPv4 clients as ::ffff:a.b.c.d: the same client as a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IpAddress | None, trusted: tuple[IpNetwork, ...]) -> bool:
    return address is not None and any(address in network for network in trusted)


TRUSTED_PROXIES: Final = web.AppKey("trusted_proxies", tuple[IpNetwork, ...])
