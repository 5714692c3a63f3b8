"""Provider usage objects: which provider's (or framework's) usage a report is, and what of it stays in context.

One rule for every provider: a usage report sets ``used`` to what the next request of the conversation
carries of this one, that is the whole input and the output, less the reasoning (thinking) tokens the
provider drops from the next turn (OpenAI: reasoning tokens are discarded after each turn; Gemini:
thoughts are not part of the next turn's input; Anthropic: earlier thinking blocks are stripped, except by
the models that keep them). Every shape reads into the same four numbers (:class:`Counts`) and
``functions.context`` applies the rule with the model's ``keeps_reasoning``; docs/integrations.md cites the
providers' pages.

Shapes are told apart by their fields. Sums over several requests (an agent run's total) look like usage
but are not one response's context; they are refused with what to report instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Discriminator, Tag
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from schemas.counts import TokenTotal
from schemas.excerpt import excerpt
from schemas.limits import LISTED_FIELDS, MAX_TOKENS


@dataclass(frozen=True, slots=True)
class Counts:
    """What a usage report says, in the one vocabulary the rule needs."""

    # The prompt, cached tokens included; None for the rest of a response whose start was reported before
    # (Anthropic's message_delta of older API versions carries output counts only).
    input: int | None
    # What the model wrote, its reasoning included when ``reasoning_in_output``.
    output: int
    # Reasoning (thinking) tokens of this response; None when the provider does not count them apart.
    reasoning: int | None
    # Every provider counts reasoning inside the output, except Gemini (``thoughts_token_count`` is beside it).
    reasoning_in_output: bool = True

    def context(self, input_tokens: int, keeps_reasoning: bool) -> int:
        """The tokens the next request carries: the input and the output, with the reasoning only when the
        model keeps it in context."""
        reasoning = self.reasoning or 0
        if self.reasoning_in_output:
            kept = self.output if keeps_reasoning else self.output - min(reasoning, self.output)
        else:
            kept = self.output + (reasoning if keeps_reasoning else 0)
        return min(MAX_TOKENS, input_tokens + kept)


class _Part(BaseModel):
    # Providers add fields over time (``prompt_tokens_details``, ``server_tool_use``...): ignored.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class ProviderUsage(_Part):
    def counts(self) -> Counts:
        raise NotImplementedError


def _first(*values: int | None) -> int | None:
    return next((value for value in values if value is not None), None)


# -- OpenAI Chat Completions, and LiteLLM (whatever the provider behind it) ---------------------------


class CompletionTokensDetails(_Part):
    reasoning_tokens: TokenTotal | None = None


class OpenAIUsage(ProviderUsage):
    """OpenAI Chat Completions ``usage``: cached tokens are inside ``prompt_tokens``, reasoning inside
    ``completion_tokens``. LiteLLM's usage has this shape for every provider, and for Anthropic adds
    ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` beside ``prompt_tokens``, which already
    holds them."""

    prompt_tokens: TokenTotal
    completion_tokens: TokenTotal | None = 0
    completion_tokens_details: CompletionTokensDetails | None = None

    def counts(self) -> Counts:
        details = self.completion_tokens_details
        return Counts(self.prompt_tokens, self.completion_tokens or 0, details.reasoning_tokens if details else None)


# -- input_tokens / output_tokens: Anthropic, OpenAI Responses, LangChain, pydantic-ai, Agents SDK ------


class OutputTokensDetails(_Part):
    # OpenAI Responses (and the Agents SDK, which uses its types).
    reasoning_tokens: TokenTotal | None = None
    # Anthropic.
    thinking_tokens: TokenTotal | None = None


class LangChainOutputDetails(_Part):
    reasoning: TokenTotal | None = None


class InputOutputUsage(ProviderUsage):
    """``input_tokens``/``output_tokens``, as several APIs and frameworks count them:

    - Anthropic: cache writes and reads are beside ``input_tokens`` (added to it); thinking is inside
      ``output_tokens`` (``output_tokens_details.thinking_tokens`` where the API reports it). A
      ``message_delta`` event of older API versions carries ``output_tokens`` alone;
    - OpenAI Responses and the OpenAI Agents SDK: cached tokens inside ``input_tokens``, reasoning inside
      ``output_tokens`` (``output_tokens_details.reasoning_tokens``);
    - LangChain's ``usage_metadata``: cache inside ``input_tokens`` (``input_token_details``), reasoning inside
      ``output_tokens`` (``output_token_details.reasoning``);
    - pydantic-ai's ``RequestUsage``: cache inside ``input_tokens`` (``cache_read_tokens``,
      ``cache_write_tokens``), reasoning inside ``output_tokens`` (``output_reasoning_tokens``, formerly
      ``details["reasoning_tokens"]``).
    """

    input_tokens: TokenTotal | None = None
    output_tokens: TokenTotal | None = 0
    cache_creation_input_tokens: TokenTotal | None = 0
    cache_read_input_tokens: TokenTotal | None = 0
    output_tokens_details: OutputTokensDetails | None = None
    output_token_details: LangChainOutputDetails | None = None
    output_reasoning_tokens: TokenTotal | None = None
    details: dict[str, Any] | None = None

    def counts(self) -> Counts:
        given = self.input_tokens
        prompt = (
            None
            if given is None
            else given + (self.cache_creation_input_tokens or 0) + (self.cache_read_input_tokens or 0)
        )
        details = self.output_tokens_details
        legacy = (self.details or {}).get("reasoning_tokens")
        reasoning = _first(
            details.reasoning_tokens if details else None,
            details.thinking_tokens if details else None,
            self.output_token_details.reasoning if self.output_token_details else None,
            # pydantic-ai always states it (0 when the provider said nothing): the others come first.
            self.output_reasoning_tokens or None,
            legacy if isinstance(legacy, int) and not isinstance(legacy, bool) and 0 <= legacy <= MAX_TOKENS else None,
            self.output_reasoning_tokens,
        )
        return Counts(prompt, self.output_tokens or 0, reasoning)


# -- Gemini ----------------------------------------------------------------------------------------


class GeminiUsage(ProviderUsage):
    """Gemini ``usage_metadata`` (snake or camel case): cached content is inside the prompt count, tool-use
    prompts beside it; thoughts are beside the candidates (``thoughts_token_count``)."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True)

    prompt_token_count: TokenTotal
    # SDK objects dumped to dicts carry null for counts a response did not have.
    candidates_token_count: TokenTotal | None = 0
    tool_use_prompt_token_count: TokenTotal | None = 0
    thoughts_token_count: TokenTotal | None = None

    def counts(self) -> Counts:
        return Counts(
            self.prompt_token_count + (self.tool_use_prompt_token_count or 0),
            self.candidates_token_count or 0,
            self.thoughts_token_count,
            reasoning_in_output=False,
        )


# -- Vercel AI SDK ------------------------------------------------------------------------------------


class VercelOutputDetails(_Part):
    # Field names as the SDK's JSON has them (camel case), here and in the two models below.
    reasoningTokens: TokenTotal | None = None


class VercelUsage(ProviderUsage):
    """The Vercel AI SDK's ``LanguageModelUsage`` (AI SDK 5 and later): ``inputTokens`` with cached tokens
    inside (AI SDK 6 counts them so for every provider), ``outputTokens`` with reasoning inside
    (``outputTokenDetails.reasoningTokens``, AI SDK 5 ``reasoningTokens``)."""

    inputTokens: TokenTotal | None = None
    outputTokens: TokenTotal | None = None
    reasoningTokens: TokenTotal | None = None
    outputTokenDetails: VercelOutputDetails | None = None

    def counts(self) -> Counts:
        details = self.outputTokenDetails
        reasoning = _first(details.reasoningTokens if details else None, self.reasoningTokens)
        return Counts(self.inputTokens or 0, self.outputTokens or 0, reasoning)


class VercelV4Usage(ProviderUsage):
    """The Vercel AI SDK 4's usage: ``promptTokens``, ``completionTokens``."""

    promptTokens: TokenTotal
    completionTokens: TokenTotal | None = 0

    def counts(self) -> Counts:
        return Counts(self.promptTokens, self.completionTokens or 0, None)


# -- telling the shapes apart -----------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    model: type[ProviderUsage]
    # Who reports it, for messages.
    names: str
    # Fields only this shape has: one of them tells it.
    telling: frozenset[str]
    # Every field it reads, for the nearest shape to a wrong one.
    fields: frozenset[str]


def _fields(model: type[BaseModel]) -> frozenset[str]:
    names = set(model.model_fields)
    if model is GeminiUsage:
        names |= {to_camel(name) for name in names}
    return frozenset(names)


SHAPES: Final[dict[str, Shape]] = {
    "openai": Shape(
        OpenAIUsage,
        "OpenAI Chat Completions or LiteLLM (prompt_tokens, completion_tokens)",
        frozenset({"prompt_tokens", "completion_tokens"}),
        _fields(OpenAIUsage),
    ),
    "input_output": Shape(
        InputOutputUsage,
        "Anthropic, OpenAI Responses, OpenAI Agents SDK, LangChain or pydantic-ai "
        "(input_tokens, output_tokens, Anthropic's cache_creation_input_tokens and cache_read_input_tokens)",
        frozenset({"input_tokens", "output_tokens"}),
        _fields(InputOutputUsage),
    ),
    "gemini": Shape(
        GeminiUsage,
        "Gemini (prompt_token_count, candidates_token_count, or promptTokenCount, candidatesTokenCount)",
        frozenset(
            {
                "prompt_token_count",
                "candidates_token_count",
                "tool_use_prompt_token_count",
                "promptTokenCount",
                "candidatesTokenCount",
                "toolUsePromptTokenCount",
            }
        ),
        _fields(GeminiUsage),
    ),
    "vercel": Shape(
        VercelUsage,
        "Vercel AI SDK 5 or later (inputTokens, outputTokens)",
        frozenset({"inputTokens", "outputTokens"}),
        _fields(VercelUsage),
    ),
    "vercel_v4": Shape(
        VercelV4Usage,
        "Vercel AI SDK 4 (promptTokens, completionTokens)",
        frozenset({"promptTokens", "completionTokens"}),
        _fields(VercelV4Usage),
    ),
}

ACCEPTED: Final = "; ".join(shape.names for shape in SHAPES.values())

RUN_TOTAL_HELP: Final = (
    "report the last response's usage instead (OpenAI Agents SDK: result.raw_responses[-1].usage, "
    "pydantic-ai: result.response, Vercel AI SDK: result.usage or the last step's usage), or the response itself"
)


def usage_shape(value: object) -> str | None:
    """Which shape ``value`` is, by its fields; None when it is none of them (or several)."""
    if isinstance(value, ProviderUsage):
        return next((name for name, shape in SHAPES.items() if shape.model is type(value)), None)
    if not isinstance(value, dict):
        return None
    shapes = [name for name, shape in SHAPES.items() if shape.telling & value.keys()]
    return shapes[0] if len(shapes) == 1 else None


def _names(keys: list[str]) -> str:
    shown = ", ".join(excerpt(key)[1:-1] for key in keys[:LISTED_FIELDS])
    more = f" and {len(keys) - LISTED_FIELDS} more" if len(keys) > LISTED_FIELDS else ""
    return (shown + more) or "none"


def _run_total(value: dict[str, Any]) -> str | None:
    """Why ``value`` is a sum over an agent run's requests, or None when it is one response's usage."""
    requests = value.get("requests")
    if isinstance(requests, int) and not isinstance(requests, bool) and requests > 1:
        return f"counts {requests} requests"
    if "tool_calls" in value and "requests" in value:
        return "is pydantic-ai's RunUsage (result.usage()), a run's total"
    entries = value.get("request_usage_entries")
    if isinstance(entries, list) and entries:
        return f"is the OpenAI Agents SDK's run total (context_wrapper.usage, {len(entries)} request(s))"
    return None


def check_usage(value: object) -> None:
    """Raise a complete, structured error for a usage that is no accepted shape or an agent run's total.

    The messages are ctxmeter's own words, never cut; what they quote of the input (field names) is excerpted.
    """
    if isinstance(value, ProviderUsage):
        return
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
            type(value), "null" if value is None else "a value"
        )
        raise PydanticCustomError(
            "usage_shape",
            "must be one provider's usage object, not {kind}. Accepted: {accepted}",
            {"kind": kind, "accepted": ACCEPTED},
        )
    reason = _run_total(value)
    if reason is not None:
        raise PydanticCustomError(
            "usage_run_total",
            "{reason}: a sum over several model requests is not the context's size; {help}",
            {"reason": reason, "help": RUN_TOTAL_HELP},
        )
    if usage_shape(value) is not None:
        return
    keys = [str(key) for key in value]
    matching = [shape for shape in SHAPES.values() if shape.telling & value.keys()]
    if len(matching) > 1:
        raise PydanticCustomError(
            "usage_shape",
            "must be one provider's usage object, not a mix: its fields ({received}) belong to {shapes}",
            {"received": _names(keys), "shapes": " and to ".join(shape.names for shape in matching)},
        )
    nearest = max(SHAPES.values(), key=lambda shape: len(shape.fields & value.keys()))
    hint = f" The nearest is {nearest.names}." if nearest.fields & value.keys() else ""
    raise PydanticCustomError(
        "usage_shape",
        "must be one provider's usage object; received the fields {received}.{hint} Accepted: {accepted}",
        {"received": _names(keys), "hint": hint, "accepted": ACCEPTED},
    )


AnyUsage = Annotated[
    Annotated[OpenAIUsage, Tag("openai")]
    | Annotated[InputOutputUsage, Tag("input_output")]
    | Annotated[GeminiUsage, Tag("gemini")]
    | Annotated[VercelUsage, Tag("vercel")]
    | Annotated[VercelV4Usage, Tag("vercel_v4")],
    Discriminator(
        usage_shape,
        custom_error_type="usage_shape",
        custom_error_message=f"must be one provider's usage object. Accepted: {ACCEPTED}",
    ),
]

# Problem types whose message is ctxmeter's own text (quoting only excerpts): sent whole, never cut.
OWN_ERRORS: Final = frozenset({"usage_shape", "usage_run_total"})
