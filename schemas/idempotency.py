"""Idempotency keys on the wire: the headers that carry them and what a valid key is."""

from __future__ import annotations

from typing import Final

# The NATS header a key travels in (JetStream's own de-duplication header, so clients already know it).
KEY_HEADER: Final = "Nats-Msg-Id"
# The same key on HTTP (the edge passes it on as KEY_HEADER).
HTTP_KEY_HEADER: Final = "Idempotency-Key"
# The reply header (NATS and HTTP) that says "already applied: nothing changed, here is the current state".
DUPLICATE_HEADER: Final = "Ctxmeter-Duplicate"
KEY_MAX_CHARS: Final = 128


def is_valid_key(key: str) -> bool:
    """1-128 printable ASCII characters."""
    return 1 <= len(key) <= KEY_MAX_CHARS and key.isascii() and key.isprintable()
