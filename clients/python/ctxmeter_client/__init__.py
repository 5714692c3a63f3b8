"""ctxmeter's Python client: report an agent session's context usage over NATS, one call per model response.

    meter = await CtxMeter.connect("nats://127.0.0.1:4222")
    await meter.report(session_id, response)  # an OpenAI, Anthropic or Gemini response

Every change carries an idempotency key reused on its retries, so a retry never counts twice.
"""

from ctxmeter_client._client import CtxMeter, RetryPolicy
from ctxmeter_client._errors import RETRYABLE, CtxMeterError
from ctxmeter_client._models import (
    ContextHistory,
    ContextLevel,
    ContextUsage,
    Encoding,
    ErrorCode,
    ErrorDetail,
    ErrorReply,
    HistoryOp,
    HistoryPoint,
    ModelInfo,
    ModelsReply,
    TokenCount,
    TokenUsage,
    WindowSource,
)
from ctxmeter_client._sync import CtxMeterSync
from ctxmeter_client._usage import usage_body

__version__ = "0.1.0"

__all__ = [
    "RETRYABLE",
    "ContextHistory",
    "ContextLevel",
    "ContextUsage",
    "CtxMeter",
    "CtxMeterError",
    "CtxMeterSync",
    "Encoding",
    "ErrorCode",
    "ErrorDetail",
    "ErrorReply",
    "HistoryOp",
    "HistoryPoint",
    "ModelInfo",
    "ModelsReply",
    "RetryPolicy",
    "TokenCount",
    "TokenUsage",
    "WindowSource",
    "__version__",
    "usage_body",
]
