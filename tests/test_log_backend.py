"""The log backend: one structlog `llm.call` event per recorded call."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from structlog.testing import capture_logs

import historymw as hm
from historymw.backends.log import LogBackend


def reply(model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    return {"id": "r-1", "model": model, "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
            "choices": [{"message": {"role": "assistant", "content": "Bonjour"}, "finish_reason": "stop"}]}


ask = hm.recorded(provider="openai")(reply)


@hm.recorded(provider="openai")
def broken(model: str, messages: list[dict[str, str]]) -> str:
    raise ConnectionError("connection reset")


PROMPT = [{"role": "user", "content": "say hello in French"}]


def calls(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["event"] == "llm.call"]


def test_one_flat_event_per_call_seen_by_capture_logs() -> None:
    hm.configure(backends=["ring", "log"])
    tracer = TracerProvider().get_tracer("app")
    with capture_logs() as entries:
        with hm.history(session="u-42", tags={"feature": "greet"}), tracer.start_as_current_span("req") as span:
            with hm.call(provider="openai", model="gpt-4o-mini", messages=PROMPT) as c:
                c.output("Bonjour", usage={"prompt_tokens": 9, "completion_tokens": 4}, cost=0.00021)
        ask("gpt-4o-mini", PROMPT)
        assert hm.flush(5.0)
    first, second = calls(entries)
    record = hm.recent(2)[0]
    assert first["log_level"] == "info"
    assert first["model"] == "gpt-4o-mini" and first["provider"] == "openai"
    assert first["status"] == "ok"
    assert first["duration"] == pytest.approx(record.duration_s, abs=1e-6)
    assert first["tokens"] == 13 and first["input_tokens"] == 9 and first["output_tokens"] == 4
    assert first["cost"] == 0.00021
    assert first["session"] == "u-42" and first["tag.feature"] == "greet"
    assert first["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert first["id"] == record.id
    assert second["session"] is None and second["trace_id"] is None
    # Flat: Elasticsearch and Loki get scalars, never objects whose shape varies per call.
    for entry in (first, second):
        assert all(not isinstance(v, (dict, list)) for v in entry.values()), entry
    # Content capture is on by default (HISTORYMW_CAPTURE_CONTENT): prompt and output as text.
    assert json.loads(first["messages"]) == PROMPT
    assert first["output"] == "Bonjour"


def test_no_content_when_content_capture_is_off() -> None:
    hm.configure(backends=["log"], capture_content=False)
    with capture_logs() as entries:
        ask("gpt-4o-mini", PROMPT)
        assert hm.flush(5.0)
    [event] = calls(entries)
    assert "messages" not in event and "output" not in event
    assert event["tokens"] == 13


def test_failed_call_is_a_warning_with_error_fields() -> None:
    hm.configure(backends=["log"], policy="errors")
    with capture_logs() as entries:
        ask("gpt-4o-mini", PROMPT)  # kept only if it fails: no event
        with pytest.raises(ConnectionError):
            broken("gpt-4o-mini", PROMPT)
        assert hm.flush(5.0)
    [event] = calls(entries)
    assert event["log_level"] == "warning"
    assert event["status"] == "error"
    assert event["error_type"] == "ConnectionError" and event["error_message"] == "connection reset"


def test_no_event_when_sampled_out() -> None:
    hm.configure(backends=["log"], policy="sample", sample_rate=0.0)
    with capture_logs() as entries:
        ask("gpt-4o-mini", PROMPT)
        assert hm.flush(5.0)
    assert calls(entries) == []


def test_json_lines_with_redacted_content_through_a_given_logger() -> None:
    out = io.StringIO()
    logger = structlog.wrap_logger(structlog.PrintLogger(out), processors=[
        structlog.processors.add_log_level, structlog.processors.JSONRenderer()])
    hm.configure(backends=["ring", LogBackend(logger, max_field_chars=200)])
    secret = "sk-ant-" + "x9Y8z7W6" * 4
    ask("gpt-4o-mini", [{"role": "user", "content": f"use key {secret} and " + "blah " * 100}])
    assert hm.flush(5.0)
    [line] = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "llm.call" and event["level"] == "info"
    assert secret not in line and "[REDACTED]" in event["messages"]
    assert "truncated" in event["messages"] and len(event["messages"]) < 260
