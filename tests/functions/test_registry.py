"""The model registry: every family in the issue, dated names and aliases, exact flags, unknown models."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from ctxmeter.settings import Settings
from functions.errors import UnknownModel
from functions.registry import ModelRegistry, ModelsFileError, default_registry, packaged_specs
from functions.runner import FunctionsRuntime
from schemas import subjects
from schemas.models import ContextUsage, Encoding, ModelsReply
from schemas.subjects import ContextOp
from tests.functions.helpers import call, ok

REGISTRY = default_registry()
MODELS = packaged_specs()

O200K = Encoding.O200K_BASE
CL100K = Encoding.CL100K_BASE

# name asked for -> (registry entry, encoding, exact)
FAMILIES: list[tuple[str, str, Encoding, bool]] = [
    ("gpt-5", "gpt-5", O200K, True),
    ("gpt-4.1", "gpt-4.1", O200K, True),
    ("gpt-4o", "gpt-4o", O200K, True),
    ("gpt-4o-mini", "gpt-4o-mini", O200K, True),
    ("o1", "o1", O200K, True),
    ("o3", "o3", O200K, True),
    ("o4-mini", "o4-mini", O200K, True),
    ("gpt-4", "gpt-4", CL100K, True),
    ("gpt-3.5-turbo", "gpt-3.5-turbo", CL100K, True),
    ("claude-3-5-sonnet", "claude-3-5-sonnet", CL100K, False),
    ("claude-3.5-sonnet", "claude-3-5-sonnet", CL100K, False),
    ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet", CL100K, False),
    ("claude-3-5-haiku-20241022", "claude-3-5-haiku", CL100K, False),
    ("claude-3-opus-20240229", "claude-3-opus", CL100K, False),
    ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet", CL100K, False),
    ("claude-3.7-sonnet", "claude-3-7-sonnet", CL100K, False),
    ("claude-sonnet-4-20250514", "claude-sonnet-4", CL100K, False),
    ("claude-opus-4-20250514", "claude-opus-4", CL100K, False),
    ("claude-opus-4-1-20250805", "claude-opus-4-1", CL100K, False),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", CL100K, False),
    ("claude-sonnet-4.5", "claude-sonnet-4-5", CL100K, False),
    ("claude-haiku-4-5-20251001", "claude-haiku-4-5", CL100K, False),
    ("claude-opus-4-5", "claude-opus-4-5", CL100K, False),
    ("gemini-2.5-pro", "gemini-2.5-pro", O200K, False),
    ("gemini-2.5-flash", "gemini-2.5-flash", O200K, False),
    ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite", O200K, False),
]

DATED: list[tuple[str, str]] = [
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-2024-05-13", "gpt-4o"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("gpt-4.1-2025-04-14", "gpt-4.1"),
    ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
    ("gpt-5-2025-08-07", "gpt-5"),
    ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
    ("o1-2024-12-17", "o1"),
    ("o3-2025-04-16", "o3"),
    ("o3-mini-2025-01-31", "o3-mini"),
    ("o4-mini-2025-04-16", "o4-mini"),
    ("gpt-4-0613", "gpt-4"),
    ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
    ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
    ("gpt-3.5-turbo-0301", "gpt-3.5-turbo-0301"),
    ("openai/gpt-4o", "gpt-4o"),
    ("anthropic/claude-sonnet-4", "claude-sonnet-4"),
    ("google/gemini-2.5-pro", "gemini-2.5-pro"),
    ("models/gemini-2.5-flash", "gemini-2.5-flash"),
    ("GPT-4o", "gpt-4o"),
    ("chatgpt-4o-latest", "gpt-4o"),
]

UNKNOWN = ["llama-3-70b", "gpt", "gpt-4x", "gpt-4omni", "claude", "o", "o5", "gemini-1.0-pro", "mistral-large"]


@pytest.mark.parametrize(("name", "entry", "encoding", "exact"), FAMILIES)
def test_every_family_resolves(name: str, entry: str, encoding: Encoding, exact: bool) -> None:
    spec = REGISTRY.find(name)
    assert spec is not None
    assert (spec.name, spec.encoding, spec.exact) == (entry, encoding, exact)
    assert spec.context_window >= 8_192
    tokenizer = REGISTRY.resolve(name, None)
    assert (tokenizer.model, tokenizer.encoding, tokenizer.exact) == (name, encoding, exact)
    assert tokenizer.context_window == spec.context_window


@pytest.mark.parametrize(("name", "entry"), DATED)
def test_dated_and_prefixed_names(name: str, entry: str) -> None:
    spec = REGISTRY.find(name)
    assert spec is not None
    assert spec.name == entry


def test_context_windows_of_well_known_models() -> None:
    windows = {spec.name: spec.context_window for spec in MODELS}
    assert windows["gpt-4o"] == 128_000
    assert windows["gpt-4"] == 8_192
    assert windows["gpt-4.1"] == 1_047_576
    assert windows["claude-sonnet-4"] == 200_000
    assert windows["gemini-2.5-pro"] == 1_048_576


@pytest.mark.parametrize("name", UNKNOWN)
def test_unknown_model_is_an_error_unless_an_encoding_is_given(name: str) -> None:
    assert REGISTRY.find(name) is None
    with pytest.raises(UnknownModel) as raised:
        REGISTRY.resolve(name, None)
    assert raised.value.code == "unknown_model"
    assert raised.value.status == 404
    with pytest.raises(UnknownModel):
        REGISTRY.require(name)
    tokenizer = REGISTRY.resolve(name, CL100K)
    assert (tokenizer.model, tokenizer.encoding, tokenizer.exact, tokenizer.context_window) == (
        name,
        CL100K,
        False,
        None,
    )


def test_exact_only_with_the_models_own_encoding() -> None:
    assert REGISTRY.resolve("gpt-4o", O200K).exact is True
    assert REGISTRY.resolve("gpt-4o", CL100K).exact is False
    assert REGISTRY.resolve("gpt-4o", CL100K).encoding == CL100K
    assert REGISTRY.resolve("claude-sonnet-4", CL100K).exact is False
    no_model = REGISTRY.resolve(None, CL100K)
    assert (no_model.model, no_model.encoding, no_model.exact) == (None, CL100K, True)
    default = REGISTRY.resolve(None, None)
    assert (default.encoding, default.exact, default.context_window) == (O200K, True, None)


def test_registry_names_are_unique_and_lowercase() -> None:
    names = [spec.name for spec in MODELS]
    assert len(names) == len(set(names))
    assert all(name == name.lower() for name in names)


# -- the registry as data ----------------------------------------------------------------------


def test_every_packaged_model_has_a_window_and_a_published_reply_limit() -> None:
    for spec in MODELS:
        assert spec.context_window >= 4_096, spec.name
        # Every entry but the one OpenAI never published a reply limit for.
        assert spec.max_output is not None or spec.name == "gpt-4-32k", spec.name
        assert spec.max_output is None or spec.max_output <= spec.context_window, spec.name


def test_long_context_variants_resolve() -> None:
    for name, window in [("claude-sonnet-4-5[1m]", 1_000_000), ("claude-sonnet-4-5-1m", 1_000_000)]:
        spec = REGISTRY.find(name)
        assert spec is not None and spec.context_window == window, name
    dated = REGISTRY.find("claude-sonnet-4-5-20250929")
    assert dated is not None and dated.context_window == 200_000


def test_a_models_file_adds_and_replaces(tmp_path: Path) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text(
        """
