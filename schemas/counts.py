"""Token counts as every message carries them (here so that ``schemas.usage`` and ``schemas.models`` share them)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from schemas.limits import MAX_TOKENS

TokenTotal = Annotated[int, Field(ge=0, le=MAX_TOKENS, description="A token count; never negative.")]
