"""Which tokenizer and context window each model has.

OpenAI models use tiktoken's own encoding for them, so their counts are exact. Claude and Gemini use
tokenizers that are not public; they are counted with the nearest tiktoken encoding and reported
``exact: false`` (a provider's usage report is the truth for those).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from functions.errors import UnknownModel
from schemas.models import Encoding

O200K = Encoding.O200K_BASE
CL100K = Encoding.CL100K_BASE

# Provider prefixes as routers spell them (``openai/gpt-4o``); dropped before lookup.
PROVIDER_PREFIXES: Final = ("openai/", "anthropic/", "google/", "models/")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    encoding: Encoding
    context_window: int
    exact: bool
    # OpenAI's per-message overhead (cookbook "How to count tokens with tiktoken").
    tokens_per_message: int = 3
    tokens_per_name: int = 1


def _openai(name: str, encoding: Encoding, window: int) -> ModelSpec:
    return ModelSpec(name, encoding, window, exact=True)


def _estimated(name: str, encoding: Encoding, window: int) -> ModelSpec:
    return ModelSpec(name, encoding, window, exact=False)


MODELS: Final[tuple[ModelSpec, ...]] = (
    _openai("gpt-5", O200K, 400_000),
    _openai("gpt-5-mini", O200K, 400_000),
    _openai("gpt-5-nano", O200K, 400_000),
    _openai("gpt-4.1", O200K, 1_047_576),
    _openai("gpt-4.1-mini", O200K, 1_047_576),
    _openai("gpt-4.1-nano", O200K, 1_047_576),
    _openai("gpt-4o", O200K, 128_000),
    _openai("gpt-4o-mini", O200K, 128_000),
    _openai("o1", O200K, 200_000),
    _openai("o1-mini", O200K, 128_000),
    _openai("o3", O200K, 200_000),
    _openai("o3-mini", O200K, 200_000),
    _openai("o4-mini", O200K, 200_000),
    _openai("gpt-4", CL100K, 8_192),
    _openai("gpt-4-32k", CL100K, 32_768),
    _openai("gpt-4-turbo", CL100K, 128_000),
    _openai("gpt-3.5-turbo", CL100K, 16_385),
    # The cookbook's one exception: the first gpt-3.5-turbo snapshot framed messages differently.
    ModelSpec("gpt-3.5-turbo-0301", CL100K, 4_096, exact=True, tokens_per_message=4, tokens_per_name=-1),
    _estimated("claude-3-5-sonnet", CL100K, 200_000),
    _estimated("claude-3-7-sonnet", CL100K, 200_000),
    _estimated("claude-sonnet-4", CL100K, 200_000),
    _estimated("claude-sonnet-4-5", CL100K, 200_000),
    _estimated("claude-3-opus", CL100K, 200_000),
    _estimated("claude-opus-4", CL100K, 200_000),
    _estimated("claude-opus-4-1", CL100K, 200_000),
    _estimated("claude-opus-4-5", CL100K, 200_000),
    _estimated("claude-3-haiku", CL100K, 200_000),
    _estimated("claude-3-5-haiku", CL100K, 200_000),
    _estimated("claude-haiku-4-5", CL100K, 200_000),
    _estimated("gemini-2.5-pro", O200K, 1_048_576),
    _estimated("gemini-2.5-flash", O200K, 1_048_576),
    _estimated("gemini-2.5-flash-lite", O200K, 1_048_576),
)

# Other spellings people use for the same models.
ALIASES: Final[dict[str, str]] = {
    "chatgpt-4o-latest": "gpt-4o",
    "claude-3.5-sonnet": "claude-3-5-sonnet",
    "claude-3.7-sonnet": "claude-3-7-sonnet",
    "claude-4-sonnet": "claude-sonnet-4",
    "claude-sonnet-4.5": "claude-sonnet-4-5",
    "claude-4.5-sonnet": "claude-sonnet-4-5",
    "claude-4-opus": "claude-opus-4",
    "claude-opus-4.1": "claude-opus-4-1",
    "claude-opus-4.5": "claude-opus-4-5",
    "claude-4.5-opus": "claude-opus-4-5",
    "claude-3.5-haiku": "claude-3-5-haiku",
    "claude-haiku-4.5": "claude-haiku-4-5",
    "claude-4.5-haiku": "claude-haiku-4-5",
}

_BY_NAME: Final = {spec.name: spec for spec in MODELS}
# Longest first, so ``gpt-4o-mini-2024-07-18`` finds ``gpt-4o-mini`` before ``gpt-4o``.
_NAMES_LONGEST_FIRST: Final = sorted(_BY_NAME, key=len, reverse=True)


def find_model(name: str) -> ModelSpec | None:
    """The spec of ``name``: exact, alias, or a dated/suffixed variant (``gpt-4o-2024-08-06``)."""
    key = name.strip().lower()
    for prefix in PROVIDER_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
    for candidate in (key, ALIASES.get(key)):
        if candidate is not None and candidate in _BY_NAME:
            return _BY_NAME[candidate]
    for alias, target in ALIASES.items():
        if key.startswith(alias + "-"):
            return _BY_NAME[target]
    for known in _NAMES_LONGEST_FIRST:
        if key.startswith(known + "-"):
            return _BY_NAME[known]
    return None


def require_model(name: str) -> ModelSpec:
    spec = find_model(name)
    if spec is None:
        raise UnknownModel(f'unknown model {name!r}: give a known model or an "encoding" (o200k_base, cl100k_base)')
    return spec


@dataclass(frozen=True)
class Tokenizer:
    """What a count is made with and how to report it."""

    model: str | None
    encoding: Encoding
    exact: bool
    context_window: int | None
    tokens_per_message: int = 3
    tokens_per_name: int = 1


DEFAULT_ENCODING: Final = O200K


def resolve(model: str | None, encoding: Encoding | None) -> Tokenizer:
    """Pick the tokenizer for a request; an unknown model is an error unless an encoding is given."""
    if model is None:
        # Counting with a named encoding (or the default one) is exact for that encoding.
        return Tokenizer(model=None, encoding=encoding or DEFAULT_ENCODING, exact=True, context_window=None)
    spec = find_model(model)
    if spec is None:
        if encoding is None:
            require_model(model)
        assert encoding is not None
        return Tokenizer(model=model, encoding=encoding, exact=False, context_window=None)
    chosen = encoding or spec.encoding
    return Tokenizer(
        model=model,
        encoding=chosen,
        exact=spec.exact and chosen == spec.encoding,
        context_window=spec.context_window,
        tokens_per_message=spec.tokens_per_message,
        tokens_per_name=spec.tokens_per_name,
    )