[[model]]
name = "acme-llm"
aliases = ["acme"]
encoding = "cl100k_base"
context_window = 50_000
max_output = 4_000
exact = false

[[model]]
name = "gpt-4o"
encoding = "o200k_base"
context_window = 64_000
exact = true
""",
        encoding="utf-8",
    )
    registry = ModelRegistry.load(extra)
    acme = registry.find("acme-2025-01-01")
    assert acme is not None and (acme.name, acme.context_window) == ("acme-llm", 50_000)
    gpt = registry.find("gpt-4o-2024-08-06")
    assert gpt is not None and (gpt.context_window, gpt.max_output) == (64_000, None)
    # Everything else is as packaged.
    assert len(registry.models()) == len(MODELS) + 1


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[[model]]\nname = 'x'\n", "encoding"),
        ("[[model]]\nname='x'\nencoding='o200k_base'\ncontext_window=0\nexact=true\n", "context_window"),
        ("[[model]]\nname='x'\nencoding='nope'\ncontext_window=5\nexact=true\n", "encoding"),
        ("not toml [", "not valid TOML"),
        ("[[models]]\nname='x'\n", "models"),
    ],
)
def test_a_bad_models_file_is_a_clear_error(tmp_path: Path, text: str, complaint: str) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text(text, encoding="utf-8")
    with pytest.raises(ModelsFileError) as raised:
        ModelRegistry.load(extra)
    assert str(extra) in str(raised.value) and complaint in str(raised.value)
    with pytest.raises(ModelsFileError, match="No such file"):
        ModelRegistry.load(tmp_path / "missing.toml")


async def test_the_models_endpoint_lists_the_registry_with_the_override(
    nc: NATS, kv: KeyValue, settings: Settings, tmp_path: Path
) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text(
        "[[model]]\nname='acme-llm'\nencoding='cl100k_base'\ncontext_window=50000\nexact=false\n", encoding="utf-8"
    )
    runtime = FunctionsRuntime(settings.model_copy(update={"models_file": extra}))
    await runtime.start()
    try:
        reply = ok(await call(nc, subjects.models()), ModelsReply)
        by_name = {model.name: model for model in reply.models}
        assert by_name["acme-llm"].context_window == 50_000
        assert by_name["gpt-5"].max_output == 128_000
        assert by_name["gpt-4o"].aliases == ["chatgpt-4o-latest"]
        assert len(by_name) == len(MODELS) + 1
        # The override counts too: its window sets a session's total.
        usage = ok(
            await call(nc, subjects.context(ContextOp.SET, "acme"), {"used": 10, "model": "acme-llm"}), ContextUsage
        )
        assert usage.total == 50_000
    finally:
        await runtime.stop()


# Every name the providers' model lists give (snapshots and previews included), with the window the
# provider's page states for it: each resolves to its own window, never to a shorter name's.
DOCUMENTED_WINDOWS: list[tuple[str, int]] = [
    # https://platform.openai.com/docs/models
    ("gpt-4", 8_192),
    ("gpt-4-0613", 8_192),
    ("gpt-4-0314", 8_192),
    ("gpt-4-32k", 32_768),
    ("gpt-4-32k-0613", 32_768),
    ("gpt-4-turbo", 128_000),
    ("gpt-4-turbo-2024-04-09", 128_000),
    ("gpt-4-turbo-preview", 128_000),
    ("gpt-4-0125-preview", 128_000),
    ("gpt-4-1106-preview", 128_000),
    ("gpt-4-vision-preview", 128_000),
    ("gpt-4-1106-vision-preview", 128_000),
    ("gpt-3.5-turbo", 16_385),
    ("gpt-3.5-turbo-0125", 16_385),
    ("gpt-3.5-turbo-1106", 16_385),
    ("gpt-3.5-turbo-16k", 16_385),
    ("gpt-3.5-turbo-0613", 4_096),
    ("gpt-3.5-turbo-0301", 4_096),
    ("gpt-3.5-turbo-instruct", 4_096),
    ("gpt-4o", 128_000),
    ("gpt-4o-2024-11-20", 128_000),
    ("chatgpt-4o-latest", 128_000),
    ("gpt-4o-mini-2024-07-18", 128_000),
    ("gpt-4.5-preview", 128_000),
    ("gpt-4.5-preview-2025-02-27", 128_000),
    ("gpt-4.1-nano-2025-04-14", 1_047_576),
    ("o1-preview", 128_000),
    ("o1-preview-2024-09-12", 128_000),
    ("o1-mini-2024-09-12", 128_000),
    ("o1-2024-12-17", 200_000),
    ("o3-mini-2025-01-31", 200_000),
    ("o3-2025-04-16", 200_000),
    ("gpt-5-2025-08-07", 400_000),
    ("gpt-5-chat-latest", 128_000),
    # https://docs.anthropic.com/en/docs/about-claude/models/overview
    ("claude-3-sonnet-20240229", 200_000),
    ("claude-3-haiku-20240307", 200_000),
    ("claude-3-5-sonnet-latest", 200_000),
    ("claude-opus-4-5-20251101", 200_000),
    # https://ai.google.dev/gemini-api/docs/models
    ("gemini-1.5-pro", 2_097_152),
    ("gemini-1.5-pro-002", 2_097_152),
    ("gemini-1.5-flash-002", 1_048_576),
    ("gemini-2.0-flash-001", 1_048_576),
    ("gemini-2.0-flash-lite", 1_048_576),
    ("gemini-2.5-flash-preview-05-20", 1_048_576),
]


@pytest.mark.parametrize(("name", "window"), DOCUMENTED_WINDOWS)
def test_every_documented_name_resolves_to_its_own_window(name: str, window: int) -> None:
    spec = REGISTRY.find(name)
    assert spec is not None, name
    assert spec.context_window == window, (name, spec.name)


def test_only_the_models_documented_to_keep_their_reasoning_keep_it() -> None:
    keeping = sorted(spec.name for spec in MODELS if spec.keeps_reasoning)
    assert keeping == ["claude-opus-4-5"]
