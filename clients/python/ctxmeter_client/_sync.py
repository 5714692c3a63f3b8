"""The same calls for synchronous code: the asyncio client on an event loop in a background thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

from ctxmeter_client._client import DEFAULT_SERVERS, CtxMeter, RetryPolicy
from ctxmeter_client._errors import CtxMeterError
from ctxmeter_client._models import ContextHistory, ContextUsage, ErrorCode, ModelsReply, TokenCount, TokenUsage

T = TypeVar("T")


class CtxMeterSync:
    """ctxmeter over NATS for synchronous code; safe to share between threads.

    ``CtxMeterSync(servers, **nats_options)`` connects at once (callbacks in ``nats_options`` must be
    coroutine functions: they run on the client's loop). Calls block until their reply or the retry
    deadline. :meth:`close` (or leaving a ``with`` block) closes the connection and stops the thread.
    """

    def __init__(
        self, servers: str | list[str] = DEFAULT_SERVERS, *, retry: RetryPolicy | None = None, **nats_options: Any
    ) -> None:
        self._loop = asyncio.new_event_loop()
        # Held while a call is handed to the loop and while closing, so no call is scheduled on a loop
        # that has already stopped (its caller would wait forever).
        self._lock = threading.Lock()
        self._closed = False
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="ctxmeter-client", daemon=True)
        self._thread.start()

        async def open_meter() -> CtxMeter:
            return await CtxMeter.connect(servers, retry=retry, **nats_options)

        try:
            self._meter = self._run(open_meter())
        except BaseException:
            self._stop()
            raise

    @classmethod
    def connect(
        cls, servers: str | list[str] = DEFAULT_SERVERS, *, retry: RetryPolicy | None = None, **nats_options: Any
    ) -> CtxMeterSync:
        """The same as ``CtxMeterSync(servers, **nats_options)``, named like :meth:`CtxMeter.connect`."""
        return cls(servers, retry=retry, **nats_options)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            # Calls still running when the client closed end as cancelled (their callers are told).
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            call.close()
            # The loop would wait for itself.
            raise RuntimeError("CtxMeterSync cannot be called from its own event loop (use CtxMeter there)")
        with self._lock:
            if self._closed:
                call.close()
                raise CtxMeterError(ErrorCode.UNAVAILABLE.value, "the client is closed")
            future = asyncio.run_coroutine_threadsafe(call, self._loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise CtxMeterError(ErrorCode.UNAVAILABLE.value, "the client was closed during the call") from None
        except BaseException:
            # KeyboardInterrupt and the like: do not leave the call running behind the caller's back.
            future.cancel()
            raise

    def _stop(self) -> None:
        with self._lock:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def close(self) -> None:
        """Close the connection and stop the background thread; later calls raise ``unavailable``."""
        with self._lock:
            if self._closing or self._closed:
                return
            self._closing = True
        try:
            self._run(self._meter.close())
        finally:
            self._stop()

    def __enter__(self) -> CtxMeterSync:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def meter(self) -> CtxMeter:
        """The asyncio client underneath (for use on its own loop only)."""
        return self._meter

    # -- the calls of CtxMeter, each blocking until its reply ----------------------------

    def get(self, session_id: str) -> ContextUsage:
        return self._run(self._meter.get(session_id))

    def set(
        self,
        session_id: str,
        used: int,
        total: int | None = None,
        model: str | None = None,
        reserved: int | None = None,
        compact_at: int | None = None,
        estimated: bool = False,
        *,
        idempotency_key: str | None = None,
    ) -> ContextUsage:
        return self._run(
            self._meter.set(
                session_id,
                used,
                total=total,
                model=model,
                reserved=reserved,
                compact_at=compact_at,
                estimated=estimated,
                idempotency_key=idempotency_key,
            )
        )

    def add(self, session_id: str, tokens: int, *, idempotency_key: str | None = None) -> ContextUsage:
        return self._run(self._meter.add(session_id, tokens, idempotency_key=idempotency_key))

    def free(self, session_id: str, tokens: int, *, idempotency_key: str | None = None) -> ContextUsage:
        return self._run(self._meter.free(session_id, tokens, idempotency_key=idempotency_key))

    def reset(self, session_id: str, *, idempotency_key: str | None = None) -> ContextUsage:
        return self._run(self._meter.reset(session_id, idempotency_key=idempotency_key))

    def compact(self, session_id: str, used: int, *, idempotency_key: str | None = None) -> ContextUsage:
        return self._run(self._meter.compact(session_id, used, idempotency_key=idempotency_key))

    def report(
        self,
        session_id: str,
        usage_or_response: object,
        model: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> ContextUsage:
        return self._run(self._meter.report(session_id, usage_or_response, model, idempotency_key=idempotency_key))

    def history(self, session_id: str, limit: int | None = None) -> ContextHistory:
        return self._run(self._meter.history(session_id, limit))

    def count(
        self, text_or_messages: str | Sequence[object], model: str | None = None, encoding: str | None = None
    ) -> TokenCount:
        return self._run(self._meter.count(text_or_messages, model, encoding))

    def draft(
        self,
        session_id: str,
        text: str,
        model: str | None = None,
        max: int | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> TokenUsage:
        return self._run(self._meter.draft(session_id, text, model, max, idempotency_key=idempotency_key))

    def models(self) -> ModelsReply:
        return self._run(self._meter.models())
