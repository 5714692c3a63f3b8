"""Where a text can be cut so that its two parts' token counts add up to the whole's, exactly.

tiktoken first cuts a text into pieces with its encoding's regex, then encodes each piece alone. So a
cut between two pieces, at a place where the second piece starts the same whether the text starts there
or not, leaves every piece as it was, and the counts add up. Such a place, for both encodings'
patterns (``functions.encodings.SPECS``), is between a letter and a character that no piece holding a
letter can take:

- every alternative that matches a letter runs over letters (and, in o200k_base, combining marks) and
  may end in an English contraction (``'s``, ``'ll``...); its optional leading character is never a
  letter. So the piece holding a letter that is followed by anything but a letter, a mark or an
  apostrophe ends with that letter;
- the patterns look only ahead (``\\s+(?!\\S)``, ``\\s++$``), never behind, and a part that ends with a
  letter ends with no whitespace for those to see differently.

Both characters are drawn from conservative sets: letters of long-established scripts, and after them
ASCII or common CJK punctuation and spaces. What is a letter is Python's ``str.isalpha`` here and
tiktoken's regex engine there; should their Unicode versions ever disagree on a character in these
ranges (the ranges hold a few code points assigned late, or not yet), a cut after it could move a piece
boundary. ``tests/functions/test_splitting.py`` checks every such letter against the installed tiktoken,
and holds every cut it finds in varied texts to tiktoken's own count.
"""

from __future__ import annotations

from typing import Final

from ctxmeter.limits import SPLIT_SEARCH_CHARS

# Letters of long-established scripts: Latin (with Latin-1 and Extended-A/B), Greek, Cyrillic, kana, CJK
# unified ideographs, Hangul syllables. Within these ranges only ``str.isalpha()`` characters count.
LETTER_RANGES: Final = (
    (0x41, 0x5A),
    (0x61, 0x7A),
    (0xC0, 0x24F),
    (0x370, 0x3FF),
    (0x400, 0x4FF),
    (0x3041, 0x30FF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7A3),
)
# What may follow the letter: ASCII that is neither a letter nor the apostrophe of a contraction, and
# the spaces and punctuation of Chinese and Japanese text.
_AFTER: Final = frozenset(
    chr(code) for code in range(0x80) if not chr(code).isalpha() and chr(code) != "'"
) | frozenset("\u3000\u3001\u3002\uff0c\uff0e\uff01\uff1f\uff1b\uff1a\u300c\u300d\u300e\u300f\uff08\uff09")


def is_stable_letter(char: str) -> bool:
    code = ord(char)
    return char.isalpha() and any(low <= code <= high for low, high in LETTER_RANGES)


def cut_points(text: str, parts: int) -> list[int]:
    """Where to cut ``text`` into about ``parts`` parts of similar length whose counts add up to the whole's:
    the parts' bounds, ``0`` first and ``len(text)`` last (just those two where no cut is found)."""
    bounds = [0]
    for part in range(1, parts):
        wanted = max(len(text) * part // parts, bounds[-1] + 1)
        cut = cut_point(text, wanted)
        if cut is not None and cut < len(text):
            bounds.append(cut)
    bounds.append(len(text))
    return bounds


def cut_point(text: str, wanted: int) -> int | None:
    """The first index ``i >= wanted`` (within ``SPLIT_SEARCH_CHARS``) where ``text[:i]`` and ``text[i:]`` count
    to ``text``'s count in total, else None."""
    end = min(len(text), wanted + SPLIT_SEARCH_CHARS)
    for index in range(max(1, wanted), end):
        if text[index] in _AFTER and is_stable_letter(text[index - 1]):
            return index
    return None
