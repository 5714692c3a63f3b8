"""Idempotency keys: a change that carries one is applied at most once per session.

A key is what a client makes once per change and sends again on each retry (NATS header
``Nats-Msg-Id``, HTTP ``Idempotency-Key``). The functions keep digests of the last keys of a session
inside its stored state and write them in the same compare-and-set as the change, so the guarantee holds
across processes, restarts and a cluster node's loss: no store beside the state could do that without
reopening the race between "seen?" and "apply".
"""

from __future__ import annotations

import base64
import hashlib
import time

from ctxmeter.limits import IDEMPOTENCY_DIGEST_BYTES, IDEMPOTENCY_KEYS_KEPT, IDEMPOTENCY_KEYS_MAX
from functions.errors import Conflict, InvalidRequest
from schemas.excerpt import excerpt
from schemas.idempotency import OBSERVED_HEADER, is_valid_key, parse_observed
from schemas.limits import KEY_MAX_CHARS, OBSERVED_MAX_DIGITS

KeyEntry = tuple[str, int]


def validate_key(key: str | None) -> str | None:
    """The key if it is 1-128 printable ASCII characters (None when absent), else ``invalid_request``."""
    if key is None:
        return None
    if not is_valid_key(key):
        raise InvalidRequest(
            f"idempotency key {excerpt(key)} is invalid: use 1-{KEY_MAX_CHARS} printable ASCII characters"
        )
    return key


def validate_observed(value: str | None) -> int | None:
    """The observed time in Unix nanoseconds (None when absent), else ``invalid_request``."""
    if value is None:
        return None
    observed = parse_observed(value)
    if observed is None:
        raise InvalidRequest(
            f"{OBSERVED_HEADER} {excerpt(value)} is invalid: use Unix nanoseconds, 1-{OBSERVED_MAX_DIGITS} digits"
        )
    return observed


def digest(key: str) -> str:
    """What the state keeps of a key: fixed size, whatever the key's length."""
    raw = hashlib.blake2b(key.encode("ascii"), digest_size=IDEMPOTENCY_DIGEST_BYTES).digest()
    return base64.b64encode(raw).decode("ascii")


def seen(kept: tuple[KeyEntry, ...]) -> set[str]:
    return {key_digest for key_digest, _ in kept}


def has_room(kept: tuple[KeyEntry, ...], adding: int, window_s: float) -> bool:
    """Whether ``adding`` more keys applied now leave the window within ``IDEMPOTENCY_KEYS_MAX`` without dropping a
    key applied less than ``window_s`` ago (a key stamped ahead of this clock counts as recent)."""
    now = int(time.time())
    recent = sum(1 for _, applied in kept if now - applied < window_s)
    return recent + adding <= IDEMPOTENCY_KEYS_MAX


def remember(kept: tuple[KeyEntry, ...], digests: list[str], window_s: float) -> tuple[KeyEntry, ...]:
    """The window after ``digests`` were applied now, oldest first: the newest ``IDEMPOTENCY_KEYS_KEPT``, and older
    ones applied less than ``window_s`` ago. Callers admit keys with ``has_room``; ``IDEMPOTENCY_KEYS_MAX`` here is
    only the bound on the state's size (clocks far apart between processes)."""
    if not digests and len(kept) <= IDEMPOTENCY_KEYS_KEPT:
        return kept  # every entry is among the newest kept: nothing to add or drop (most changes carry no key)
    now = int(time.time())
    entries = [*kept, *((key_digest, now) for key_digest in digests)]
    newest_from = len(entries) - IDEMPOTENCY_KEYS_KEPT
    window = [entry for index, entry in enumerate(entries) if index >= newest_from or now - entry[1] < window_s]
    return tuple(window[-IDEMPOTENCY_KEYS_MAX:])


def window_full(session_id: str, window_s: float) -> Conflict:
    return Conflict(
        f"session {session_id} took {IDEMPOTENCY_KEYS_MAX} keyed changes in the last {window_s:g} s, as many as it "
        "can tell apart from retries; retry in a moment"
    )
