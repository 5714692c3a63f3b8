"""Operator, account and user JWTs for a NATS server in operator mode, made here with ``nkeys``.

The NATS JWT format (what ``nsc`` writes): ``base64url(header).base64url(claims).base64url(signature)``
without padding, header ``{"typ": "JWT", "alg": "ed25519-nkey"}``, the signature an ed25519 signature
by the issuer's nkey over the first two parts; ``jti`` is the base32 SHA-512/256 of the claims without
it. An operator signs itself and its accounts; an account signs its users. A ``.creds`` file holds a
user's JWT and nkey seed between the markers ``nsc generate creds`` writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
NO_LIMIT = -1
JETSTREAM_UNLIMITED = {"mem_storage": NO_LIMIT, "disk_storage": NO_LIMIT, "streams": NO_LIMIT, "consumer": NO_LIMIT}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Identity:
    """An nkey pair: its seed (secret) and public key."""

    seed: bytes

    @classmethod
    def new(cls, prefix: int) -> Identity:
        return cls(nkeys.encode_seed(os.urandom(32), prefix))

    @property
    def public_key(self) -> str:
        return str(nkeys.from_seed(bytearray(self.seed)).public_key.decode())

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(bytearray(self.seed)).sign(data))


def encode_jwt(issuer: Identity, subject: str, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public_key, "name": name, "sub": subject}
    claims["nats"] = {"version": 2, **nats}
    digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = f"{_b64(json.dumps(HEADER).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(issuer.sign(signing_input.encode()))}"


@dataclass(frozen=True)
class Operator:
    """An operator, its system account and one application account, as a server configuration."""

    operator: Identity
    system: Identity
    account: Identity

    @classmethod
    def new(cls) -> Operator:
        return cls(
            Identity.new(nkeys.PREFIX_BYTE_OPERATOR),
            Identity.new(nkeys.PREFIX_BYTE_ACCOUNT),
            Identity.new(nkeys.PREFIX_BYTE_ACCOUNT),
        )

    def operator_jwt(self) -> str:
        nats = {"type": "operator", "system_account": self.system.public_key}
        return encode_jwt(self.operator, self.operator.public_key, "ctxmeter-test-operator", nats)

    def account_jwt(self, account: Identity, name: str, *, jetstream: bool) -> str:
        limits: dict[str, Any] = {"subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT, "conn": NO_LIMIT}
        limits |= {"imports": NO_LIMIT, "exports": NO_LIMIT, "wildcards": True, "leaf": NO_LIMIT}
        if jetstream:
            limits |= JETSTREAM_UNLIMITED
        nats = {"type": "account", "limits": limits, "default_permissions": {"pub": {}, "sub": {}}}
        return encode_jwt(self.operator, account.public_key, name, nats)

    def user_creds(
        self, name: str, *, pub: list[str] | None = None, sub: list[str] | None = None, responses: bool = False
    ) -> str:
        """A ``.creds`` file's text for a new user of the application account: allowed to publish ``pub``
        and subscribe ``sub`` (everything when None), and to answer requests (``responses``)."""
        user = Identity.new(nkeys.PREFIX_BYTE_USER)
        nats: dict[str, Any] = {"type": "user", "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT}
        nats["pub"] = {"allow": pub} if pub is not None else {}
        nats["sub"] = {"allow": sub} if sub is not None else {}
        if responses:
            # One reply per request received, no time limit: nats-server's `allow_responses: true`.
            nats["resp"] = {"max": 1, "ttl": 0}
        token = encode_jwt(self.account, user.public_key, name, nats)
        return (
            f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n"
        )

    def server_config(self) -> str:
        """The ``operator``/``resolver: MEMORY`` part of a server configuration trusting these JWTs."""
        return (
            f"operator: {self.operator_jwt()}\n"
            f"system_account: {self.system.public_key}\n"
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f"  {self.system.public_key}: {self.account_jwt(self.system, 'SYS', jetstream=False)}\n"
            f"  {self.account.public_key}: {self.account_jwt(self.account, 'CTXMETER', jetstream=True)}\n"
            "}\n"
        )


def write_creds(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path
