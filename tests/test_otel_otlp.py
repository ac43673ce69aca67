"""A real OTLP/HTTP export: the test runs a receiver on 127.0.0.1 and decodes the protobuf it gets."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import historymw as hm
from historymw import otel as hm_otel
from historymw import semconv as sc


class Receiver:
    """A collector stand-in: accepts OTLP/HTTP protobuf posts and keeps the decoded requests."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                message: Any
                if self.path == "/v1/traces":
                    message, sink = ExportTraceServiceRequest(), receiver.traces
                elif self.path == "/v1/metrics":
                    message, sink = ExportMetricsServiceRequest(), receiver.metrics
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                message.ParseFromString(body)
                with receiver.lock:
                    sink.append(message)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[tuple[Any, Any]]:
        """(scope, span) for every span received."""
        with self.lock:
            return [(ss.scope, span) for req in self.traces for rs in req.resource_spans
                    for ss in rs.scope_spans for span in ss.spans]

    def resources(self) -> list[dict[str, Any]]:
        with self.lock:
            return [attributes(rs.resource.attributes) for req in self.traces for rs in req.resource_spans]

    def metric_names(self) -> set[str]:
        with self.lock:
            return {m.name for req in self.metrics for rm in req.resource_metrics
                    for sm in rm.scope_metrics for m in sm.metrics}


def value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_spans_reach_a_collector_over_otlp_http(receiver: Receiver) -> None:
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.url + "/v1/traces")))
    hm.configure(backends=["ring", hm_otel.backend(tracer_provider=tp, metrics=False, capture_content=True)])

    @hm.recorded(provider="openai")
    def ask(model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
        return {"id": "resp-1", "model": model, "usage": {"prompt_tokens": 5, "completion_tokens": 2},
                "choices": [{"message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}]}

    with tp.get_tracer("app").start_as_current_span("POST /math") as request:
        ask("gpt-4o-mini", [{"role": "user", "content": "2+2?"}], temperature=0.0)
    assert hm.flush(10.0)  # the backend's flush pushes the spans through the exporter
    tp.shutdown()

    found = {span.name: (scope, span) for scope, span in receiver.spans()}
    scope, span = found["chat gpt-4o-mini"]
    _, parent = found["POST /math"]
    assert scope.name == "historymw"
    assert span.kind == 3  # SPAN_KIND_CLIENT
    assert span.trace_id.hex() == f"{request.get_span_context().trace_id:032x}"
    assert span.parent_span_id == parent.span_id
    assert parent.start_time_unix_nano <= span.start_time_unix_nano <= span.end_time_unix_nano
    attrs = attributes(span.attributes)
    assert attrs[sc.OPERATION_NAME] == "chat"
    assert attrs[sc.PROVIDER_NAME] == "openai"
    assert attrs[sc.REQUEST_MODEL] == "gpt-4o-mini"
    assert attrs[sc.REQUEST_TEMPERATURE] == 0.0
    assert attrs[sc.RESPONSE_ID] == "resp-1"
    assert attrs[sc.RESPONSE_FINISH_REASONS] == ["stop"]
    assert attrs[sc.USAGE_INPUT_TOKENS] == 5 and attrs[sc.USAGE_OUTPUT_TOKENS] == 2
    assert '"content":"2+2?"' in attrs[sc.INPUT_MESSAGES]


APP = textwrap.dedent("""
    import sys
    import historymw as hm
    from historymw import otel as hm_otel
    from opentelemetry import trace

    mode, url = sys.argv[1], sys.argv[2]
    if mode != "no-provider":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        app_tp = TracerProvider()  # its SDK exit hook shuts it down at exit
        app_tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces")))
        trace.set_tracer_provider(app_tp)
    if mode != "app-has-provider-no-setup":
        installed = hm_otel.setup(url, service_name="checkout")
        if mode == "app-has-provider":
            assert installed.tracer_provider is None, installed
            assert trace.get_tracer_provider() is app_tp
        else:
            assert trace.get_tracer_provider() is installed.tracer_provider
    hm.configure(backends=["ring", "otel"])  # by name: the global providers

    @hm.recorded(provider="anthropic")
    def ask(model, messages, **params):
        return "fine"

    with trace.get_tracer("app").start_as_current_span("handler"):
        ask("claude-sonnet-4", [{"role": "user", "content": "how are you?"}], max_tokens=10)
    # no flush, no shutdown: what is still queued at exit must be exported then
""")


@pytest.mark.parametrize("mode", ["no-provider", "app-has-provider", "app-has-provider-no-setup"])
def test_setup_installs_providers_only_where_none_and_exports_at_exit(receiver: Receiver, mode: str,
                                                                      tmp_path: Any) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HISTORYMW_"))}
    env["HISTORYMW_FLUSH_INTERVAL"] = "60s"  # nothing leaves before exit unless the exit path sends it
    done = subprocess.run([sys.executable, str(script), mode, receiver.url], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = {span.name: (scope, span) for scope, span in receiver.spans()}
    assert set(found) == {"chat claude-sonnet-4", "handler"}
    _, call = found["chat claude-sonnet-4"]
    _, handler = found["handler"]
    assert call.parent_span_id == handler.span_id and call.trace_id == handler.trace_id
    attrs = attributes(call.attributes)
    assert attrs[sc.PROVIDER_NAME] == "anthropic" and attrs[sc.REQUEST_MAX_TOKENS] == 10
    assert sc.INPUT_MESSAGES not in attrs  # no opt-in
    if mode == "no-provider":
        assert {"service.name": "checkout"}.items() <= receiver.resources()[0].items()
    else:  # the application's own provider carried the spans: not replaced by setup()
        assert all(r.get("service.name") != "checkout" for r in receiver.resources())
    if mode != "app-has-provider-no-setup":  # setup() installed a meter provider (the app had none)
        assert {sc.METRIC_OPERATION_DURATION, sc.METRIC_RECORDED} <= receiver.metric_names()


def test_example_exports_call_spans_nested_in_request_spans(receiver: Receiver) -> None:
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "otel_apm.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HISTORYMW_"))}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
    done = subprocess.run([sys.executable, example], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    spans = [span for _, span in receiver.spans()]
    requests = {s.span_id: s for s in spans if s.name == "GET /answer"}
    calls = [s for s in spans if s.name.startswith("chat ")]
    assert len(requests) == 3 and len(calls) == 6
    assert all(c.parent_span_id in requests and c.trace_id == requests[c.parent_span_id].trace_id for c in calls)
    assert any(attributes(c.attributes).get(sc.ERROR_TYPE) == "RateLimitError" for c in calls)
    assert {"service.name": "answer-service"}.items() <= receiver.resources()[0].items()


def test_example_sends_new_ids_each_run_and_no_metrics_where_a_server_takes_none(receiver: Receiver) -> None:
    """Phoenix and MLflow take traces only (metrics get 404/405), and drop spans whose ids they
    already have: with OTEL_METRICS_EXPORTER=none two runs send spans only, with distinct ids."""
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "otel_apm.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HISTORYMW_"))}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_METRICS_EXPORTER="none")
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, example], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "Failed to export" not in done.stderr
        runs.append({(s.trace_id, s.span_id) for _, s in receiver.spans()} - set().union(*runs))
    assert len(runs[0]) == len(runs[1]) == 9  # 3 request spans and 6 call spans, each run
    assert not {t for t, _ in runs[0]} & {t for t, _ in runs[1]}
    assert receiver.metrics == []
