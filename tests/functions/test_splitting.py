"""A large text counted in two parts at once adds up to tiktoken's count of the whole, always."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from functions.counting import SPLIT_MIN_CHARS, TokenCounter, count_text_now
from functions.encodings import count_tokens, get_encoding
from functions.splitting import SEARCH_CHARS, cut_point
from schemas.models import Encoding

# Characters that sit at or near piece boundaries in one pattern or the other: letters of several
# scripts and cases, combining marks, contraction apostrophes and their letters, digits, whitespace of
# every kind, ASCII and CJK punctuation, a letter of a recent Unicode version, emoji with a joiner.
TRICKY = (
    list("aAbzZsStTdDmMlLvVrReE")
    + list("éÉßøœĳǅ")  # Latin-1 and Extended, a titlecase digraph
    + list("αΩжЖ")
    + list("あアー漢字한")
    + ["\u0301", "\u0308", "\u3099"]  # combining marks
    + ["'", "'", "’", "`"]
    + list("0123456789")
    + [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\n\n", "\u3000", "\u00a0"]
    + list('.,;:!?()[]{}<>/\\-_=+*&^%$#@~|"')
    + list("，。、！？；：「」（）")
    + ["\U0001f600", "\U0001f469\u200d\U0001f4bb", "\U00016fe4"]  # emoji; a letter of Unicode 12
)


def soup(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(TRICKY) for _ in range(size))


def prose_like(rng: random.Random, size: int) -> str:
    words = [
        "it's",
        "we'll",
        "THE",
        "don'T",
        "naïve",
        "café",
        "x2",
        "3.14",
        "foo_bar",
        "(see)",
        "Über",
        "中文，",
        "日本語。",
    ]
    out: list[str] = []
    while sum(map(len, out)) < size:
        out.append(rng.choice(words))
        out.append(rng.choice([" ", " ", "\n", ", ", ". ", "  "]))
    return "".join(out)


def checked_cuts(text: str, encoding: Encoding, step: int) -> int:
    """Every cut found from every ``step``-th place: both parts' counts add up to the whole's."""
    built = get_encoding(encoding)
    whole = count_tokens(built, text)
    cuts = {cut_point(text, wanted) for wanted in range(0, len(text), step)} - {None}
    for cut in cuts:
        assert cut is not None
        assert count_tokens(built, text[:cut]) + count_tokens(built, text[cut:]) == whole, (encoding, text, cut)
    return len(cuts)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_every_cut_adds_up_on_random_mixes_of_tricky_characters(encoding: Encoding) -> None:
    rng = random.Random(f"soup-{encoding.value}")
    found = sum(checked_cuts(soup(rng, 300), encoding, step=1) for _ in range(150))
    assert found > 1000  # the rule finds cuts in such text: this checked something


@pytest.mark.parametrize("encoding", list(Encoding))
def test_every_cut_adds_up_on_prose_code_and_cjk(encoding: Encoding) -> None:
    rng = random.Random(f"prose-{encoding.value}")
    code = Path(asyncio.__file__).read_text(encoding="utf-8") * 3
    cjk = "中文文本，包含标点符号。日本語のテキスト「かぎかっこ」も、ここにあります！" * 40
    found = 0
    for text in (prose_like(rng, 20_000), code, cjk):
        found += checked_cuts(text, encoding, step=97)
    assert found > 200


def test_no_cut_where_there_is_none_within_reach() -> None:
    assert cut_point("x" * 20_000, 100) is None  # one run of letters: one piece boundary only at its end
    text = "a" * (SEARCH_CHARS + 200) + " tail"
    assert cut_point(text, 0) is None  # the only place is beyond the search
    assert cut_point(text, 300) == SEARCH_CHARS + 200
    assert cut_point("it's", 1) is None  # never before a contraction's apostrophe


@pytest.mark.parametrize("encoding", list(Encoding))
async def test_large_texts_counted_in_two_parts_match_one_count(encoding: Encoding) -> None:
    counter = TokenCounter(workers=2)
    try:
        counter.start_workers()
        get_encoding(encoding)  # built, as a split needs (an unbuilt one is built on the owner)
        rng = random.Random(f"counter-{encoding.value}")
        no_letters = "1234567890 " * (SPLIT_MIN_CHARS // 5)  # no place to cut: counted whole
        texts = [prose_like(rng, SPLIT_MIN_CHARS * 3), soup(rng, SPLIT_MIN_CHARS * 2), no_letters]
        for text in texts:
            assert await counter.count_text(text, encoding) == count_text_now(text, encoding)
        # Concurrent counts (no idle worker for most of them) still count exactly.
        counts = await asyncio.gather(*(counter.count_text(text, encoding) for text in texts * 3))
        assert counts == [count_text_now(text, encoding) for text in texts * 3]
    finally:
        counter.close()
