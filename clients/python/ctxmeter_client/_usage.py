"""Turn what an agent runtime has in hand into the body of ``ctxmeter.context.usage.<sid>``.

That is a provider's response (OpenAI, Anthropic, Gemini, LiteLLM), a framework's (LangChain ``AIMessage``,
pydantic-ai ``ModelResponse``), a stream event that carries usage (OpenAI Responses ``response.completed``,
Anthropic ``message_start`` and ``message_delta``), an agent run's result (its last response is reported),
or a usage object. The SDKs are never imported: objects are read by duck typing (pydantic models'
``model_dump()``, ``to_dict()``, dataclasses' ``__dict__``). The server decides which provider's usage it is
by its fields, and refuses a run's total, so the client only has to find the usage and send it as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, Final

from ctxmeter_client._errors import CtxMeterError
from ctxmeter_client._models import ErrorCode

# Where a response keeps its usage: OpenAI, Anthropic, LiteLLM and pydantic-ai ``usage``, Gemini and
# LangChain ``usage_metadata`` (Gemini's REST JSON spells it ``usageMetadata``). An object with none of
# these is taken to be the usage itself.
USAGE_FIELDS: Final = ("usage", "usage_metadata", "usageMetadata")
# Where a response names its model: OpenAI and Anthropic ``model``, Gemini ``model_version``, pydantic-ai
# ``model_name`` (LangChain's is in ``response_metadata``).
MODEL_FIELDS: Final = ("model", "model_version", "modelVersion", "model_name")
# Provider usage objects nest two or three levels (``prompt_tokens_details.cached_tokens``, Gemini's
# per-modality lists); anything deeper is not usage, and the bound stops a cyclic ``__dict__``.
MAX_DEPTH: Final = 8

_MISSING: Final = object()


def _field(container: object, name: str) -> object:
    if isinstance(container, Mapping):
        return container.get(name, _MISSING)
    return getattr(container, name, _MISSING)


def plain(value: object, depth: int = 0) -> Any:
    """``value`` as JSON-ready data: SDK objects become dicts, enums their values, None values are
    dropped from mappings (SDK dumps carry null for every count a response did not have)."""
    if isinstance(value, Enum):
        # Before the scalars: a str- or int-valued enum is a str or int, but plain data has no enums.
        value = value.value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth >= MAX_DEPTH:
        return None
    if isinstance(value, Mapping):
        return {
            str(key): converted
            for key, item in value.items()
            if item is not None and (converted := plain(item, depth + 1)) is not None
        }
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [plain(item, depth + 1) for item in value]
    for method in ("model_dump", "to_dict"):
        dump = getattr(value, method, None)
        if callable(dump):
            dumped = dump()
            if isinstance(dumped, Mapping):
                return plain(dumped, depth + 1)
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, Mapping):
        # Private attributes are an object's internals, not its data.
        return plain({key: item for key, item in attributes.items() if not str(key).startswith("_")}, depth + 1)
    # Not data we know how to send (bytes, a datetime...): the server would ignore it anyway.
    return None


def type_name(value: object) -> str:
    """``value``'s type as a developer knows it (``anthropic.types.Message``, ``dict``)."""
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module.split('.')[0]}.{kind.__qualname__}"


def _model_name(value: object) -> str | None:
    """A model's name, given as a string or as a model object that names it (``OpenAIResponsesModel.model``)."""
    if isinstance(value, str):
        return value or None
    named = _field(value, "model")
    return named if isinstance(named, str) and named else None


def _last_response(value: object) -> tuple[object, str | None] | None:
    """The last model response of an agent run's result (which also carries the run's total usage), and the
    model the run's agent names when the response does not."""
    # OpenAI Agents SDK RunResult: raw_responses, one ModelResponse per model request (they name no model).
    responses = _field(value, "raw_responses")
    if isinstance(responses, Sequence) and not isinstance(responses, str) and responses:
        last: object = responses[-1]
        return last, _model_name(_field(_field(value, "last_agent"), "model"))
    # pydantic-ai AgentRunResult: response is the last ModelResponse; usage is the run's total.
    if callable(getattr(value, "all_messages", None)):
        response = _field(value, "response")
        if response is not _MISSING and response is not None:
            return response, None
    return None


