"""The one exception the client raises, and which of its codes are worth another attempt."""

from __future__ import annotations

from typing import Final

from ctxmeter_client._models import ErrorCode

# A later attempt may succeed: nobody answered (a functions process restarting), or the server said the
# key was too contended right now (conflict) or failed unexpectedly (internal). Every other code is about
# the request itself, and sending the same request again cannot change the answer.
RETRYABLE: Final = frozenset({ErrorCode.CONFLICT.value, ErrorCode.INTERNAL.value, ErrorCode.UNAVAILABLE.value})


class CtxMeterError(Exception):
    """A call that failed: ``code`` is one of :class:`ErrorCode`'s values (a plain ``str``, so a code a
    newer server adds still arrives), ``message`` says why, ``attempts`` is how many requests were sent
    (0 when the client refused the call before sending anything)."""

    def __init__(self, code: str, message: str, *, attempts: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.attempts = attempts

    @property
    def retryable(self) -> bool:
        """True for the codes the client retries by itself (until its deadline)."""
        return self.code in RETRYABLE

    def __repr__(self) -> str:
        return f"CtxMeterError(code={self.code!r}, message={self.message!r}, attempts={self.attempts})"
