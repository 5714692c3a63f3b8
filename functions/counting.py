"""Token counts of texts and chat messages, without stalling the event loop on large inputs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Final

import tiktoken

from ctxmeter.limits import BUILD_WEIGHT, OFFLOAD_MIN_CHARS, OFFLOAD_MIN_MESSAGES, SPLIT_MIN_CHARS, SPLIT_PARTS
from functions.encodings import (
    built_or_shared,
    count_tokens,
    counting_encoding,
    get_encoding,
    is_built,
    preload,
    take_deferred,
    use_own_encodings,
)
from functions.errors import PayloadTooLarge
from functions.registry import Tokenizer
from functions.splitting import cut_points
from schemas.models import ChatMessage, Encoding

# Tokens OpenAI adds to prime the assistant's reply (cookbook: "every reply is primed with
# <|start|>assistant<|message|>").
REPLY_PRIMING_TOKENS: Final = 3

UTF8_MAX_BYTES_PER_CHAR: Final = 4


def count_text_now(text: str, encoding: Encoding) -> int:
    """Count in this thread. Special-token text such as ``<|endoftext|>`` is counted as plain text."""
    return count_tokens(counting_encoding(encoding), text)


def count_messages_now(messages: Sequence[ChatMessage], tokenizer: Tokenizer) -> int:
    """OpenAI's documented chat framing: per message, per name, and the reply priming."""
    return REPLY_PRIMING_TOKENS + message_tokens(messages, tokenizer, counting_encoding(tokenizer.encoding))


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


def message_groups(sizes: Sequence[int], parts: int) -> list[int]:
    """Where to cut a chat of messages of ``sizes`` characters into about ``parts`` groups of similar size,
    only between messages: the groups' bounds (message indexes), ``0`` first and ``len(sizes)`` last. A
    message larger than a group's share is a group of its own."""
    total = sum(sizes)
    bounds = [0]
    before = 0
    for index, size in enumerate(sizes[:-1], start=1):
        before += size
        if before * parts >= total * len(bounds):
            bounds.append(index)
    bounds.append(len(sizes))
    return bounds


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


def _count_slice(text: str, start: int, end: int, built: tiktoken.Encoding) -> int:
    return count_tokens(built, text[start:end])


def _message_group(messages: Sequence[ChatMessage], tokenizer: Tokenizer, built: tiktoken.Encoding) -> int:
    return message_tokens(messages, tokenizer, built)


class SharedParts:
    """The parts of one count, taken one at a time by the workers that call ``work``; ``done`` holds the
    sum once every part is counted (or the first error), whether or not every worker has started yet."""

    def __init__(self, parts: Sequence[Callable[[tiktoken.Encoding], int]]) -> None:
        self._parts = parts
        self._next = 0
        self._left = len(parts)
        self._total = 0
        self._lock = threading.Lock()
        self.done: Future[int] = Future()

    def work(self, use: Callable[[Encoding], tiktoken.Encoding], encoding: Encoding) -> int:
        """Count parts with ``use(encoding)`` until none is left; how many this thread counted."""
        counted = 0
        try:
            built = use(encoding)
        except BaseException as error:
            self._fail(error)
            return counted
        while True:
            with self._lock:
                index = self._next
                if index >= len(self._parts) or self.done.done():
                    return counted
                self._next += 1
            try:
                tokens = self._parts[index](built)
            except BaseException as error:  # the caller's error (``Untokenizable``): no other part matters now
                self._fail(error)
                return counted
            counted += 1
            with self._lock:
                self._total += tokens
                self._left -= 1
                if self._left == 0:
                    self.done.set_result(self._total)

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if not self.done.done():
                self.done.set_exception(error)


def _build(encodings: tuple[Encoding, ...]) -> int:
    preload(*encodings)
    return len(encodings)


def _first_worker() -> None:
    """The first worker builds the shared encodings (o200k_base now, cl100k_base when first used), so it
    is their owner and counts at full speed; the event loop thread shares them for small texts."""
    preload(Encoding.O200K_BASE)


def _other_worker(copy_now: bool) -> None:
    """Another worker builds its own encodings: o200k_base now with ``copy_now``, else once idle after it
    first counted on the shared one (``functions.encodings.counting_encoding``)."""
    use_own_encodings()
    if copy_now:
        preload(Encoding.O200K_BASE)


