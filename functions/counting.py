"""Token counts of texts and chat messages, without stalling the event loop on large inputs."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from functions.encodings import get_encoding
from functions.errors import PayloadTooLarge
from functions.registry import Tokenizer
from schemas.models import ChatMessage, Encoding

# Below this many characters encoding takes well under a millisecond: run it inline, since a thread
# hop costs more than it saves. Above it, tiktoken (which releases the GIL) runs in a worker thread so
# small requests keep flowing and both cores work.
OFFLOAD_MIN_CHARS: Final = 16 * 1024

# Tokens OpenAI adds to prime the assistant's reply (cookbook: "every reply is primed with
# <|start|>assistant<|message|>").
REPLY_PRIMING_TOKENS: Final = 3

UTF8_MAX_BYTES_PER_CHAR: Final = 4


def count_text_now(text: str, encoding: Encoding) -> int:
    """Count in this thread. Special-token text such as ``<|endoftext|>`` is counted as plain text."""
    return len(get_encoding(encoding).encode_ordinary(text))


def count_messages_now(messages: Sequence[ChatMessage], tokenizer: Tokenizer) -> int:
    """OpenAI's documented chat framing: per message, per name, and the reply priming."""
    encoding = get_encoding(tokenizer.encoding)
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += tokenizer.tokens_per_message
        total += len(encoding.encode_ordinary(message.role))
        total += len(encoding.encode_ordinary(message.content_text()))
        if message.name is not None:
            total += len(encoding.encode_ordinary(message.name)) + tokenizer.tokens_per_name
    return total


def check_text_size(texts: Sequence[str], limit: int) -> None:
    total = sum(len(text) for text in texts)
    if total * UTF8_MAX_BYTES_PER_CHAR <= limit:
        return
    size = sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)
    if size > limit:
        raise PayloadTooLarge(f"text is {size} bytes; the limit is {limit} bytes")


class TokenCounter:
    """Counts inline when cheap, else in a thread pool sized to the machine's cores."""

    def __init__(self, workers: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2, thread_name_prefix="ctxmeter-count")

    def start_workers(self) -> None:
        """Start every worker thread now (each builds its encodings), not on the first large count."""
        workers = self._pool._max_workers
        all_started = threading.Barrier(workers)
        for future in [self._pool.submit(all_started.wait) for _ in range(workers)]:
            future.result()

    async def count_text(self, text: str, encoding: Encoding) -> int:
        if len(text) < OFFLOAD_MIN_CHARS:
            return count_text_now(text, encoding)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, count_text_now, text, encoding)

    async def count_messages(self, messages: Sequence[ChatMessage], tokenizer: Tokenizer) -> int:
        size = sum(len(message.content_text()) for message in messages)
        if size < OFFLOAD_MIN_CHARS:
            return count_messages_now(messages, tokenizer)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, count_messages_now, messages, tokenizer)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
