"""LLM calls as GenAI spans inside the request trace, in the APM you already run.

A small web-request-like handler makes two LLM calls per request (one of them
fails now and then). Each request is a SERVER span; each LLM call becomes a
CLIENT span named like `chat gpt-4o-mini` nested under it, with the GenAI
semantic-convention attributes, plus the gen_ai.client.* metrics.

    # to a collector (Jaeger, Tempo, an OpenTelemetry Collector, ...):
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 python examples/otel_apm.py
    # to Arize Phoenix (traces only; its spans table fills from OpenInference's attributes):
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:6006 OTEL_METRICS_EXPORTER=none \
        HISTORYMW_OTEL_COMPAT=openinference python examples/otel_apm.py
    # to MLflow (traces only, into experiment 0):
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:5000 OTEL_METRICS_EXPORTER=none \
        OTEL_EXPORTER_OTLP_HEADERS=x-mlflow-experiment-id=0 python examples/otel_apm.py
    # no endpoint: spans and metrics are printed to the console
    python examples/otel_apm.py
    # prompts and outputs on the spans too (opt-in):
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY python examples/otel_apm.py

It needs no network and no API key: the "provider" below answers locally.
"""

from __future__ import annotations

import random
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

import historymw as hm
from historymw import otel as hm_otel

# An application with its own OpenTelemetry setup skips this line: historymw uses
# the global providers. setup() installs providers only where there are none (and no
# MeterProvider when OTEL_METRICS_EXPORTER=none).
installed = hm_otel.setup(service_name="answer-service")
hm.configure(backends=["ring", "otel"])
tracer = trace.get_tracer("answer-service")


class RateLimitError(Exception):
    pass


# The example's own dice, seeded for a repeatable story. Never `random.seed()`: the SDK
# draws trace and span ids from the global generator, and a second run would send the
# same ids (Phoenix drops spans whose ids it already has).
dice = random.Random(6)


@hm.recorded(provider="openai")
def chat(model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    """Stands in for a provider SDK call; any function returning an OpenAI-style response works."""
    time.sleep(dice.uniform(0.02, 0.08))
    if dice.random() < 0.2:
        raise RateLimitError("429: slow down")
    question = messages[-1]["content"]
    text = f"{question} facts" if messages[0]["role"] == "system" else f"Here is what I found on {question}."
    return {"id": f"chatcmpl-{dice.getrandbits(32):08x}", "model": f"{model}-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20 + len(question), "completion_tokens": 8}}


def handle_request(user: str, question: str) -> dict[str, Any]:
    """The web handler: one SERVER span, two LLM calls inside it."""
    with tracer.start_as_current_span("GET /answer", kind=SpanKind.SERVER,
                                      attributes={"http.request.method": "GET", "url.path": "/answer"}), \
            hm.history(session=user, tags={"route": "/answer"}):
        rewritten = chat("gpt-4o-mini", [{"role": "system", "content": "Rewrite as a search query."},
                                         {"role": "user", "content": question}], temperature=0.0, max_tokens=32)
        query = rewritten["choices"][0]["message"]["content"]
        try:
            answer = chat("gpt-4o", [{"role": "user", "content": query}], temperature=0.3, max_tokens=256)
            return {"status": 200, "answer": answer["choices"][0]["message"]["content"]}
        except RateLimitError:
            return {"status": 503}


def main() -> None:
    for i, question in enumerate(["capital of France", "tallest mountain", "speed of light"]):
        try:
            print(handle_request(f"user-{i}", question))
        except RateLimitError:
            print({"status": 503})
    hm.flush()

    # Where the call spans sit: each record keeps the request span it ran under.
    print("\ncall spans and their parent (request) spans:")
    for r in hm.recent(20):
        print(f"  trace {r.trace_id} parent span {r.span_id}  {r.operation} {r.model}  {r.status}"
              f"  {r.duration_s * 1000:.0f} ms")
    print(f"exporter: {installed.exporter} {installed.endpoint or ''}")
    # Spans and metrics still buffered are exported at exit (historymw flushes first).


if __name__ == "__main__":
    main()
