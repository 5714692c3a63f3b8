"""A private certificate authority made in a test, and a certificate of the edge's from it (127.0.0.1 and
localhost), as files the edge's ``--tls-cert``/``--tls-key`` take."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class EdgeCertificate:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client's TLS context that trusts this CA alone."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def edge_certificate(directory: Path) -> EdgeCertificate:
    ca = trustme.CA(organization_name="ctxmeter test CA")
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "edge.pem", directory / "edge-key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return EdgeCertificate(ca, ca_file, cert_file, key_file)
