"""Token counts of texts and chat messages, without stalling the event loop on large inputs."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Final

import tiktoken

from ctxmeter.limits import OFFLOAD_MIN_CHARS
from functions.encodings import count_tokens, get_encoding, is_built, preload, shared_encoding, use_own_encodings
from functions.errors import PayloadTooLarge
from functions.registry import Tokenizer
from functions.splitting import cut_point
from schemas.models import ChatMessage, Encoding

# Messages counted inline at most: each costs a few microseconds of per-message work (three encoder
# calls) whatever its length, so many small messages are offloaded like one large text.
OFFLOAD_MIN_MESSAGES: Final = 64

# Tokens OpenAI adds to prime the assistant's reply (cookbook: "every reply is primed with
# <|start|>assistant<|message|>").
REPLY_PRIMING_TOKENS: Final = 3

UTF8_MAX_BYTES_PER_CHAR: Final = 4

# A text this long, arriving while every worker is idle, is cut in two and counted on two workers at
# once (``functions.splitting``): a 100 KB count then takes about 0.7 of the time. Shorter texts gain
# less than the second thread's wake-up and tiktoken's slower regex in it.
SPLIT_MIN_CHARS: Final = 32 * 1024
# The owner of the shared encodings takes this share; the helper counts the rest on the same encoding,
# whose regex runs about 1.75 times slower outside its owner thread (``functions.encodings``), so both
# finish at about the same time.
OWNER_SHARE: Final = 0.64
# A chat is cut only between messages; a cut that leaves either part under this share of the
# characters gains less than the hop to the second worker costs.
MIN_PART: Final = 0.25


def count_text_now(text: str, encoding: Encoding) -> int:
    """Count in this thread. Special-token text such as ``<|endoftext|>`` is counted as plain text."""
    return count_tokens(get_encoding(encoding), text)


def count_text_shared(text: str, encoding: Encoding) -> int:
    """Count with the shared encoding, in a thread that does not own it (a helper's share of a split)."""
    return count_tokens(shared_encoding(encoding), text)


def count_messages_now(messages: Sequence[ChatMessage], tokenizer: Tokenizer) -> int:
    """OpenAI's documented chat framing: per message, per name, and the reply priming."""
    return REPLY_PRIMING_TOKENS + message_tokens_owned(messages, tokenizer)


def message_tokens(messages: Sequence[ChatMessage], tokenizer: Tokenizer, encoding: tiktoken.Encoding) -> int:
    """The messages' tokens with their framing, without the reply priming: a sum over messages, so a
    chat's count is the sum of its parts' (plus the priming once)."""
    total = 0
    for message in messages:
        total += tokenizer.tokens_per_message
        total += count_tokens(encoding, message.role)
        total += count_tokens(encoding, message.content_text())
        if message.name is not None:
            total += count_tokens(encoding, message.name) + tokenizer.tokens_per_name
    return total


def message_tokens_owned(messages: Sequence[ChatMessage], tokenizer: Tokenizer) -> int:
    """``message_tokens`` with the calling thread's encoding (the owner's share of a split chat)."""
    return message_tokens(messages, tokenizer, get_encoding(tokenizer.encoding))


def message_tokens_shared(messages: Sequence[ChatMessage], tokenizer: Tokenizer) -> int:
    """``message_tokens`` with the shared encoding (the helper's share of a split chat)."""
    return message_tokens(messages, tokenizer, shared_encoding(tokenizer.encoding))


def message_cut(sizes: Sequence[int], wanted: int) -> int | None:
    """Where to cut a chat of messages of ``sizes`` characters so that about ``wanted`` come first; None
    when any cut leaves either part under ``MIN_PART`` of the whole (one message holds most of it)."""
    total = sum(sizes)
    best: int | None = None
    best_gap = total
    before = 0
    for index, size in enumerate(sizes[:-1], start=1):
        before += size
        gap = abs(before - wanted)
        if gap < best_gap and MIN_PART * total <= before <= (1 - MIN_PART) * total:
            best, best_gap = index, gap
    return best


def counted_strings(message: ChatMessage) -> list[str]:
    """Every string of a message that is counted: role, content and name."""
    strings = [message.role, message.content_text()]
    if message.name is not None:
        strings.append(message.name)
    return strings


def message_strings(messages: Sequence[ChatMessage]) -> list[str]:
    """Every string of the messages that is counted."""
    return [text for message in messages for text in counted_strings(message)]


def check_text_size(texts: Sequence[str], limit: int) -> None:
    total = sum(len(text) for text in texts)
    if total * UTF8_MAX_BYTES_PER_CHAR <= limit:
        return
    size = sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)
    if size > limit:
        raise PayloadTooLarge(f"text is {size} bytes; the limit is {limit} bytes")


