"""How an error message or a log line quotes what a client sent: a short, printable excerpt.

The contract promises that an error quotes at most a short excerpt of the input, so a reply can never
outgrow what it answers (a 4 MB field name must not come back twice, in the body and in a header), and
that a quoted CR or LF can never end a header early or inject another.
"""

from __future__ import annotations

from typing import Final

from schemas.limits import QUOTE_CHARS

ELLIPSIS: Final = "…"


def printable(text: str) -> str:
    """``text`` with unprintable characters escaped (``\\r``, ``\\n``, ``\\x00``...)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (marked with an ellipsis when cut), then made printable."""
    if len(text) > limit:
        text = text[: max(0, limit - 1)] + ELLIPSIS
    return printable(text)


def excerpt(value: object, limit: int = QUOTE_CHARS) -> str:
    """``value`` quoted for a message: ``'abc'`` for text, its repr otherwise, never over ``limit``
    characters of the input (plus the quotes and escapes)."""
    if isinstance(value, str):
        return f"'{shorten(value, limit)}'"
    return shorten(repr(value), limit)
