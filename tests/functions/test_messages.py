"""Chat-message counts against OpenAI's cookbook "How to count tokens with tiktoken" (section 6).

The cookbook sends ``example_messages`` to the API and prints the ``prompt_tokens`` it reports: 129 for
gpt-3.5-turbo, gpt-4-0613 and gpt-4; 124 for gpt-4o and gpt-4o-mini; and, in the notebook's earlier
revision, 127 for gpt-3.5-turbo-0301 (4 tokens per message, -1 per name).
"""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client as NATS

from functions.counting import REPLY_PRIMING_TOKENS, count_messages_now, count_text_now
from functions.registry import default_registry
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ChatMessage, Encoding, TokenCount
from tests.functions.helpers import call, ok

EXAMPLE_MESSAGES: list[dict[str, Any]] = [
    {
        "role": "system",
        "content": (
            "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."
        ),
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": (
            "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."
        ),
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]

COOKBOOK_PROMPT_TOKENS: list[tuple[str, int]] = [
    ("gpt-3.5-turbo", 129),
    ("gpt-3.5-turbo-0125", 129),
    ("gpt-4", 129),
    ("gpt-4-0613", 129),
    ("gpt-4-0314", 129),
    ("gpt-4o", 124),
    ("gpt-4o-2024-08-06", 124),
    ("gpt-4o-mini", 124),
    ("gpt-4o-mini-2024-07-18", 124),
    ("gpt-3.5-turbo-0301", 127),
]


def _messages() -> list[ChatMessage]:
    return [ChatMessage.model_validate(message) for message in EXAMPLE_MESSAGES]


@pytest.mark.parametrize(("model", "expected"), COOKBOOK_PROMPT_TOKENS)
def test_cookbook_example_in_process(model: str, expected: int) -> None:
    assert count_messages_now(_messages(), default_registry().resolve(model, None)) == expected


@pytest.mark.parametrize(("model", "expected"), COOKBOOK_PROMPT_TOKENS)
async def test_cookbook_example_over_nats(nc: NATS, functions: FunctionsRuntime, model: str, expected: int) -> None:
    reply = ok(await call(nc, subjects.tokens_count(), {"messages": EXAMPLE_MESSAGES, "model": model}), TokenCount)
    assert reply.count == expected
    assert reply.model == model
    assert reply.exact is True
    assert reply.encoding == (Encoding.O200K_BASE if model.startswith("gpt-4o") else Encoding.CL100K_BASE)


def test_message_framing_rules() -> None:
    """3 per message, 1 per name, 3 priming the reply; text-part lists count like their joined text."""
    tokenizer = default_registry().resolve("gpt-4o", None)
    o200k = Encoding.O200K_BASE
    assert count_messages_now([], tokenizer) == REPLY_PRIMING_TOKENS
    plain = ChatMessage(role="user", content="hello world")
    assert count_messages_now([plain], tokenizer) == 3 + 3 + count_text_now("user", o200k) + 2
    named = ChatMessage(role="user", content="hello world", name="bob")
    assert count_messages_now([named], tokenizer) == count_messages_now([plain], tokenizer) + 1 + count_text_now(
        "bob", o200k
    )
    parts = ChatMessage.model_validate(
        {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": " world"}]}
    )
    assert count_messages_now([parts], tokenizer) == count_messages_now([plain], tokenizer)
    empty = ChatMessage(role="assistant", content=None)
    assert count_messages_now([empty], tokenizer) == 3 + 3 + count_text_now("assistant", o200k)


async def test_messages_with_encoding_only(nc: NATS, functions: FunctionsRuntime) -> None:
    reply = ok(
        await call(nc, subjects.tokens_count(), {"messages": EXAMPLE_MESSAGES, "encoding": "cl100k_base"}),
        TokenCount,
    )
    assert (reply.count, reply.model, reply.encoding, reply.exact) == (129, None, Encoding.CL100K_BASE, True)