def _first_worker() -> None:
    """The first worker builds the shared encodings (o200k_base now, cl100k_base when first used), so it
    is their owner and counts at full speed; the event loop thread shares them for small texts."""
    preload(Encoding.O200K_BASE)


class TokenCounter:
    """Counts inline when cheap, else on one of a few worker threads (one per core by default).

    Each worker is a single thread. Work goes to the least busy worker, the lowest-numbered on a tie:
    requests one at a time keep landing on the same thread, whose rank tables are hot in the CPU cache
    (alternating threads made a 100 KB count about 15 % slower), while concurrent requests still spread
    over every core. The first worker owns the shared encodings (``functions.encodings``); the others
    build their own when they first count, as only they would run tiktoken's regex slower on shared ones.
    A small text is counted inline only with an encoding already built, so the first use of an
    encoding builds it on the least busy worker: the first one, its owner, unless that one is busy.

    A large text that arrives while every worker is idle is cut in two (``functions.splitting``), and a
    large chat between two of its messages: the owner counts most of it and the second worker the rest
    on the same shared encoding, so no second copy is built for it.
    """

    def __init__(self, workers: int | None = None) -> None:
        self._workers = [
            ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"ctxmeter-count-{index}",
                initializer=_first_worker if index == 0 else use_own_encodings,
            )
            for index in range(workers or os.cpu_count() or 2)
        ]
        # Jobs submitted to each worker and not finished; touched on the event loop's thread only.
        self._queued = [0] * len(self._workers)
        # Counts cut in two and counted on two workers at once, so far.
        self.splits = 0

    def start_workers(self) -> None:
        """Start every worker now (the first builds the shared o200k_base), not on the first large count."""
        for future in [worker.submit(int) for worker in self._workers]:
            future.result()

    async def _offload(self, job: Callable[[], int]) -> int:
        index = min(range(len(self._workers)), key=self._queued.__getitem__)
        return await self._submit(index, job)

    def _submit(self, index: int, job: Callable[[], int]) -> asyncio.Future[int]:
        """``job`` on worker ``index``, counted as queued there from now until the thread has finished it
        (a caller that stops waiting does not stop the thread)."""
        loop = asyncio.get_running_loop()
        self._queued[index] += 1

        def finished(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody counts any more
                loop.call_soon_threadsafe(self._finished, index)

        running = self._workers[index].submit(job)
        running.add_done_callback(finished)
        return asyncio.wrap_future(running)

    def _finished(self, index: int) -> None:
        self._queued[index] -= 1

    async def _split(self, owner_job: Callable[[], int], helper_job: Callable[[], int]) -> int:
        """Both parts at once: the owner of the shared encodings on worker 0, the helper on worker 1.
        Both are marked busy before this yields, so requests that arrived with this one are not split too."""
        self.splits += 1
        owner, helper = await asyncio.gather(self._submit(0, owner_job), self._submit(1, helper_job))
        return owner + helper

    async def count_text(self, text: str, encoding: Encoding) -> int:
        if len(text) < OFFLOAD_MIN_CHARS and is_built(encoding):
            return count_text_now(text, encoding)
        if len(text) >= SPLIT_MIN_CHARS and self._both_idle() and is_built(encoding):
            cut = cut_point(text, int(len(text) * OWNER_SHARE))
            if cut is not None:
                return await self._split(
                    partial(count_text_now, text[:cut], encoding), partial(count_text_shared, text[cut:], encoding)
                )
        return await self._offload(partial(count_text_now, text, encoding))

    async def count_messages(self, messages: Sequence[ChatMessage], tokenizer: Tokenizer) -> int:
        sizes = [sum(map(len, counted_strings(message))) for message in messages]
        size = sum(sizes)
        if size < OFFLOAD_MIN_CHARS and len(messages) < OFFLOAD_MIN_MESSAGES and is_built(tokenizer.encoding):
            return count_messages_now(messages, tokenizer)
        if size >= SPLIT_MIN_CHARS and self._both_idle() and is_built(tokenizer.encoding):
            cut = message_cut(sizes, int(size * OWNER_SHARE))
            if cut is not None:
                parts = await self._split(
                    partial(message_tokens_owned, messages[:cut], tokenizer),
                    partial(message_tokens_shared, messages[cut:], tokenizer),
                )
                return REPLY_PRIMING_TOKENS + parts
        return await self._offload(partial(count_messages_now, messages, tokenizer))

    def _both_idle(self) -> bool:
        return len(self._workers) > 1 and not any(self._queued)

    def close(self) -> None:
        for worker in self._workers:
            worker.shutdown(wait=True, cancel_futures=False)
