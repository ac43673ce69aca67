"""The calls tests/apm/ sends to a real APM: each one inside its own application span,
over OTLP/HTTP from a real SDK pipeline, recorded by historymw's real paths."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import historymw as hm
from historymw import otel as hm_otel

SECRET = "sk-proj-" + "Q1w2E3r4" * 4
PROMPT = [{"role": "user", "content": "capital of France?"}]
SYSTEM = "Answer in one word."
USAGE = {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280,
         "prompt_tokens_details": {"cached_tokens": 1024}, "completion_tokens_details": {"reasoning_tokens": 64}}


# -- a local OpenAI-compatible server: a real SSE stream over HTTP ------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        base = {"id": "chatcmpl-http", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model", "local-model")}
        pieces = ["Par", "is", "."]
        for i, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args: Any) -> None:
        pass


class LocalLLM:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that streams three chunks."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sse_chunks(base_url: str, model: str, messages: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
    import urllib.request

    req = urllib.request.Request(f"{base_url}/chat/completions", method="POST",
                                 data=json.dumps({"model": model, "messages": messages, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        for line in resp:
            text = line.decode().strip()
            if text.startswith("data: ") and text != "data: [DONE]":
                yield json.loads(text[6:])


# -- the application's LM functions -------------------------------------------------------


@hm.recorded(provider="openai")
def ask(model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "model": f"{model}-2025-04-16",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
            "usage": USAGE}


@hm.recorded(provider="openai")
async def ask_async(model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"id": "chatcmpl-2", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Lyon."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 2}}


def _chunk(text: str | None, reason: str | None = None, usage: Any = None) -> dict[str, Any]:
    delta = {} if text is None else {"content": text}
    chunk: dict[str, Any] = {"choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
    if usage:
        chunk["usage"] = usage
    return chunk


@hm.recorded(provider="openai")
def ask_stream(model: str, messages: list[dict[str, str]], **params: Any) -> Iterator[dict[str, Any]]:
    yield _chunk("Pa")
    yield _chunk("ris.")
    yield _chunk(None, "stop", {"prompt_tokens": 9, "completion_tokens": 2})


@hm.recorded(provider="openai")
async def ask_async_stream(model: str, messages: list[dict[str, str]], **params: Any) -> AsyncIterator[dict[str, Any]]:
    for piece in ("Ni", "ce."):
        await asyncio.sleep(0)
        yield _chunk(piece)
    yield _chunk(None, "stop", {"prompt_tokens": 9, "completion_tokens": 2})


@hm.recorded(provider="openai")
def ask_http_stream(model: str, messages: list[dict[str, str]], *, base_url: str) -> Iterator[dict[str, Any]]:
    yield from sse_chunks(base_url, model, messages)


@hm.recorded(provider="openai")
def ask_failing(model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    raise PermissionError(f"401 invalid api key {SECRET}")


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Run:
    """What was sent: app span id (hex) per call label, and the records."""

    app_spans: dict[str, str] = field(default_factory=dict)
    records: list[hm.LMCall] = field(default_factory=list)


def provider(endpoint: str, headers: dict[str, str] | None = None, project: str | None = None) -> TracerProvider:
    attrs = {"service.name": "historymw-apm-test"}
    if project:
        attrs["openinference.project.name"] = project  # Phoenix's project for these spans
    tp = TracerProvider(resource=Resource.create(attrs))
    # A long timeout: the servers answer slowly on a loaded CI machine, and a lost batch fails the test.
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=60)))
    return tp


def run(tp: TracerProvider, *, content: bool, compat: str | None = None, litellm: bool = True) -> Run:
    """Every call shape, each in an app span named `app <label>`; returns what was sent."""
    hm.configure(otel_capture_content=content, otel_compat=compat)
    hm.configure(otel_capture_content=content, otel_compat=compat,
                 backends=["ring", hm_otel.backend(tracer_provider=tp, metrics=False)])
    tracer = tp.get_tracer("app")
    out = Run()
    server = LocalLLM()

    def app(label: str) -> Any:
        span = tracer.start_as_current_span(f"app {label}")
        return span

    try:
        with app("sync") as s:
            out.app_spans["sync"] = f"{s.get_span_context().span_id:016x}"
            ask("o4-mini", PROMPT)
        with app("stream") as s:
            out.app_spans["stream"] = f"{s.get_span_context().span_id:016x}"
            assert "".join(c["choices"][0]["delta"].get("content") or "" for c in ask_stream("gpt-4o-mini", PROMPT))
        with app("http_stream") as s:
            out.app_spans["http_stream"] = f"{s.get_span_context().span_id:016x}"
            text = "".join(c["choices"][0]["delta"].get("content") or ""
                           for c in ask_http_stream("local-model", PROMPT, base_url=server.base_url))
            assert text == "Paris."
        with app("error") as s:
            out.app_spans["error"] = f"{s.get_span_context().span_id:016x}"
            try:
                ask_failing("gpt-4o-mini", PROMPT)
            except PermissionError:
                pass
        with app("system") as s:
            out.app_spans["system"] = f"{s.get_span_context().span_id:016x}"
            with hm.call(provider="anthropic", model="claude-sonnet-4", messages=PROMPT) as c:
                c.set(system_instructions=SYSTEM)
                c.output("Paris.", usage={"input_tokens": 20, "output_tokens": 2, "cache_read_input_tokens": 900,
                                          "cache_creation_input_tokens": 300})

        async def async_calls() -> None:
            with app("async") as s:
                out.app_spans["async"] = f"{s.get_span_context().span_id:016x}"
                await ask_async("gpt-4o-mini", PROMPT)
            with app("async_stream") as s:
                out.app_spans["async_stream"] = f"{s.get_span_context().span_id:016x}"
                async for _ in ask_async_stream("gpt-4o-mini", PROMPT):
                    pass
            if litellm:
                await _litellm_async(app, out, server.base_url)

        asyncio.run(async_calls())
        if litellm:
            _litellm_sync(app, out, server.base_url)
    finally:
        server.close()
    assert hm.flush(30.0)
    out.records = hm.recent(100)
    return out


def _litellm_sync(app: Any, out: Run, base_url: str) -> None:
    import litellm

    from historymw.integrations import litellm as hm_litellm

    hm_litellm.install()
    try:
        with app("litellm") as s:
            out.app_spans["litellm"] = f"{s.get_span_context().span_id:016x}"
            litellm.completion(model="gpt-4o-mini", messages=PROMPT, mock_response="Paris.")
        with app("litellm_error") as s:
            out.app_spans["litellm_error"] = f"{s.get_span_context().span_id:016x}"
            try:
                litellm.completion(model="gpt-4o-mini", messages=PROMPT, mock_response="litellm.RateLimitError")
            except Exception:  # noqa: BLE001 - the failure is what is being recorded
                pass
        # The outcome of a sync stream arrives on LiteLLM's logging thread: the parent must
        # still be the span active where the call started.
        with app("litellm_stream") as s:
            out.app_spans["litellm_stream"] = f"{s.get_span_context().span_id:016x}"
            for _ in litellm.completion(model="gpt-4o-mini", messages=PROMPT, mock_response="Paris.", stream=True):
                pass
        with app("litellm_http_stream_sync") as s:
            out.app_spans["litellm_http_stream_sync"] = f"{s.get_span_context().span_id:016x}"
            for _ in litellm.completion(model="openai/local-model", messages=PROMPT, api_base=base_url,
                                        api_key="sk-local-test", stream=True):
                pass
        # How most scripts call an async client: the loop is gone when the outcome would land.
        with app("litellm_asyncio_run") as s:
            out.app_spans["litellm_asyncio_run"] = f"{s.get_span_context().span_id:016x}"
            asyncio.run(litellm.acompletion(model="gpt-4o-mini", messages=PROMPT, mock_response="Paris."))
        assert hm_litellm.flush(10.0)
    finally:
        hm_litellm.uninstall()


async def _litellm_async(app: Any, out: Run, base_url: str) -> None:
    import litellm

    from historymw.integrations import litellm as hm_litellm

    hm_litellm.install()
    try:
        with app("litellm_async") as s:
            out.app_spans["litellm_async"] = f"{s.get_span_context().span_id:016x}"
            await litellm.acompletion(model="gpt-4o-mini", messages=PROMPT, mock_response="Paris.")
        with app("litellm_http_stream") as s:
            out.app_spans["litellm_http_stream"] = f"{s.get_span_context().span_id:016x}"
            stream = await litellm.acompletion(model="openai/local-model", messages=PROMPT, api_base=base_url,
                                               api_key="sk-local-test", stream=True)
            async for _ in stream:
                pass
        # LiteLLM reports async outcomes on this loop's tasks: let them land before it closes.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len([r for r in hm.recent(100) if r.source == "litellm"]) < 2:
            await asyncio.sleep(0.01)
    finally:
        hm_litellm.uninstall()
