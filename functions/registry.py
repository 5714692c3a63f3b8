"""Which tokenizer, context window and reply limit each model has: data, not code.

The registry is ``functions/data/models.toml`` (each figure with the provider page it came from);
``CTXMETER_MODELS_FILE`` adds models or replaces entries without a release. OpenAI models use tiktoken's
own encoding for them, so their counts are exact; Claude and Gemini use tokenizers that are not public
and are counted with the nearest tiktoken encoding (``exact: false``; a provider's usage report is the
truth for those).
"""

from __future__ import annotations

import importlib.resources
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions.errors import UnknownModel
from schemas.excerpt import excerpt
from schemas.limits import MODEL_NAME_CHARS
from schemas.models import Encoding, ModelInfo

# Provider prefixes as routers spell them (``openai/gpt-4o``); dropped before lookup.
PROVIDER_PREFIXES: Final = ("openai/", "anthropic/", "google/", "models/")
DEFAULT_ENCODING: Final = Encoding.O200K_BASE
PACKAGED: Final = "models.toml"


class ModelsFileError(ValueError):
    """A models file that cannot be read or does not hold valid entries; the message says where."""


class ModelSpec(BaseModel):
    """One entry of a models file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=MODEL_NAME_CHARS)
    aliases: tuple[str, ...] = ()
    encoding: Encoding
    context_window: int = Field(ge=1)
    max_output: int | None = Field(default=None, ge=1)
    exact: bool
    # True when the model keeps its reasoning (thinking) in context for the next turns, so a usage report
    # counts it in ``used``; OpenAI and Gemini models, and Claude models before Opus 4.5, drop it.
    keeps_reasoning: bool = False
    # OpenAI's per-message overhead (cookbook "How to count tokens with tiktoken").
    tokens_per_message: int = 3
    tokens_per_name: int = 1

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            aliases=list(self.aliases),
            encoding=self.encoding,
            context_window=self.context_window,
            max_output=self.max_output,
            exact=self.exact,
        )


class _ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: list[ModelSpec] = Field(default_factory=list)


def _parse(text: str, where: str) -> list[ModelSpec]:
    try:
        return _ModelsFile.model_validate(tomllib.loads(text)).model
    except tomllib.TOMLDecodeError as error:
        raise ModelsFileError(f"{where}: not valid TOML: {error}") from None
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        location = ".".join(str(part) for part in first["loc"])
        raise ModelsFileError(f"{where}: {location}: {first['msg']} ({error.error_count()} problem(s))") from None


def _key(name: str) -> str:
    key = name.strip().lower()
    for prefix in PROVIDER_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


@dataclass(frozen=True)
class Tokenizer:
    """What a count is made with and how to report it."""

    model: str | None
    encoding: Encoding
    exact: bool
    context_window: int | None
    tokens_per_message: int = 3
    tokens_per_name: int = 1


class ModelRegistry:
    def __init__(self, specs: list[ModelSpec]) -> None:
        by_name: dict[str, ModelSpec] = {}
        for spec in specs:
            by_name[_key(spec.name)] = spec  # a later entry replaces an earlier one of the same name
        self._specs = by_name
        self._aliases = {_key(alias): spec for spec in by_name.values() for alias in spec.aliases}
        # Longest first, so ``gpt-4o-mini-2024-07-18`` finds ``gpt-4o-mini`` before ``gpt-4o``.
        self._prefixes = sorted({**self._aliases, **self._specs}.items(), key=lambda item: len(item[0]), reverse=True)

    @classmethod
    def load(cls, extra: Path | None = None) -> ModelRegistry:
        """The packaged registry, with the entries of ``extra`` (``CTXMETER_MODELS_FILE``) added or replacing."""
        specs = list(packaged_specs())
        if extra is not None:
            try:
                text = extra.read_text(encoding="utf-8")
            except OSError as error:
                raise ModelsFileError(f"{extra}: {error.strerror or error}") from None
            specs += _parse(text, str(extra))
        return cls(specs)

    def models(self) -> list[ModelInfo]:
        return [spec.info() for spec in self._specs.values()]

    def find(self, name: str) -> ModelSpec | None:
        """The spec of ``name``: exact, alias, or a dated/suffixed variant (``gpt-4o-2024-08-06``)."""
        key = _key(name)
        if spec := self._specs.get(key) or self._aliases.get(key):
            return spec
        for known, spec in self._prefixes:
            if key.startswith(known + "-"):
                return spec
        return None

    def require(self, name: str) -> ModelSpec:
        spec = self.find(name)
        if spec is None:
            raise UnknownModel(
                f'unknown model {excerpt(name)}: give a known model or an "encoding" (o200k_base, cl100k_base)'
            )
        return spec

    def resolve(self, model: str | None, encoding: Encoding | None) -> Tokenizer:
        """Pick the tokenizer for a request; an unknown model is an error unless an encoding is given."""
        if model is None:
            # Counting with a named encoding (or the default one) is exact for that encoding.
            return Tokenizer(model=None, encoding=encoding or DEFAULT_ENCODING, exact=True, context_window=None)
        spec = self.find(model)
        if spec is None:
            if encoding is None:
                self.require(model)
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


@cache
def packaged_specs() -> tuple[ModelSpec, ...]:
    text = (importlib.resources.files("functions") / "data" / PACKAGED).read_text(encoding="utf-8")
    return tuple(_parse(text, PACKAGED))


@cache
def default_registry() -> ModelRegistry:
    """The packaged registry alone."""
    return ModelRegistry(list(packaged_specs()))
