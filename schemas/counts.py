"""Token counts as every message carries them (here so that ``schemas.usage`` and ``schemas.models`` share them)."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

# The largest integer a JSON number carries exactly to every client (JavaScript's Number.MAX_SAFE_INTEGER).
# Larger counts are invalid requests: they would lose precision in browsers, and overflow a float when
# turned into a percentage.
MAX_TOKENS: Final = 2**53 - 1

TokenTotal = Annotated[int, Field(ge=0, le=MAX_TOKENS, description="A token count; never negative.")]
