"""Idempotency keys and observed times on the wire: the headers that carry them and what a valid one is."""

from __future__ import annotations

from typing import Final

from schemas.limits import KEY_MAX_CHARS, OBSERVED_MAX_DIGITS

# The NATS header a key travels in (JetStream's own de-duplication header, so clients already know it).
KEY_HEADER: Final = "Nats-Msg-Id"
# The same key on HTTP (the edge passes it on as KEY_HEADER).
HTTP_KEY_HEADER: Final = "Idempotency-Key"
# The reply header (NATS and HTTP) that says "already applied: nothing changed, here is the current state".
DUPLICATE_HEADER: Final = "Ctxmeter-Duplicate"
# The NATS header of a change's observed time (Unix nanoseconds, decimal): when what it reports happened.
# A change older than the newest observed time applied to its session is a no-op, answered with the current
# state and STALE_HEADER: exporters (OpenTelemetry) retry and reorder, so arrival order is not event order.
OBSERVED_HEADER: Final = "Ctxmeter-Observed-At"
STALE_HEADER: Final = "Ctxmeter-Stale"


def parse_observed(value: str) -> int | None:
    """An observed time header as Unix nanoseconds; None when it is not 1-19 ASCII digits."""
    if not (1 <= len(value) <= OBSERVED_MAX_DIGITS and value.isascii() and value.isdigit()):
        return None
    return int(value)


def is_valid_key(key: str) -> bool:
    """1-128 printable ASCII characters."""
    return 1 <= len(key) <= KEY_MAX_CHARS and key.isascii() and key.isprintable()
