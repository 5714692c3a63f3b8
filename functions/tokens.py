"""``ctxmeter.tokens.count`` and ``ctxmeter.tokens.draft.<sid>``: exact tiktoken counts."""

from __future__ import annotations

from functions.counting import check_text_size
from functions.operation import Deps, Operation
from functions.registry import resolve
from functions.views import DraftState, utc_now
from schemas import subjects
from schemas.models import DraftRequest, TokenCount, TokenCountRequest, TokenUsage
from schemas.subjects import TokensOp


async def count(session_id: None, request: TokenCountRequest, deps: Deps) -> TokenCount:
    tokenizer = resolve(request.model, request.encoding)
    limit = deps.store.settings.max_text_bytes
    if request.messages is not None:
        check_text_size([message.content_text() for message in request.messages], limit)
        tokens = await deps.counter.count_messages(request.messages, tokenizer)
    else:
        assert request.text is not None
        check_text_size([request.text], limit)
        tokens = await deps.counter.count_text(request.text, tokenizer.encoding)
    return TokenCount(count=tokens, model=tokenizer.model, encoding=tokenizer.encoding, exact=tokenizer.exact)


async def draft(session_id: str, request: DraftRequest, deps: Deps) -> TokenUsage:
    """Count the message being typed, store it as the session's draft and publish it."""
    settings = deps.store.settings
    tokenizer = resolve(request.model, None)
    check_text_size([request.text], settings.max_text_bytes)
    tokens = await deps.counter.count_text(request.text, tokenizer.encoding)
    state = DraftState(
        count=tokens,
        max=request.max or tokenizer.context_window or settings.draft_default_max,
        model=tokenizer.model,
        encoding=tokenizer.encoding,
        exact=tokenizer.exact,
        updated_at=utc_now(),
    )
    return await deps.store.put_draft(session_id, state)


OPERATIONS = (
    Operation(
        group=subjects.TOKENS_GROUP,
        name=TokensOp.COUNT.value,
        request_model=TokenCountRequest,
        handler=count,
        per_session=False,
        changes_state=False,
        description="Count a text or chat messages for a model or encoding.",
    ),
    Operation(
        group=subjects.TOKENS_GROUP,
        name=TokensOp.DRAFT.value,
        request_model=DraftRequest,
        handler=draft,
        per_session=True,
        changes_state=True,
        description="Count a session's draft message, store and publish it.",
    ),
)
