"""A large text or chat counted in two parts at once adds up to tiktoken's count of the whole, always."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from functions.counting import SPLIT_MIN_CHARS, TokenCounter, count_messages_now, count_text_now, message_cut
from functions.encodings import count_tokens, get_encoding
from functions.registry import default_registry
from functions.splitting import LETTER_RANGES, SEARCH_CHARS, cut_point, is_stable_letter
from schemas.models import ChatMessage, Encoding

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
        await counter.count_text("built first", encoding)  # only a built encoding's texts are split
        rng = random.Random(f"counter-{encoding.value}")
        no_letters = "1234567890 " * (SPLIT_MIN_CHARS // 5)  # no place to cut: counted whole
        texts = [prose_like(rng, SPLIT_MIN_CHARS * 3), soup(rng, SPLIT_MIN_CHARS * 2), no_letters]
        for text in texts:
            assert await counter.count_text(text, encoding) == count_text_now(text, encoding)
        assert counter.splits == 2  # the two with a place to cut, each arriving at idle workers
        # Concurrent counts (no idle worker for most of them) still count exactly.
        counts = await asyncio.gather(*(counter.count_text(text, encoding) for text in texts * 3))
        assert counts == [count_text_now(text, encoding) for text in texts * 3]
    finally:
        counter.close()


def test_a_chat_is_cut_between_messages_only_where_both_parts_are_worth_a_thread() -> None:
    assert message_cut([10, 10, 10, 10], 25) == 2  # nearest to the wanted share: 20 or 30 before it
    assert message_cut([10, 10, 10, 10], 28) == 3
    assert message_cut([90, 5, 5], 64) is None  # one message holds most of it
    assert message_cut([5, 90, 5], 64) is None
    assert message_cut([100], 64) is None
    assert message_cut([], 0) is None


@pytest.mark.parametrize("encoding", list(Encoding))
async def test_large_chats_counted_in_two_parts_match_one_count(encoding: Encoding) -> None:
    tokenizer = default_registry().resolve("gpt-4o" if encoding is Encoding.O200K_BASE else "gpt-4", None)
    assert tokenizer.encoding is encoding
    counter = TokenCounter(workers=2)
    try:
        counter.start_workers()
        await counter.count_text("built first", encoding)
        rng = random.Random(f"chat-{encoding.value}")
        chats = [
            [ChatMessage(role=rng.choice(["user", "assistant"]), content=prose_like(rng, 2_000)) for _ in range(40)],
            [ChatMessage(role="user", content=soup(rng, 20_000), name="ann") for _ in range(3)],
            [ChatMessage(role="user", content=prose_like(rng, SPLIT_MIN_CHARS * 2))],  # one message: whole
        ]
        for chat in chats:
            assert await counter.count_messages(chat, tokenizer) == count_messages_now(chat, tokenizer)
        assert counter.splits == 2  # not the chat of one message
    finally:
        counter.close()


async def test_counts_arriving_together_split_only_the_first() -> None:
    """The first marks both workers busy before it yields: the others are counted whole, spread over the
    other workers, not all cut onto the first two."""
    counter = TokenCounter(workers=4)
    try:
        counter.start_workers()
        await counter.count_text("built first", Encoding.O200K_BASE)
        rng = random.Random("together")
        texts = [prose_like(rng, SPLIT_MIN_CHARS * 3) for _ in range(4)]
        counts = await asyncio.gather(*(counter.count_text(text, Encoding.O200K_BASE) for text in texts))
        assert counts == [count_text_now(text, Encoding.O200K_BASE) for text in texts]
        assert counter.splits == 1
    finally:
        counter.close()


@pytest.mark.parametrize("encoding", list(Encoding))
def test_every_letter_a_cut_may_follow_is_a_letter_to_tiktoken_too(encoding: Encoding) -> None:
    """Python's Unicode tables decide what ``cut_point`` takes for a letter, tiktoken's regex engine what
    its pieces are. Were they ever to disagree on a character (a newer Unicode on one side), a cut after
    it could change the count: every such character is checked against this Python and this tiktoken."""
    built = get_encoding(encoding)
    tail = count_tokens(built, ".x")
    codes = (code for low, high in LETTER_RANGES for code in range(low, high + 1))
    letters = [chr(code) for code in codes if is_stable_letter(chr(code))]
    assert len(letters) > 30_000
    wrong = [
        letter
        for letter in letters
        if count_tokens(built, "x" + letter + ".x") != count_tokens(built, "x" + letter) + tail
    ]
    assert not wrong, [f"U+{ord(letter):04X}" for letter in wrong[:20]]