def _unwrap(value: object) -> tuple[object, bool, str | None]:
    """The response a stream event or an agent run's result stands for, whether it continues the response
    reported before (Anthropic's message_delta), and a model named beside it."""
    kind = _field(value, "type")
    if kind == "message_start":
        return _field(value, "message"), False, None
    if kind == "message_delta":
        return value, True, None
    # OpenAI Responses stream events (response.completed, response.incomplete...) carry the response.
    if isinstance(kind, str) and kind.startswith("response."):
        response = _field(value, "response")
        if response is not _MISSING and response is not None:
            return response, False, None
    last = _last_response(value)
    return (value, False, None) if last is None else (last[0], False, last[1])


def _thinking_unreported(container: object, fields: dict[str, Any]) -> bool:
    """True for an Anthropic message that thought, ended its turn, and whose usage does not say how much of
    its output was thinking: ``used`` then holds thinking the next turn will not (an upper bound)."""
    content = _field(container, "content")
    if not isinstance(content, Sequence) or isinstance(content, str):
        return False
    thought = any(_field(block, "type") in ("thinking", "redacted_thinking") for block in content)
    if not thought or _field(container, "stop_reason") == "tool_use":
        # In a tool loop the thinking goes back with the tool result: it stays in context.
        return False
    details = fields.get("output_tokens_details")
    return not (isinstance(details, dict) and isinstance(details.get("thinking_tokens"), int))


def usage_body(usage_or_response: object, model: str | None) -> dict[str, Any]:
    """The request body for a provider's response, stream event, agent run result or usage (or a dict of any)."""
    source, continues, beside = _unwrap(usage_or_response)
    container: object = None
    usage: object = source
    for name in USAGE_FIELDS:
        found = _field(source, name)
        if found is _MISSING:
            continue
        if found is None:
            # A response without usage (a streamed chunk before the last, a request made without
            # usage reporting): sending the response itself would be rejected with a vaguer message.
            raise CtxMeterError(
                ErrorCode.INVALID_REQUEST.value,
                f"this {type_name(source)} has no usage ({name} is None); report the response or event that "
                "carries it (the last chunk of a stream; OpenAI Chat Completions streams need "
                "stream_options={'include_usage': True})",
            )
        container, usage = source, found
        break
    fields = plain(usage)
    if not isinstance(fields, dict) or not fields:
        raise CtxMeterError(
            ErrorCode.INVALID_REQUEST.value,
            f"cannot read a usage object from a {type_name(usage_or_response)}: give a model response (OpenAI, "
            "Anthropic, Gemini, LiteLLM, LangChain AIMessage, pydantic-ai or Agents SDK), a stream event that "
            "carries usage, its usage, or a dict of any of them",
        )
    body: dict[str, Any] = {"usage": fields}
    named = model if model is not None else response_model(container) or beside
    if named:
        body["model"] = named
    if continues:
        body["continues"] = True
    if container is not None and _thinking_unreported(container, fields):
        body["estimated"] = True
    return body


def response_model(container: object) -> str | None:
    """The model a response names: OpenAI and Anthropic ``model``, Gemini ``model_version``, pydantic-ai
    ``model_name``, LangChain ``response_metadata["model_name"]`` (or ``["model"]``)."""
    if container is None:
        return None
    for field in MODEL_FIELDS:
        found = _field(container, field)
        if isinstance(found, str) and found:
            return found
    metadata = _field(container, "response_metadata")
    if isinstance(metadata, Mapping):
        for field in ("model_name", "model"):
            found = metadata.get(field)
            if isinstance(found, str) and found:
                return found
    return None


def messages_body(messages: Sequence[object]) -> list[Any]:
    """Chat messages as dicts (SDK message objects included); None fields dropped."""
    return [plain(message) for message in messages]
