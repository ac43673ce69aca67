"""The otel backend on the real OpenTelemetry SDK: in-memory span exporter and metric reader."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

import historymw as hm
from historymw import otel as hm_otel
from historymw import semconv as sc

PROMPT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "capital of France?"}]


def response(model: str = "gpt-4o-mini-2024-07-18", text: str = "Paris.", reason: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-42", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}


@hm.recorded(provider="openai")
def ask(model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    return response()


@hm.recorded(provider="openai")
def failing(model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    raise TimeoutError("upstream timed out")


class OTel:
    """A real SDK setup that is not the global one: what an application passes in."""

    def __init__(self, sampler: Any = None) -> None:
        self.spans_out = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(sampler=sampler)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.spans_out))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.app_tracer = self.tracer_provider.get_tracer("app")

    def configure(self, **settings: Any) -> None:
        hm.configure(**settings)  # first, so the backend below reads these settings
        backend = hm_otel.backend(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)
        hm.configure(**settings, backends=["ring", backend])

    def spans(self) -> list[ReadableSpan]:
        assert hm.flush(5.0)
        return [s for s in self.spans_out.get_finished_spans() if s.instrumentation_scope.name == "historymw"]

    def app_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans_out.get_finished_spans() if s.instrumentation_scope.name == "app"]

    def metrics(self) -> dict[str, Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[OTel]:
    monkeypatch.delenv(sc.CAPTURE_CONTENT_ENV, raising=False)
    o = OTel()
    o.configure()
    yield o
    hm.shutdown(2.0)
    o.tracer_provider.shutdown()
    o.meter_provider.shutdown()


def test_call_span_is_named_attributed_and_nested_in_the_request_span(otel: OTel) -> None:
    with otel.app_tracer.start_as_current_span("GET /search") as request_span:
        ask("gpt-4o-mini", PROMPT, temperature=0.2, max_tokens=64, top_p=0.9, stop=["\n"], seed=7, n=2)
    [span] = otel.spans()
    [request] = otel.app_spans()
    record = hm.recent(1)[0]

    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == request_span.get_span_context().span_id
    assert span.context.trace_id == request.context.trace_id
    assert span.status.status_code is StatusCode.UNSET
    # The call's own times, not the export worker's.
    assert span.start_time == int(record.started_at.timestamp() * 1e6) * 1000
    assert span.end_time is not None and request.start_time is not None and request.end_time is not None
    assert abs((span.end_time - span.start_time) / 1e9 - record.duration_s) < 1e-6
    assert request.start_time <= span.start_time <= span.end_time <= request.end_time

    attrs = dict(span.attributes or {})
    assert attrs[sc.OPERATION_NAME] == "chat"
    assert attrs[sc.PROVIDER_NAME] == "openai"
    assert attrs[sc.REQUEST_MODEL] == "gpt-4o-mini"
    assert attrs[sc.REQUEST_TEMPERATURE] == 0.2
    assert attrs[sc.REQUEST_MAX_TOKENS] == 64
    assert attrs[sc.REQUEST_TOP_P] == 0.9
    assert attrs[sc.REQUEST_STOP_SEQUENCES] == ("\n",)
    assert attrs[sc.REQUEST_SEED] == 7
    assert attrs[sc.REQUEST_CHOICE_COUNT] == 2
    assert attrs[sc.RESPONSE_ID] == "chatcmpl-42"
    assert attrs[sc.RESPONSE_MODEL] == "gpt-4o-mini-2024-07-18"
    assert attrs[sc.RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs[sc.USAGE_INPUT_TOKENS] == 12
    assert attrs[sc.USAGE_OUTPUT_TOKENS] == 3
    assert attrs[sc.HM_RECORD_ID] == record.id
    assert sc.ERROR_TYPE not in attrs
    # Content is opt-in.
    assert sc.INPUT_MESSAGES not in attrs and sc.OUTPUT_MESSAGES not in attrs


def test_server_address_session_and_provider_aliases(otel: OTel) -> None:
    with hm.history(session="u-42"), hm.call(provider="vertex_ai", model="gemini-2.0-flash", messages=PROMPT) as c:
        c.output("Paris.", server_address="europe-west4-aiplatform.googleapis.com:443", finish_reason="STOP")
    [span] = otel.spans()
    attrs = dict(span.attributes or {})
    assert span.name == "chat gemini-2.0-flash"
    assert attrs[sc.PROVIDER_NAME] == "gcp.vertex_ai"
    assert attrs[sc.SERVER_ADDRESS] == "europe-west4-aiplatform.googleapis.com"
    assert attrs[sc.SERVER_PORT] == 443
    assert attrs[sc.CONVERSATION_ID] == "u-42"
    assert span.parent is None  # no active span: a root span of its own trace


def test_failed_call_has_error_status_and_type(otel: OTel) -> None:
    with otel.app_tracer.start_as_current_span("job"), pytest.raises(TimeoutError):
        failing("gpt-4o-mini", PROMPT)
    [span] = otel.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "upstream timed out"
    assert dict(span.attributes or {})[sc.ERROR_TYPE] == "TimeoutError"
    assert span.parent is not None


def test_errors_only_policy_spans_only_failures_parented_on_the_span_active_at_call_start(otel: OTel) -> None:
    otel.configure(policy="errors")
    with otel.app_tracer.start_as_current_span("handler") as handler:
        ask("gpt-4o-mini", PROMPT)
        with pytest.raises(TimeoutError):
            failing("gpt-4o-mini", PROMPT)
    [span] = otel.spans()  # the successful call was filtered out by the tail decision
    assert dict(span.attributes or {})[sc.ERROR_TYPE] == "TimeoutError"
    assert span.parent is not None and span.parent.span_id == handler.get_span_context().span_id
    assert span.context.trace_id == handler.get_span_context().trace_id
    assert hm.stats().filtered_out == 1


def test_no_span_when_sampled_out(otel: OTel) -> None:
    otel.configure(policy="sample", sample_rate=0.0)
    with otel.app_tracer.start_as_current_span("request"):
        for _ in range(5):
            ask("gpt-4o-mini", PROMPT)
    ask("gpt-4o-mini", PROMPT)  # also without an active span
    assert otel.spans() == []
    assert len(otel.app_spans()) == 1
    assert hm.stats().sampled_out == 6


def test_sampling_by_trace_keeps_whole_traces(otel: OTel) -> None:
    otel.configure(policy="sample", sample_rate=0.5)
    kept_traces, dropped_traces = set(), set()
    for _ in range(40):
        with otel.app_tracer.start_as_current_span("request") as req:
            ask("gpt-4o-mini", PROMPT)
            ask("gpt-4o-mini", PROMPT)
        tid = req.get_span_context().trace_id
        (kept_traces if (tid & (2**64 - 1)) < 2**63 else dropped_traces).add(tid)
    spans = otel.spans()
    assert {s.context.trace_id for s in spans} == kept_traces
    assert len(spans) == 2 * len(kept_traces)
    assert kept_traces and dropped_traces


def test_parent_the_application_did_not_sample_makes_no_span() -> None:
    # The application's sampler dropped the request trace: the call span follows it
    # (ParentBased), instead of starting a trace of its own.
    o = OTel(sampler=ParentBased(ALWAYS_OFF))
    o.configure()
    with o.app_tracer.start_as_current_span("unsampled request"):
        ask("gpt-4o-mini", PROMPT)
    assert o.spans() == []
    assert len(hm.recent()) == 1 and hm.recent()[0].trace_id is not None
    hm.shutdown(2.0)
    o.tracer_provider.shutdown()
    o.meter_provider.shutdown()


@pytest.mark.parametrize(("env", "setting", "expected"), [
    (None, None, False),
    ("NO_CONTENT", None, False),
    ("EVENT_ONLY", None, False),
    ("SPAN_ONLY", None, True),
    ("span_and_event", None, True),
    ("true", None, True),
    ("bogus", None, False),
    ("SPAN_ONLY", False, False),
    (None, True, True),
])
def test_content_only_on_opt_in(otel: OTel, monkeypatch: pytest.MonkeyPatch, env: str | None,
                                setting: bool | None, expected: bool) -> None:
    if env is not None:
        monkeypatch.setenv(sc.CAPTURE_CONTENT_ENV, env)
    otel.configure(otel_capture_content=setting)
    ask("gpt-4o-mini", PROMPT)
    attrs = dict(otel.spans()[0].attributes or {})
    assert (sc.INPUT_MESSAGES in attrs) is expected
    assert (sc.OUTPUT_MESSAGES in attrs) is expected
    if expected:
        assert json.loads(str(attrs[sc.INPUT_MESSAGES])) == [
            {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
            {"role": "user", "parts": [{"type": "text", "content": "capital of France?"}]},
        ]
        assert json.loads(str(attrs[sc.OUTPUT_MESSAGES])) == [
            {"role": "assistant", "parts": [{"type": "text", "content": "Paris."}], "finish_reason": "stop"}]


def test_content_on_spans_is_redacted_and_truncated(otel: OTel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sc.CAPTURE_CONTENT_ENV, "SPAN_ONLY")
    otel.configure(max_field_chars=300)
    secret = "sk-proj-" + "A1b2C3d4" * 4
    long_question = "why? " * 200
    ask("gpt-4o-mini", [{"role": "user", "content": f"my key is {secret}"},
                        {"role": "user", "content": long_question}])
    raw = str(dict(otel.spans()[0].attributes or {})[sc.INPUT_MESSAGES])
    assert secret not in raw and "[REDACTED]" in raw
    assert len(raw) <= 300 + 40
    messages = json.loads(raw)  # still valid JSON: long strings were cut, not the JSON
    assert "truncated" in messages[1]["parts"][0]["content"]


def test_capture_content_off_keeps_content_off_spans_even_when_opted_in(otel: OTel,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sc.CAPTURE_CONTENT_ENV, "SPAN_ONLY")
    otel.configure(capture_content=False)
    ask("gpt-4o-mini", PROMPT)
    attrs = dict(otel.spans()[0].attributes or {})
    assert sc.INPUT_MESSAGES not in attrs and sc.OUTPUT_MESSAGES not in attrs


def test_tool_calls_and_anthropic_blocks_in_content(otel: OTel) -> None:
    otel.configure(otel_capture_content=True)
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    with hm.call(provider="anthropic", model="claude-sonnet-4", messages=messages) as c:
        c.output(outputs=[{"type": "text", "text": "It is sunny."},
                          {"type": "tool_use", "id": "tu_1", "name": "log", "input": {"x": 1}}],
                 finish_reason="end_turn")
    attrs = dict(otel.spans()[0].attributes or {})
    inp = json.loads(str(attrs[sc.INPUT_MESSAGES]))
    assert inp[1]["parts"] == [{"type": "tool_call", "id": "call_1", "name": "weather",
                                "arguments": {"city": "Paris"}}]
    assert inp[2] == {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1",
                                                 "response": "sunny"}]}
    out = json.loads(str(attrs[sc.OUTPUT_MESSAGES]))
    assert out == [{"role": "assistant", "finish_reason": "end_turn", "parts": [
        {"type": "text", "content": "It is sunny."},
        {"type": "tool_call", "id": "tu_1", "name": "log", "arguments": {"x": 1}}]}]
    assert attrs[sc.RESPONSE_FINISH_REASONS] == ("end_turn",)


def _points(metric: Any) -> list[Any]:
    return list(metric.data.data_points)


def test_genai_metrics_with_convention_buckets(otel: OTel) -> None:
    ask("gpt-4o-mini", PROMPT)
    with pytest.raises(TimeoutError):
        failing("gpt-4o-mini", PROMPT)
    otel.spans()  # flush
    m = otel.metrics()

    duration = m[sc.METRIC_OPERATION_DURATION]
    assert duration.unit == "s"
    points = {p.attributes.get(sc.ERROR_TYPE): p for p in _points(duration)}
    assert set(points) == {None, "TimeoutError"}
    ok = points[None]
    assert tuple(ok.explicit_bounds) == sc.DURATION_BUCKETS
    assert ok.count == 1 and dict(ok.attributes)[sc.REQUEST_MODEL] == "gpt-4o-mini"
    assert dict(ok.attributes)[sc.PROVIDER_NAME] == "openai"

    tokens = m[sc.METRIC_TOKEN_USAGE]
    assert tokens.unit == "{token}"
    by_type = {p.attributes[sc.TOKEN_TYPE]: p for p in _points(tokens)}
    assert set(by_type) == {"input", "output"}
    assert by_type["input"].sum == 12 and by_type["output"].sum == 3
    assert tuple(by_type["input"].explicit_bounds) == sc.TOKEN_BUCKETS


def _value(metrics: dict[str, Any], name: str, **attrs: str) -> int:
    if name not in metrics:  # nothing observed yet (e.g. no drop of any reason so far)
        return 0
    return sum(p.value for p in _points(metrics[name]) if all(p.attributes.get(k) == v for k, v in attrs.items()))


def test_own_counters_as_metrics_stay_monotonic_across_configure(otel: OTel) -> None:
    otel.configure(maxlen=2, queue_size=1)
    before = otel.metrics()  # process-wide totals: earlier configurations count too
    for _ in range(3):
        ask("gpt-4o-mini", PROMPT)
    otel.spans()
    stats = hm.stats()
    m = otel.metrics()

    def delta(name: str, **attrs: str) -> int:
        return _value(m, name, **attrs) - _value(before, name, **attrs)

    assert delta(sc.METRIC_RECORDED) == stats.recorded == 3
    assert delta(sc.METRIC_EVICTED) == stats.evicted == 1
    assert delta(sc.METRIC_DROPPED, reason="queue_full") == stats.dropped_by_reason["queue_full"] == 2
    assert delta(sc.METRIC_EXPORTED) == stats.exported == 1
    assert _value(m, sc.METRIC_RING_RECORDS) == 2
    assert _value(m, sc.METRIC_RING_BYTES) == stats.bytes_held > 0

    otel.configure(policy="sample", sample_rate=0.0)  # historymw starts new counters
    ask("gpt-4o-mini", PROMPT)
    m2 = otel.metrics()
    for name in (sc.METRIC_RECORDED, sc.METRIC_EVICTED, sc.METRIC_EXPORTED, sc.METRIC_DROPPED):
        assert _value(m2, name) == _value(m, name), name  # carried over, not back to 0
    assert _value(m2, sc.METRIC_SAMPLED_OUT) == _value(m, sc.METRIC_SAMPLED_OUT) + 1
    assert _value(m2, sc.METRIC_RING_RECORDS) == 0  # a gauge: the new ring is empty


def test_instruments_are_created_once_per_meter_provider(otel: OTel, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        otel.configure()
    before = _value(otel.metrics(), sc.METRIC_RECORDED)
    ask("gpt-4o-mini", PROMPT)
    otel.spans()
    m = otel.metrics()
    assert _value(m, sc.METRIC_RECORDED) == before + 1  # observed once, not once per configure()
    assert len(_points(m[sc.METRIC_RECORDED])) == 1
    assert "already" not in caplog.text  # the SDK warns about duplicate instruments


def test_broken_record_costs_only_its_own_span(otel: OTel) -> None:
    with hm.call(provider="openai", model="m", messages=PROMPT) as c:
        c.output("ok")
    with hm.call(provider="openai", model="m2", messages=PROMPT) as c:
        c.output("ok")
    backend = next(b for b in hm.settings().backends if isinstance(b, hm_otel.OTelBackend))
    good = hm.recent(2)
    bad = good[0].model_copy(update={"trace_id": "not-hex", "span_id": "zz"})
    hm.flush()
    otel.spans_out.clear()
    backend.export([bad, good[1]])
    otel.tracer_provider.force_flush()
    assert [s.name for s in otel.spans_out.get_finished_spans()] == ["chat m2"]
    assert hm.stats().errors.get("otel_span") == 1
