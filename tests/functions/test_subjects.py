"""Session-id validation and subject building: nothing invalid ever reaches a subject or a key."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

from functions import catalog, context, tokens
from schemas import subjects
from schemas.subjects import ContextOp, InvalidSessionId, TokensOp, is_session_id, validate_session_id

VALID = ["a", "Z", "0", "_", "-", "abc-DEF_123", "s-" + "f" * 126, "x" * 128]
INVALID: list[object] = [
    "",
    "a.b",
    ".",
    "a.",
    "*",
    ">",
    "a*",
    "a>",
    "a b",
    " ",
    "a\tb",
    "a\nb",
    "x" * 129,
    "é",
    "café",
    "日本",
    "a/b",
    "a:b",
    "a\x00b",
    "a$b",
    None,
    42,
    b"abc",
]


@pytest.mark.parametrize("candidate", VALID)
def test_valid_session_ids(candidate: str) -> None:
    assert is_session_id(candidate)
    assert validate_session_id(candidate) == candidate
    assert subjects.context(ContextOp.ADD, candidate) == f"ctxmeter.context.add.{candidate}"
    assert subjects.tokens_draft(candidate) == f"ctxmeter.tokens.draft.{candidate}"
    assert subjects.events(candidate) == f"ctxmeter.events.{candidate}"
    assert subjects.context_key(candidate) == f"context.{candidate}"
    assert subjects.tokens_key(candidate) == f"tokens.{candidate}"
    assert subjects.session_from_subject(f"ctxmeter.context.get.{candidate}") == candidate


@pytest.mark.parametrize("candidate", INVALID, ids=repr)
def test_invalid_session_ids_never_become_subjects(candidate: object) -> None:
    assert not is_session_id(candidate)
    with pytest.raises(InvalidSessionId):
        validate_session_id(candidate)
    if isinstance(candidate, str):
        builders: list[Callable[[str], str]] = [
            lambda sid: subjects.context(ContextOp.SET, sid),
            subjects.tokens_draft,
            subjects.events,
            subjects.context_key,
            subjects.tokens_key,
        ]
        for build in builders:
            with pytest.raises(InvalidSessionId):
                build(candidate)


def test_session_from_subject_takes_the_last_token_only() -> None:
    with pytest.raises(InvalidSessionId):
        subjects.session_from_subject("ctxmeter.context.get.")
    assert subjects.session_from_subject("ctxmeter.context.get.a.b") == "b"


def test_fixed_subjects() -> None:
    assert subjects.tokens_count() == "ctxmeter.tokens.count"
    assert subjects.endpoint_subject(ContextOp.GET) == "get.*"
    assert subjects.endpoint_subject(TokensOp.COUNT) == "count"
    assert subjects.operation_label("ctxmeter.context.add.abc") == "context.add"
    assert subjects.operation_label(subjects.tokens_count()) == "tokens.count"
    assert subjects.QUEUE_GROUP == "ctxmeter"
    assert subjects.SERVICE_NAME == "ctxmeter"


@pytest.mark.parametrize("module", [tokens, context, catalog], ids=lambda module: module.__name__)
def test_each_operation_module_names_its_subjects_literally(module: ModuleType) -> None:
    # Subjects are only built in schemas/subjects.py, so grep finds an operation through its module's docstring.
    doc = module.__doc__ or ""
    for operation in module.OPERATIONS:
        built = subjects.request(operation.op, "SID") if operation.per_session else subjects.request(operation.op)
        pattern = built.removesuffix(".SID") + (".<sid>" if operation.per_session else "")
        assert f"``{pattern}``" in doc, f"{module.__name__}'s docstring does not name {pattern}"
