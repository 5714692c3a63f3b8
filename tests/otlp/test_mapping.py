"""The mapping rules, on the CLIs' captured exports and on records built by hand."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.subjects import ContextOp
from tests.otlp.helpers import (
    WANTED,
    claude_api_request,
    fixture,
    fixture_records,
    log_record,
    span,
    span_record,
    traces,
)
from ws_edge.otlp.decode import BodyEncoding, Record, Signal, parse, records
from ws_edge.otlp.mapping import (
    CLAUDE_UNREAD,
    NO_SESSION,
    NOT_METERED,
    SIDE_REQUEST,
    MeterChange,
    Reason,
    Rejected,
    map_record,
    wanted_attributes,
)

CLAUDE_SESSION = "3f0c7c1e-5b8a-4d7e-9a51-0c2b9e4f6a13"
CLAUDE_JSON_SESSION = "f7fbbb2d-d56c-4ff4-818a-944641ee8ab6"
CODEX_SESSION = "01a241ae-30ef-7f82-9a15-558a189bbce7"
CODEX_JSON_SESSION = "01a241af-65ac-7510-90f4-6c3ed61b1478"


def changes(found: list[Record]) -> list[MeterChange]:
    results = [map_record(record) for record in found]
    assert not [result for result in results if isinstance(result, Rejected)]
    return [result for result in results if isinstance(result, MeterChange)]


# -- captured: Claude Code ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "session"), [("turn.logs.pb", CLAUDE_SESSION), ("turn.logs.json", CLAUDE_JSON_SESSION)]
)
def test_claude_codes_api_request_is_an_anthropic_usage_report(name: str, session: str) -> None:
    records = fixture_records(f"claude-code/{name}")
    assert [record.body for record in records] == [
        "claude_code.user_prompt",
        "claude_code.api_request",
        "claude_code.assistant_response",
    ]
    [change] = changes(records)
    assert change.session_id == session
    assert change.op is ContextOp.USAGE
    assert change.body == {
        "usage": {
            "input_tokens": 12,
            "output_tokens": 40,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 3000,
        },
        "model": "claude-opus-4-8",
    }
    assert change.record.time_ns > 1_700_000_000 * 10**9


@pytest.mark.parametrize("name", ["turn.traces.pb", "turn.traces.json", "turn.metrics.pb", "compact.traces.pb"])
def test_claude_codes_spans_move_no_meter(name: str) -> None:
    """Its ``claude_code.llm_request`` span carries the same counts as the event, without the GenAI operation:
    the event alone reports them."""
    records = fixture_records(f"claude-code/{name}")
    assert all(map_record(record) == NOT_METERED for record in records)


def test_claude_codes_compaction_summary_is_a_side_request_and_its_compaction_event_compacts() -> None:
    records = fixture_records("claude-code/compact.logs.pb")
    results = [map_record(record) for record in records]
    assert SIDE_REQUEST in results  # the api_request of the summary (query_source: compact)
    [change] = [result for result in results if isinstance(result, MeterChange)]
    assert (change.session_id, change.op, change.body) == (CLAUDE_SESSION, ContextOp.COMPACT, {"used": 599})


@pytest.mark.parametrize(
    ("source", "metered"),
    [
        (None, True),
        ("sdk", True),
        ("repl_main_thread", True),
        ("repl_main_thread:outputStyle:custom", True),
        ("compact", False),
        ("agent:custom", False),
        ("generate_session_title", False),
        ("hook_agent", False),
    ],
)
def test_only_the_main_conversations_requests_move_the_meter(source: str | None, metered: bool) -> None:
    attrs = claude_api_request("s1", query_source=source)
    if source is None:
        del attrs["query_source"]
    result = map_record(log_record(attrs, body="claude_code.api_request"))
    assert isinstance(result, MeterChange) is metered
    if not metered:
        assert result == SIDE_REQUEST


def test_a_subagents_request_is_a_side_request_whatever_its_source() -> None:
    attrs = claude_api_request("s1", agent_id="a-1")
    assert map_record(log_record(attrs, body="claude_code.api_request")) == SIDE_REQUEST


def test_a_failed_compaction_moves_nothing() -> None:
    attrs = {"session.id": "s1", "event.name": "compaction", "success": "false", "pre_tokens": "1537"}
    assert map_record(log_record(attrs, body="claude_code.compaction")) == NOT_METERED


def test_an_event_named_in_event_name_counts_as_in_the_body() -> None:
    result = map_record(log_record(claude_api_request("s1"), event="claude_code.api_request"))
    assert isinstance(result, MeterChange) and result.body["usage"]["cache_creation_input_tokens"] == 4_000


def test_another_programs_api_request_event_is_not_claude_codes() -> None:
    assert map_record(log_record(claude_api_request("s1"), event="api_request")) == NOT_METERED


# -- captured: Codex ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "session"), [("exec.logs.pb", CODEX_SESSION), ("exec.logs.json", CODEX_JSON_SESSION)])
def test_codexs_completed_response_is_an_openai_responses_usage_report(name: str, session: str) -> None:
    records = fixture_records(f"codex/{name}")
    completed = [record for record in records if record.attributes.get("event.kind") == "response.completed"]
    assert len(completed) == 2  # Codex logs the completion twice, the counts on one of them
    [change] = changes(records)
    assert (change.session_id, change.op) == (session, ContextOp.USAGE)
    assert change.body == {
        "usage": {
            "input_tokens": 1500,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 120,
            "output_tokens_details": {"reasoning_tokens": 64},
        },
        "model": "gpt-5",
    }


def test_codexs_conversation_start_sets_the_window_where_it_says_it() -> None:
    """Codex 0.171 sends no window; earlier versions' ``conversation_starts`` carried ``context_window`` and
    ``auto_compact_token_limit`` (attributes as those versions documented them)."""
    attrs = {
        "event.name": "codex.conversation_starts",
        "conversation.id": "c1",
        "model": "gpt-5",
        "context_window": 272_000,
        "auto_compact_token_limit": 244_800,
    }
    result = map_record(log_record(attrs))
    assert isinstance(result, MeterChange)
    assert (result.op, result.body) == (
        ContextOp.SET,
        {"used": 0, "total": 272_000, "compact_at": 244_800, "model": "gpt-5"},
    )
    captured = [
        record for record in fixture_records("codex/exec.logs.pb") if record.name == "codex.conversation_starts"
    ]
    assert [map_record(record) for record in captured] == [NOT_METERED]


# -- GenAI spans ----------------------------------------------------------------------------------


def genai(**attrs: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.conversation.id": "conv-1",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1_000,
        "gen_ai.usage.output_tokens": 50,
        **attrs,
    }


@pytest.mark.parametrize("operation", ["chat", "generate_content", "text_completion"])
def test_an_inference_span_is_a_usage_report(operation: str) -> None:
    result = map_record(span_record(genai(**{"gen_ai.operation.name": operation})))
    assert isinstance(result, MeterChange)
    assert (result.session_id, result.op) == ("conv-1", ContextOp.USAGE)
    assert result.body == {"usage": {"input_tokens": 1_000, "output_tokens": 50}, "model": "gpt-4o"}


@pytest.mark.parametrize("operation", ["invoke_agent", "execute_tool", "invoke_workflow", "create_agent", "embeddings"])
def test_agent_tool_and_workflow_spans_never_move_a_meter(operation: str) -> None:
    """``invoke_agent`` carries the whole run's aggregated usage: never the context's size."""
    assert map_record(span_record(genai(**{"gen_ai.operation.name": operation}))) == NOT_METERED


def test_the_response_model_wins_and_cache_and_reasoning_counts_go_in_the_details() -> None:
    attrs = genai(
        **{
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.cache_read.input_tokens": 800,
            "gen_ai.usage.reasoning.output_tokens": 30,
        }
    )
    result = map_record(span_record(attrs))
    assert isinstance(result, MeterChange)
    assert result.body == {
        "usage": {
            "input_tokens": 1_000,
            "output_tokens": 50,
            "input_tokens_details": {"cached_tokens": 800},
            "output_tokens_details": {"reasoning_tokens": 30},
        },
        "model": "gpt-4o-2024-08-06",
    }


@pytest.mark.parametrize(
    "old",
    [
        {"gen_ai.usage.cache_read_input_tokens": 800, "gen_ai.usage.cache_creation_input_tokens": 5},
        {"gen_ai.usage.cache_read.input_tokens": 800, "gen_ai.usage.cache_write.input_tokens": 5},
        {"gen_ai.usage.cache_read.input_tokens": 800, "gen_ai.usage.cache_creation.input_tokens": 5},
    ],
)
def test_old_and_new_cache_names_are_read_alike(old: dict[str, int]) -> None:
    result = map_record(span_record(genai(**old)))
    assert isinstance(result, MeterChange)
    assert result.body["usage"]["input_tokens_details"] == {"cached_tokens": 800}
    assert result.body["usage"]["input_tokens"] == 1_000  # inside the input already: never added twice


def test_the_older_prompt_and_completion_names_and_gen_ai_system_are_read() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4",
        "gen_ai.usage.prompt_tokens": 70,
        "gen_ai.usage.completion_tokens": 7,
    }
    result = map_record(span_record(attrs, resource={"session.id": "s-old"}))
    assert isinstance(result, MeterChange) and result.session_id == "s-old"
    assert result.body["usage"] == {"input_tokens": 70, "output_tokens": 7}


def test_a_compacted_conversations_span_records_a_compaction() -> None:
    result = map_record(span_record(genai(**{"gen_ai.conversation.compacted": True})))
    assert isinstance(result, MeterChange)
    assert (result.op, result.body) == (ContextOp.COMPACT, {"used": 1_050})


def test_an_inference_span_without_counts_moves_nothing() -> None:
    attrs = genai()
    del attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]
    assert map_record(span_record(attrs)) == NOT_METERED


# -- sessions -------------------------------------------------------------------------------------


def test_the_first_session_attribute_present_wins_the_record_before_its_resource() -> None:
    attrs = genai(**{"session.id": "second"})
    del attrs["gen_ai.conversation.id"]
    resource = {"gen_ai.conversation.id": "on-the-resource"}
    result = map_record(span_record({**attrs, "conversation.id": "third"}, resource=resource))
    assert isinstance(result, MeterChange) and result.session_id == "second"
    del attrs["session.id"]
    result = map_record(span_record(attrs, resource=resource))
    assert isinstance(result, MeterChange) and result.session_id == "on-the-resource"


def test_the_session_attributes_are_a_setting() -> None:
    message = traces(span(genai(**{"thread_id": "t-9"})))
    [record] = records(Signal.TRACES, message, wanted_attributes(["thread_id"])).records
    result = map_record(record, ["thread_id"])
    assert isinstance(result, MeterChange) and result.session_id == "t-9"


def test_a_record_with_no_session_moves_nothing() -> None:
    attrs = genai()
    del attrs["gen_ai.conversation.id"]
    assert map_record(span_record(attrs)) == NO_SESSION


@pytest.mark.parametrize("bad", ["a.b", "a b", "*", ">", "x" * 129, "é"])
def test_an_invalid_session_id_is_rejected_never_mangled(bad: str) -> None:
    result = map_record(span_record(genai(**{"gen_ai.conversation.id": bad})))
    assert isinstance(result, Rejected) and result.reason is Reason.INVALID_SESSION_ID
    assert len(result.message) < 200


def test_a_one_megabyte_session_id_is_not_kept_so_the_next_attribute_names_the_session() -> None:
    """Values longer than anything a rule reads are dropped at decoding: never copied, never quoted."""
    attrs = genai(**{"gen_ai.conversation.id": "x" * 1_000_000, "session.id": "fallback"})
    record = span_record(attrs)
    assert "gen_ai.conversation.id" not in record.attributes
    result = map_record(record)
    assert isinstance(result, MeterChange) and result.session_id == "fallback"


@pytest.mark.parametrize(
    "counts",
    [
        {"gen_ai.usage.input_tokens": -1},
        {"gen_ai.usage.input_tokens": 2**60},
        {"gen_ai.usage.output_tokens": True},
        {"gen_ai.usage.input_tokens": 1.5},
        {"gen_ai.usage.input_tokens": "ten"},
        {"gen_ai.request.model": "m" * 200},
    ],
)
def test_a_count_that_is_not_one_is_rejected(counts: dict[str, Any]) -> None:
    result = map_record(span_record(genai(**counts)))
    assert isinstance(result, Rejected) and result.reason is Reason.INVALID_VALUE


def test_counts_written_as_strings_or_integral_doubles_are_counts() -> None:
    result = map_record(span_record(genai(**{"gen_ai.usage.input_tokens": "1000", "gen_ai.usage.output_tokens": 50.0})))
    assert isinstance(result, MeterChange) and result.body["usage"] == {"input_tokens": 1_000, "output_tokens": 50}


def test_claude_codes_other_events_are_decoded_without_their_attributes() -> None:
    message = parse(Signal.LOGS, BodyEncoding.PROTOBUF, fixture("claude-code/turn.logs.pb"))
    decoded = records(Signal.LOGS, message, WANTED, CLAUDE_UNREAD).records
    assert [(record.body, bool(record.attributes)) for record in decoded] == [
        ("claude_code.user_prompt", False),
        ("claude_code.api_request", True),
        ("claude_code.assistant_response", False),
    ]
    assert [map_record(record) for record in decoded][::2] == [NOT_METERED, NOT_METERED]
    assert changes(decoded) == changes(fixture_records("claude-code/turn.logs.pb"))
