"""A large text or chat counted in parts on two workers at once adds up to tiktoken's count of the whole, always."""

from __future__ import annotations

import asyncio
import itertools
import random
from functools import partial
from pathlib import Path

import pytest
import tiktoken

from ctxmeter.limits import SPLIT_MIN_CHARS, SPLIT_PARTS, SPLIT_SEARCH_CHARS
from functions.counting import SharedParts, TokenCounter, count_messages_now, count_text_now, message_groups
from functions.encodings import count_tokens, get_encoding
from functions.registry import default_registry
from functions.splitting import LETTER_RANGES, cut_point, cut_points, is_stable_letter
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


async def settled(counter: TokenCounter) -> None:
    """Until every worker has finished its share of the last split (so the next count may be split too)."""
    for _ in range(1000):
        if counter.idle:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the workers stayed busy")


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
    length = 0
    while length < size:
        word, gap = rng.choice(words), rng.choice([" ", " ", "\n", ", ", ". ", "  "])
        out += (word, gap)
        length += len(word) + len(gap)
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
    text = "a" * (SPLIT_SEARCH_CHARS + 200) + " tail"
    assert cut_point(text, 0) is None  # the only place is beyond the search
    assert cut_point(text, 300) == SPLIT_SEARCH_CHARS + 200
    assert cut_point("it's", 1) is None  # never before a contraction's apostrophe


@pytest.mark.parametrize("encoding", list(Encoding))
async def test_large_texts_counted_in_parts_match_one_count(encoding: Encoding) -> None:
    counter = TokenCounter(workers=2)
    try:
        counter.start_workers()
        await counter.count_text("built first", encoding)  # only a built encoding's texts are split
        rng = random.Random(f"counter-{encoding.value}")
        no_letters = "1234567890 " * (SPLIT_MIN_CHARS // 5)  # no place to cut: counted whole
        texts = [prose_like(rng, SPLIT_MIN_CHARS * 3), soup(rng, SPLIT_MIN_CHARS * 2), no_letters]
        for text in texts:
            assert await counter.count_text(text, encoding) == count_text_now(text, encoding)
            await settled(counter)
        assert counter.splits == 2  # the two with a place to cut, each arriving at idle workers
        # Concurrent counts (no idle worker for most of them) still count exactly.
        counts = await asyncio.gather(*(counter.count_text(text, encoding) for text in texts * 3))
        assert counts == [count_text_now(text, encoding) for text in texts * 3]
    finally:
        counter.close()


def test_a_text_is_cut_into_parts_of_similar_length_that_add_up() -> None:
    rng = random.Random("parts")
    text = prose_like(rng, 100_000)
    bounds = cut_points(text, SPLIT_PARTS)
    assert bounds[0] == 0 and bounds[-1] == len(text) and bounds == sorted(set(bounds))
    assert len(bounds) == SPLIT_PARTS + 1  # a cut near every wanted place in prose
    lengths = [end - start for start, end in itertools.pairwise(bounds)]
    assert max(lengths) < 2 * len(text) / SPLIT_PARTS
    built = get_encoding(Encoding.O200K_BASE)
    parts = sum(count_tokens(built, text[start:end]) for start, end in itertools.pairwise(bounds))
    assert parts == count_tokens(built, text)
    assert cut_points("x" * 50_000, SPLIT_PARTS) == [0, 50_000]  # nowhere to cut: one part


def test_a_chat_is_cut_into_groups_of_messages_of_similar_size() -> None:
    assert message_groups([10] * 8, 4) == [0, 2, 4, 6, 8]
    assert message_groups([10] * 3, 16) == [0, 1, 2, 3]  # no group smaller than a message
    assert message_groups([90, 5, 5], 4) == [0, 1, 2, 3]  # the large message is a group of its own
    assert message_groups([100], 4) == [0, 1]  # one message: one group, not split
    assert message_groups([], 4) == [0, 0]


def count_part(text: str, encoding: tiktoken.Encoding) -> int:
    return count_tokens(encoding, text)


def test_parts_are_counted_by_whichever_worker_takes_them() -> None:
    """One worker alone counts every part (the other never started); an error in a part is the count's."""
    built = get_encoding(Encoding.O200K_BASE)
    texts = ["one part", "two", "three parts here"]
    shared = SharedParts([partial(count_part, text) for text in texts])
    assert shared.work(lambda _: built, Encoding.O200K_BASE) == 3
    assert shared.done.result(0) == sum(count_tokens(built, text) for text in texts)
    assert shared.work(lambda _: built, Encoding.O200K_BASE) == 0  # a late worker finds nothing left

    def broken(encoding: tiktoken.Encoding) -> int:
        raise ValueError("bad part")

    failing = SharedParts([broken, partial(count_part, "x")])
    failing.work(lambda _: built, Encoding.O200K_BASE)
    with pytest.raises(ValueError, match="bad part"):
        failing.done.result(0)


@pytest.mark.parametrize("encoding", list(Encoding))
async def test_large_chats_counted_in_parts_match_one_count(encoding: Encoding) -> None:
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
            await settled(counter)
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
