"""``ctxmeter.tokens.count`` and ``ctxmeter.tokens.draft.<sid>``: exact tiktoken counts."""

from __future__ import annotations

from functions.counting import check_text_size, message_strings
from functions.operation import Answer, Call, Deps, Operation
from schemas.models import DraftRequest, TokenCount, TokenCountRequest
from schemas.state import DraftState, utc_now
from schemas.subjects import TokensOp


async def count(call: Call[TokenCountRequest], deps: Deps) -> TokenCount:
    request = call.body
    tokenizer = deps.models.resolve(request.model, request.encoding)
    limit = deps.store.settings.max_text_bytes
    if request.messages is not None:
        # Every string counts against the limit (a role or name is counted too), not just the content.
        check_text_size(message_strings(request.messages), limit)
        tokens = await deps.counter.count_messages(request.messages, tokenizer)
    else:
        assert request.text is not None
        check_text_size([request.text], limit)
        tokens = await deps.counter.count_text(request.text, tokenizer.encoding)
    return TokenCount(count=tokens, model=tokenizer.model, encoding=tokenizer.encoding, exact=tokenizer.exact)


async def draft(call: Call[DraftRequest], deps: Deps) -> Answer:
    """Count the message being typed, store it as the session's draft and publish it."""
    request = call.body
    settings = deps.store.settings
    tokenizer = deps.models.resolve(request.model, None)
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
    usage, duplicate = await deps.store.put_draft(call.session_id, state, call.key)
    return Answer(usage, duplicate=duplicate)


OPERATIONS = (
    Operation(TokensOp.COUNT, TokenCountRequest, count, "Count a text or chat messages for a model or encoding."),
    Operation(TokensOp.DRAFT, DraftRequest, draft, "Count a session's draft message, store and publish it."),
)
