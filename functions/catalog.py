"""``ctxmeter.models``: the models the functions know, with their encodings, windows and reply limits."""

from __future__ import annotations

from functions.operation import Call, Deps, Operation
from schemas.models import EmptyRequest, ModelsReply
from schemas.subjects import CatalogOp


async def models(call: Call[EmptyRequest], deps: Deps) -> ModelsReply:
    return ModelsReply(models=deps.models.models())


OPERATIONS = (Operation(CatalogOp.MODELS, EmptyRequest, models, "The known models: encoding, window, max output."),)
