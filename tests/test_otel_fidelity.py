"""What an APM user sees of a call, on the SDK's in-memory exporter: exception events,
usage details, system instructions, tools, server, stream metrics, OpenInference
attributes, and no second span under another instrumentation's LLM span."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from test_otel import PROMPT, OTel, ask

import historymw as hm
from historymw import api
from historymw import semconv as sc
from historymw.errors import ConfigError

SECRET = "sk-proj-" + "Z9y8X7w6" * 4

OPENAI_CACHED = {
    "id": "chatcmpl-7", "model": "o4-mini-2025-04-16",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280,
              "prompt_tokens_details": {"cached_tokens": 1024},
              "completion_tokens_details": {"reasoning_tokens": 64}},
}
TOOLS = [{"type": "function", "function": {"name": "search", "description": "Find pages.",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]


@hm.recorded(provider="openai")
def leaky(model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    api_key = SECRET  # noqa: F841 - a local the traceback's source line shows
    raise PermissionError(f"invalid api key {SECRET} for org-7")


@hm.recorded(provider="openai")
def cached(model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    return OPENAI_CACHED


@hm.recorded(provider="openai")
def stream(model: str, messages: list[dict[str, str]], **params: Any) -> Iterator[dict[str, Any]]:
    for piece in ("Pa", "ri", "s."):
        yield {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
    yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 9, "completion_tokens": 3}}


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[OTel]:
    monkeypatch.delenv(sc.CAPTURE_CONTENT_ENV, raising=False)
    o = OTel()
    o.configure()
    yield o
    hm.shutdown(2.0)
    o.tracer_provider.shutdown()
    o.meter_provider.shutdown()


def attrs_of(o: OTel) -> dict[str, Any]:
    spans = o.spans()
    assert len(spans) == 1, [s.name for s in spans]
    return dict(spans[0].attributes or {})


def test_failed_call_has_an_exception_event_with_a_redacted_message_and_stack(otel: OTel) -> None:
    with pytest.raises(PermissionError):
        leaky("gpt-4o-mini", PROMPT)
    (span,) = otel.spans()
    (event,) = [e for e in span.events if e.name == sc.EXCEPTION_EVENT]
    ev = dict(event.attributes or {})
    assert ev[sc.EXCEPTION_TYPE] == "PermissionError"
    assert "invalid api key" in ev[sc.EXCEPTION_MESSAGE] and "org-7" in ev[sc.EXCEPTION_MESSAGE]
    stack = ev[sc.EXCEPTION_STACKTRACE]
    assert "Traceback" in stack and "in leaky" in stack and "PermissionError" in stack
    everything = json.dumps([ev, dict(span.attributes or {}), span.status.description], default=str)
    assert SECRET not in everything and "[REDACTED]" in ev[sc.EXCEPTION_MESSAGE]
    assert dict(span.attributes or {})[sc.RESPONSE_FINISH_REASONS] == ("error",)
    assert event.timestamp == span.end_time


def test_a_successful_call_has_no_exception_event(otel: OTel) -> None:
    ask("gpt-4o-mini", PROMPT)
    (span,) = otel.spans()
    assert not span.events
    assert dict(span.attributes or {})[sc.RESPONSE_FINISH_REASONS] == ("stop",)


def test_cache_and_reasoning_tokens_on_the_span(otel: OTel) -> None:
    cached("o4-mini", PROMPT)
    attrs = attrs_of(otel)
    assert attrs[sc.USAGE_INPUT_TOKENS] == 1200 and attrs[sc.USAGE_OUTPUT_TOKENS] == 80
    assert attrs[sc.USAGE_CACHE_READ_INPUT_TOKENS] == 1024
    assert attrs[sc.USAGE_REASONING_OUTPUT_TOKENS] == 64
    assert sc.USAGE_CACHE_CREATION_INPUT_TOKENS not in attrs  # not reported: not invented


def test_anthropic_cache_creation_tokens(otel: OTel) -> None:
    with hm.call(provider="anthropic", model="claude-sonnet-4", messages=PROMPT) as c:
        c.output("Paris.", usage={"input_tokens": 20, "output_tokens": 5, "cache_read_input_tokens": 900,
                                  "cache_creation_input_tokens": 300})
    attrs = attrs_of(otel)
    assert attrs[sc.USAGE_CACHE_READ_INPUT_TOKENS] == 900
    assert attrs[sc.USAGE_CACHE_CREATION_INPUT_TOKENS] == 300


@pytest.mark.parametrize("content", [True, False])
def test_system_instructions_and_tool_definitions_only_with_content(otel: OTel, content: bool) -> None:
    otel.configure(otel_capture_content=content)
    with hm.call(provider="anthropic", model="claude-sonnet-4", messages=[{"role": "user", "content": "q"}]) as c:
        c.set(system_instructions="Answer in one word.", tool_definitions=TOOLS)
        c.output("Paris.")
    attrs = attrs_of(otel)
    assert (sc.SYSTEM_INSTRUCTIONS in attrs) is content
    assert (sc.TOOL_DEFINITIONS in attrs) is content
    if content:
        assert json.loads(attrs[sc.SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": "Answer in one word."}]
        assert json.loads(attrs[sc.TOOL_DEFINITIONS]) == [
            {"type": "function", "name": "search", "description": "Find pages.",
             "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]


def test_server_address_with_its_port_and_top_k_as_int(otel: OTel) -> None:
    with hm.call(provider="openai", model="m", messages=PROMPT, params={"top_k": 40, "top_p": 0.9}) as c:
        c.set(server_address="llm.internal.example", server_port=8443)
        c.output("ok")
    attrs = attrs_of(otel)
    assert attrs[sc.SERVER_ADDRESS] == "llm.internal.example" and attrs[sc.SERVER_PORT] == 8443
    assert attrs[sc.REQUEST_TOP_K] == 40 and type(attrs[sc.REQUEST_TOP_K]) is int
    assert attrs[sc.REQUEST_TOP_P] == 0.9


def test_stream_metrics_time_to_first_chunk_and_per_output_chunk(otel: OTel) -> None:
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in stream("gpt-4o-mini", PROMPT)) == "Paris."
    otel.spans()
    m = otel.metrics()
    (first,) = m[sc.METRIC_TIME_TO_FIRST_CHUNK].data.data_points
    (per_chunk,) = m[sc.METRIC_TIME_PER_OUTPUT_CHUNK].data.data_points
    r = hm.recent(1)[0]
    assert r.stream and r.stream_chunks == 4
    assert first.count == 1 and first.sum == pytest.approx(r.time_to_first_token_s)
    assert per_chunk.count == 1
    assert per_chunk.sum == pytest.approx((r.duration_s - r.time_to_first_token_s) / 3)
    assert tuple(per_chunk.explicit_bounds) == sc.CHUNK_BUCKETS
    assert dict(first.attributes)[sc.REQUEST_MODEL] == "gpt-4o-mini"


def test_unstreamed_calls_make_no_chunk_metrics(otel: OTel) -> None:
    ask("gpt-4o-mini", PROMPT)
    otel.spans()
    m = otel.metrics()
    assert sc.METRIC_TIME_TO_FIRST_CHUNK not in m or not list(m[sc.METRIC_TIME_TO_FIRST_CHUNK].data.data_points)


def test_openinference_compat_adds_phoenix_columns_under_the_content_rule(otel: OTel) -> None:
    otel.configure(otel_compat="openinference", otel_capture_content=True)
    with hm.history(session="u-42", tags={"route": "/answer"}):
        cached("o4-mini", PROMPT, temperature=0.2)
    attrs = attrs_of(otel)
    assert attrs[sc.OI_SPAN_KIND] == "LLM"
    assert attrs[sc.OI_MODEL_NAME] == "o4-mini-2025-04-16" and attrs[sc.OI_PROVIDER] == "openai"
    assert (attrs[sc.OI_TOKENS_PROMPT], attrs[sc.OI_TOKENS_COMPLETION], attrs[sc.OI_TOKENS_TOTAL]) == (1200, 80, 1280)
    assert attrs[sc.OI_TOKENS_CACHE_READ] == 1024 and attrs[sc.OI_TOKENS_REASONING] == 64
    assert attrs[sc.OI_SESSION_ID] == "u-42"
    assert json.loads(attrs[sc.OI_METADATA]) == {"route": "/answer"}
    assert json.loads(attrs[sc.OI_INVOCATION_PARAMETERS]) == {"temperature": 0.2}
    assert json.loads(attrs[sc.OI_INPUT_VALUE]) == {"messages": PROMPT}
    assert attrs[sc.OI_OUTPUT_VALUE] == "42" and attrs[sc.OI_OUTPUT_MIME] == "text/plain"
    assert attrs["llm.input_messages.1.message.content"] == "capital of France?"
    assert attrs["llm.output_messages.0.message.content"] == "42"
    assert attrs[sc.OPERATION_NAME] == "chat"  # the GenAI conventions stay


def test_openinference_compat_without_content_has_no_input_or_output(otel: OTel) -> None:
    otel.configure(otel_compat="openinference", otel_capture_content=False)
    ask("gpt-4o-mini", PROMPT)
    attrs = attrs_of(otel)
    assert attrs[sc.OI_SPAN_KIND] == "LLM"
    assert not [k for k in attrs if k.startswith(("input.", "output.", "llm.input_messages", "llm.output_messages"))]


def test_default_is_pure_genai_conventions(otel: OTel) -> None:
    ask("gpt-4o-mini", PROMPT)
    assert not [k for k in attrs_of(otel) if k.startswith(("openinference.", "llm.", "input.", "output."))]


def test_bad_compat_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"otel_compat.*openinference"):
        hm.configure(otel_compat="zipkin")
    monkeypatch.setenv("HISTORYMW_OTEL_COMPAT", "OpenInference")
    hm.configure()
    assert api.settings().otel_compat == "openinference"
    monkeypatch.setenv("HISTORYMW_OTEL_COMPAT", "langfuse")
    with pytest.raises(ConfigError, match=r"HISTORYMW_OTEL_COMPAT='langfuse'"):
        hm.configure()


@pytest.mark.parametrize("kind_attrs, second_span", [
    ({sc.OI_SPAN_KIND: "LLM"}, False),  # OpenInference's instrumentors
    ({sc.OPERATION_NAME: "chat", sc.REQUEST_MODEL: "gpt-4o-mini"}, False),  # OpenTelemetry's GenAI ones
    ({sc.OI_SPAN_KIND: "CHAIN"}, True),  # a workflow span: the call is its child
    ({"http.request.method": "GET"}, True),
])
def test_no_second_llm_span_under_another_instrumentations_llm_span(otel: OTel, kind_attrs: dict[str, Any],
                                                                    second_span: bool) -> None:
    tracer = otel.app_tracer
    with tracer.start_as_current_span("completion", attributes=kind_attrs) as outer:
        ask("gpt-4o-mini", PROMPT)
    ours = otel.spans()
    assert len(ours) == (1 if second_span else 0)
    if ours:
        assert ours[0].parent is not None and ours[0].parent.span_id == outer.get_span_context().span_id
    r = hm.recent(1)[0]  # recorded either way, under the span that was active
    assert r.span_id == f"{outer.get_span_context().span_id:016x}"


def test_calls_beside_a_foreign_llm_span_still_get_their_spans(otel: OTel) -> None:
    tracer = otel.app_tracer
    with tracer.start_as_current_span("request"):
        with tracer.start_as_current_span("completion", attributes={sc.OI_SPAN_KIND: "LLM"}):
            ask("gpt-4o-mini", PROMPT)
        ask("gpt-4o", PROMPT)
    assert [s.name for s in otel.spans()] == ["chat gpt-4o"]
