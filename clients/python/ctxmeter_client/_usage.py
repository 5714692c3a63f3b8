"""Turn a provider's response or usage object into the body of ``ctxmeter.context.usage.<sid>``.

The SDKs are never imported (an agent runtime has one of them, not all three): objects are read by duck
typing. OpenAI, Anthropic and google-genai types are pydantic models (``model_dump()``); ``to_dict()``
and ``__dict__`` cover other SDKs and hand-made objects. The server decides which provider's usage it
is by its fields, so the client only has to find the usage and send its fields as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, Final

from ctxmeter_client._errors import CtxMeterError
from ctxmeter_client._models import ErrorCode

# Where a response keeps its usage: OpenAI and Anthropic ``usage``, Gemini ``usage_metadata`` (its REST
# JSON spells it ``usageMetadata``). An object with none of these is taken to be the usage itself.
USAGE_FIELDS: Final = ("usage", "usage_metadata", "usageMetadata")
# Where a response names its model: OpenAI and Anthropic ``model``, Gemini ``model_version``.
MODEL_FIELDS: Final = ("model", "model_version", "modelVersion")
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


def usage_body(usage_or_response: object, model: str | None) -> dict[str, Any]:
    """The request body for a provider's response or usage object (or a dict of either)."""
    container: object = None
    usage: object = usage_or_response
    for name in USAGE_FIELDS:
        found = _field(usage_or_response, name)
        if found is _MISSING:
            continue
        if found is None:
            # A response without usage (a streamed chunk before the last, a request made without
            # usage reporting): sending the response itself would be rejected with a vaguer message.
            raise CtxMeterError(
                ErrorCode.INVALID_REQUEST.value,
                f"this {type(usage_or_response).__name__} has no usage ({name} is None); report the response "
                "that carries it (for OpenAI streams: stream_options={'include_usage': True})",
            )
        container, usage = usage_or_response, found
        break
    fields = plain(usage)
    if not isinstance(fields, dict) or not fields:
        raise CtxMeterError(
            ErrorCode.INVALID_REQUEST.value,
            f"cannot read a usage object from a {type(usage_or_response).__name__}: give an OpenAI, Anthropic or "
            "Gemini response, its usage, or a dict of either",
        )
    body: dict[str, Any] = {"usage": fields}
    named = model if model is not None else response_model(container)
    if named:
        body["model"] = named
    return body


def response_model(container: object) -> str | None:
    """The model a response names (OpenAI and Anthropic ``model``, Gemini ``model_version``), if any."""
    if container is None:
        return None
    for field in MODEL_FIELDS:
        found = _field(container, field)
        if isinstance(found, str) and found:
            return found
    return None


def messages_body(messages: Sequence[object]) -> list[Any]:
    """Chat messages as dicts (SDK message objects included); None fields dropped."""
    return [plain(message) for message in messages]
