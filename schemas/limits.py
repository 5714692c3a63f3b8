"""The bounds of every message ctxmeter takes: part of the contract (each request model and the JSON
Schema exported from it carry them), so a publisher in any language can respect them. The running parts'
own limits and intervals are in ``ctxmeter/limits.py``; what an operator tunes is a setting.
"""

from __future__ import annotations

from typing import Final

# The largest integer a JSON number carries exactly to every client (JavaScript's Number.MAX_SAFE_INTEGER).
# Larger counts are invalid requests: they would lose precision in browsers, and overflow a float when
# turned into a percentage.
MAX_TOKENS: Final = 2**53 - 1

# A session id becomes a NATS subject token and a KV key: long enough for any UUID- or path-like id a
# platform uses, short enough that subjects and keys stay small.
SESSION_ID_MAX_LENGTH: Final = 128

# Characters of client input quoted at most: enough to recognise a typo.
QUOTE_CHARS: Final = 40

# An idempotency key: a UUID or a hash fits several times over; only its digest is stored.
KEY_MAX_CHARS: Final = 128
# Unix nanoseconds fit in 19 digits until the year 2286; more is not a time.
OBSERVED_MAX_DIGITS: Final = 19

# Request bounds that do not depend on a deployment's settings (texts are bounded by the setting
# CTXMETER_MAX_TEXT_BYTES). OpenAI caps a message's ``name`` at 64 characters; roles are single words.
MAX_ROLE_CHARS: Final = 64
MAX_NAME_CHARS: Final = 64
# Chat messages one count may carry, and text parts one message may carry: far beyond a real
# conversation, and small enough that the per-item overhead of counting stays a few milliseconds.
MAX_CHAT_MESSAGES: Final = 10_000
MAX_CONTENT_PARTS: Final = 1_000
# The longest model name any provider uses is well under half of this (dated, routed names included).
MODEL_NAME_CHARS: Final = 128
# Newest history points one request may ask for (a session keeps at least this many).
MAX_HISTORY_LIMIT: Final = 1_000

# Received field names a shape error lists; the rest are counted.
LISTED_FIELDS: Final = 8