class TokenCounter:
    """Counts inline when cheap, else on one of a few worker threads (one per core by default).

    Each worker is a single thread. Work goes to the least busy worker, the lowest-numbered on a tie:
    requests one at a time keep landing on the same thread, whose rank tables are hot in the CPU cache
    (alternating threads made a 100 KB count about 15 % slower), while concurrent requests still spread
    over every core. The first worker owns the shared encodings (``functions.encodings``); the others
    count on them too at first (~1.2x slower: tiktoken's regex is fastest in its owner thread), and build
    their own copies once every worker is idle, so a first burst of concurrent counts waits for no build.
    A small text is counted inline only with an encoding already built, so the first use of an
    encoding builds it on the least busy worker: the first one, its owner, unless that one is busy.

    A large text that arrives while every worker is idle is cut into parts (``functions.splitting``), and a
    large chat into groups of messages, that the first two workers count at once, each taking the next
    part left: the owner on its shared encoding, the second worker on its own if it has one, else on the
    shared one (no copy is built for it). Whichever gets less CPU counts fewer parts.
    """

    def __init__(self, workers: int | None = None, *, copies_at_start: bool = False) -> None:
        """``copies_at_start``: every worker but the first builds its own o200k_base when started (see
        ``Settings.count_copies_at_start``)."""
        self._workers = [
            ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"ctxmeter-count-{index}",
                initializer=_first_worker if index == 0 else partial(_other_worker, copies_at_start),
            )
            for index in range(workers or os.cpu_count() or 2)
        ]
        # Jobs submitted to each worker and not finished; touched on the event loop's thread only.
        self._queued = [0] * len(self._workers)
        # Counts cut into parts and counted on two workers at once, so far.
        self.splits = 0
        # Copies of encodings built by the other workers once idle (deferred from a burst), so far.
        self.deferred_builds = 0

    def start_workers(self) -> None:
        """Start every worker now (the first builds the shared o200k_base, the others their copies if told
        to), not on the first large count."""
        for future in [worker.submit(int) for worker in self._workers]:
            future.result()

    async def _offload(self, job: Callable[[], int]) -> int:
        index = min(range(len(self._workers)), key=self._queued.__getitem__)
        return await self._submit(index, job)

    def _submit(self, index: int, job: Callable[[], int], weight: int = 1) -> asyncio.Future[int]:
        """``job`` on worker ``index``, counted as ``weight`` jobs queued there from now until the thread has
        finished it (a caller that stops waiting does not stop the thread)."""
        loop = asyncio.get_running_loop()
        self._queued[index] += weight

        def finished(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody counts any more
                loop.call_soon_threadsafe(self._finished, index, weight)

        running = self._workers[index].submit(job)
        running.add_done_callback(finished)
        return asyncio.wrap_future(running)

    def _finished(self, index: int, weight: int) -> None:
        self._queued[index] -= weight
        if not any(self._queued):
            deferred = take_deferred()
            if deferred:
                # The workers that counted on the shared set build their own now, between bursts.
                self.deferred_builds += 1
                for other in range(1, len(self._workers)):
                    self._submit(other, partial(_build, deferred), BUILD_WEIGHT)

    async def _split(self, parts: Sequence[Callable[[tiktoken.Encoding], int]], encoding: Encoding) -> int:
        """``parts`` counted by both workers at once, each taking the next part left until none is: the owner
        of the shared encodings on worker 0, the second worker with its own encoding if it has built one,
        else the shared one. Both are marked busy before this yields, so requests that arrived with this
        one are not split too."""
        self.splits += 1
        shared = SharedParts(parts)
        for index, use in ((0, get_encoding), (1, built_or_shared)):
            self._submit(index, partial(shared.work, use, encoding))
        return await asyncio.wrap_future(shared.done)

    async def count_text(self, text: str, encoding: Encoding) -> int:
        if len(text) < OFFLOAD_MIN_CHARS and is_built(encoding):
            return count_text_now(text, encoding)
        if len(text) >= SPLIT_MIN_CHARS and self._both_idle() and is_built(encoding):
            bounds = cut_points(text, SPLIT_PARTS)
            if len(bounds) > 2:
                parts = [partial(_count_slice, text, start, end) for start, end in itertools.pairwise(bounds)]
                return await self._split(parts, encoding)
        return await self._offload(partial(count_text_now, text, encoding))

    async def count_messages(self, messages: Sequence[ChatMessage], tokenizer: Tokenizer) -> int:
        sizes = [sum(map(len, counted_strings(message))) for message in messages]
        size = sum(sizes)
        if size < OFFLOAD_MIN_CHARS and len(messages) < OFFLOAD_MIN_MESSAGES and is_built(tokenizer.encoding):
            return count_messages_now(messages, tokenizer)
        if size >= SPLIT_MIN_CHARS and self._both_idle() and is_built(tokenizer.encoding):
            bounds = message_groups(sizes, SPLIT_PARTS)
            if len(bounds) > 2:
                groups = [
                    partial(_message_group, messages[start:end], tokenizer) for start, end in itertools.pairwise(bounds)
                ]
                return REPLY_PRIMING_TOKENS + await self._split(groups, tokenizer.encoding)
        return await self._offload(partial(count_messages_now, messages, tokenizer))

    def _both_idle(self) -> bool:
        return len(self._workers) > 1 and self.idle

    @property
    def idle(self) -> bool:
        """No job on any worker. The second worker's share of a split may end just after the count's answer
        (it found no part left), so a count right after a split can find it busy, and is not split."""
        return not any(self._queued)

    def close(self) -> None:
        for worker in self._workers:
            worker.shutdown(wait=True, cancel_futures=False)
