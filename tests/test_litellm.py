"""historymw.integrations.litellm against real LiteLLM (mock_response=, and a local HTTP server for
a stream that breaks half-way)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

import litellm
import pytest
from _threads import run_in_threads

# Imported before install(), as an application would: it must still be covered.
from litellm import completion
from litellm.exceptions import MidStreamFallbackError

import historymw as hm
from historymw.integrations import litellm as hm_litellm

MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    hm_litellm.install()
    yield
    hm_litellm.flush(5.0)  # this test's outcomes still on LiteLLM's threads must not reach the next test
    hm_litellm.uninstall()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """LiteLLM reports outcomes on its own threads, after the call returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


async def await_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.005)
    return predicate()


def records(n: int = 100) -> list[hm.LMCall]:
    return hm.recent(n)


def settle() -> None:
    """Wait until LiteLLM has reported every call started so far."""
    assert hm_litellm.flush(5.0)


# -- what a record holds -------------------------------------------------------------


def test_sync_completion_becomes_one_record_with_litellm_fields() -> None:
    resp = completion(model="openai/gpt-4o-mini", messages=MSGS, mock_response="hi there",
                      temperature=0.2, max_tokens=50, seed=7, stop=["\n"])
    settle()
    (r,) = records()
    assert r.source == "litellm" and r.operation == "chat" and r.status == "ok"
    assert (r.provider, r.model) == ("openai", "gpt-4o-mini")
    assert r.messages == MSGS
    assert r.output_text == "hi there"
    assert r.finish_reason == "stop"
    assert r.response_id == resp.id
    assert (r.input_tokens, r.output_tokens, r.total_tokens) == (
        resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens)
    assert r.cost == pytest.approx(resp._hidden_params["response_cost"])
    assert r.cost is not None and r.cost > 0
    assert r.cache_hit is False
    assert r.metadata["litellm_call_id"] == resp._hidden_params["litellm_call_id"]
    assert r.params == {"temperature": 0.2, "max_tokens": 50, "seed": 7, "stop": ["\n"]}
    assert r.stream is False
    assert 0 <= r.duration_s < 30


def _comparable(r: hm.LMCall) -> dict[str, Any]:
    """A record without what differs from call to call (ids, times)."""
    return r.model_dump(exclude={"id", "started_at", "ended_at", "duration_s", "response_id", "metadata",
                                 "trace_id", "span_id"})


@pytest.mark.parametrize("shape", ["usual", "non_ascii", "scope_labels", "unknown_cost", "usage_details"])
def test_a_plain_completion_built_in_one_step_is_the_record_the_general_way_builds(
        shape: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A plain completion's draft is built in one dict (`_chat_draft`); the general way builds it
    # in two steps (`usual_draft`, `chat_outcome`). Both must keep the same fields and account
    # for the same bytes, whatever the shape `_chat_draft` takes.
    from historymw.localllm import LocalLLM

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "word " * 800}]
    call: dict[str, Any] = {"model": "gpt-4o-mini", "messages": messages, "mock_response": "Paris.",
                            "temperature": 0.2, "max_tokens": 30}
    if shape == "non_ascii":
        call.update(messages=[{"role": "user", "content": "héllo wörld ✓"}], mock_response="réponse ✓")
    elif shape == "unknown_cost":
        call.update(model="openai/a-model-litellm-has-no-price-for")
    scope = hm.history(session="s-1", tags={"feature": "search"}) if shape == "scope_labels" else hm.history()
    server = LocalLLM() if shape == "usage_details" else None  # a real server's usage has details
    if server is not None:
        server.__enter__()
        call = {"model": "openai/gpt-4o-mini", "messages": MSGS, "api_base": server.openai_url,
                "api_key": "unused", "num_retries": 0}
    built = []
    one_step = hm_litellm._chat_draft
    monkeypatch.setattr(hm_litellm, "_chat_draft", lambda *a: built.append(one_step(*a)) or built[-1])
    try:
        with scope:
            completion(**call)
            settle()
            monkeypatch.setattr(hm_litellm, "_chat_draft", lambda *a: None)  # the general way
            completion(**call)
            settle()
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    assert len(built) == 1 and built[0] is not None  # the first went the one-step way
    first, second = sorted(records(), key=lambda r: r.started_at)
    assert _comparable(first) == _comparable(second)
    assert first.metadata.keys() == second.metadata.keys() == {"litellm_call_id"}
    if shape == "usage_details":
        assert first.server_address == "127.0.0.1" and first.cache_read_input_tokens == 0


def test_a_labelled_completion_near_its_record_limit_counts_its_labels_before_the_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A record that fits its limit without the scope's labels but not with them must not take the
    # one-step draft (which keeps every field whole): it is the record the general way builds, which
    # cuts what does not fit.
    from historymw.capture import effective_now

    hm.configure(max_bytes="256KiB")  # a record may take 16 KiB
    call: dict[str, Any] = {"model": "gpt-4o-mini", "mock_response": "Paris.", "temperature": 0.2}
    base = [{"role": "user", "content": "x" * 2000}] * 4  # each message within the field limit
    sizes = []
    for extra in (0, 1000):  # what one more message of `extra` chars adds beside its chars
        completion(messages=[*base, {"role": "user", "content": "x" * extra}], **call)
        settle()
        sizes.append(records()[-1].size_bytes)
    with hm.history(session="s-1", tags={"feature": "some tag words " * 200}):
        eff = effective_now()
        limit, labels = eff.record_limit, eff.labels_bytes
        # The last message's chars that leave the unlabelled record half its labels' bytes under
        # the limit (and under the slack kept for a usage's other counts).
        extra = limit - sizes[1] + 1000 - hm_litellm._USAGE_SLACK - labels // 2
        assert 0 < extra < eff.max_chars
        labelled = {"messages": [*base, {"role": "user", "content": "x" * extra}], **call}
        completion(**labelled)
        settle()
        monkeypatch.setattr(hm_litellm, "_chat_draft", lambda *a: None)  # the general way
        completion(**labelled)
        settle()
    one_step, general = records()[-2:]
    assert one_step.session == general.session == "s-1" and general.size_bytes + labels // 2 > limit
    assert _comparable(one_step) == _comparable(general) and one_step.size_bytes == general.size_bytes


def test_a_plain_completion_only_the_ring_holds_gets_its_fields_when_sealed(tmp_path: Any) -> None:
    # Ring only: the one-step draft holds its size and the fields `record.seal` sets (`_fill_chat`).
    # With an export pipeline they are set at once. Either way the same record, the same size.
    call: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MSGS, "mock_response": "Paris.", "temperature": 0.2}
    completion(**call)
    settle()
    (draft,) = hm.ring().drafts()
    assert draft.keys() == {"size_bytes", "_fill"} and draft["_fill"][0] is hm_litellm._fill_chat
    (only_ring,) = records()
    assert draft.keys() >= {"messages", "outputs", "cost", "id"} and "_fill" not in draft  # sealed when read
    hm.configure(backends=["ring", "sql"], sql_url=f"sqlite:///{tmp_path / 'h.db'}")
    completion(**call)
    settle()
    (draft,) = hm.ring().drafts()
    assert "_fill" not in draft and draft["output_text"] == "Paris."
    (exported,) = records()
    assert _comparable(only_ring) == _comparable(exported)
    assert only_ring.size_bytes == exported.size_bytes and only_ring.cost == exported.cost


def test_a_chat_loop_extending_its_messages_records_each_request_as_sent() -> None:
    # The request is copied when LiteLLM reports the outcome, on its logging thread,
    # possibly after the caller has already appended the reply to its list.
    # A slow logger ahead of historymw's makes that the certain order.
    from litellm.integrations.custom_logger import CustomLogger

    class Slow(CustomLogger):  # type: ignore[misc]
        def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
            time.sleep(0.05)

    slow = Slow()
    litellm.callbacks.insert(0, slow)
    try:
        history = [{"role": "user", "content": "turn 0"}]
        for i in range(3):
            resp = completion(model="gpt-4o-mini", messages=history, mock_response=f"reply {i}")
            history.append({"role": "assistant", "content": resp.choices[0].message.content})
            history.append({"role": "user", "content": f"turn {i + 1}"})
        settle()
    finally:
        for name in ("callbacks", "success_callback", "_async_success_callback", "input_callback",
                     "failure_callback", "_async_failure_callback", "_async_input_callback"):
            lst = getattr(litellm, name)
            lst[:] = [cb for cb in lst if cb is not slow]
    recs = sorted(records(), key=lambda r: r.started_at)  # LiteLLM's threads may report them in any order
    assert [len(r.messages) for r in recs] == [1, 3, 5]
    assert [r.messages[-1]["content"] for r in recs] == ["turn 0", "turn 1", "turn 2"]
    assert [r.output_text for r in recs] == ["reply 0", "reply 1", "reply 2"]


def test_sampled_out_calls_are_not_recorded_and_leave_nothing_parked() -> None:
    hm.configure(policy="sample", sample_rate=0.0)
    for _ in range(5):
        completion(model="gpt-4o-mini", messages=MSGS, mock_response="dropped")
    settle()
    assert wait_for(lambda: not hm_litellm._PENDING._items)  # each skip marker goes with its outcome
    assert records() == [] and hm.stats().sampled_out == 5


def test_install_twice_records_each_call_once() -> None:
    hm_litellm.install()
    hm_litellm.install()
    assert sum(1 for cb in litellm.callbacks if type(cb).__name__ == "HistorymwLogger") == 1
    for i in range(3):
        completion(model="gpt-4o-mini", messages=MSGS, mock_response=f"r{i}")
    settle()
    time.sleep(0.2)  # a duplicate would arrive as late as the first
    assert [r.output_text for r in records()] == ["r0", "r1", "r2"]


def test_function_imported_before_install_is_covered() -> None:
    hm_litellm.uninstall()
    from litellm import completion as early  # bound before install

    hm_litellm.install()
    early(model="gpt-4o-mini", messages=MSGS, mock_response="early")
    settle()
    assert [r.output_text for r in records()] == ["early"]


async def test_acompletion_is_recorded_under_the_callers_scope() -> None:
    with hm.history(session="s-async", tags={"k": "v"}):
        await litellm.acompletion(model="gpt-4o-mini", messages=MSGS, mock_response="async hi")
    assert await hm_litellm.aflush(5.0)
    (r,) = records()
    assert (r.output_text, r.session, r.tags, r.source) == ("async hi", "s-async", {"k": "v"}, "litellm")


def test_sync_stream_is_one_record_with_joined_text_and_time_to_first_token() -> None:
    with hm.history(session="s-stream"):
        stream = completion(model="gpt-4o-mini", messages=MSGS, mock_response="one two three", stream=True)
    # Read outside the scope: the record belongs to where the call was made.
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "one two three"
    settle()
    (r,) = records()
    assert r.stream is True and r.output_text == "one two three"
    assert r.session == "s-stream"  # LiteLLM reports sync streams on a thread without the caller's context
    assert r.time_to_first_token_s is not None and 0 <= r.time_to_first_token_s <= r.duration_s
    assert r.total_tokens is not None and r.total_tokens > 0


async def test_async_stream_is_one_record() -> None:
    stream = await litellm.acompletion(model="gpt-4o-mini", messages=MSGS, mock_response="a b c", stream=True)
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert "".join(parts) == "a b c"
    assert await hm_litellm.aflush(5.0)
    (r,) = records()
    assert r.stream is True and r.output_text == "a b c" and r.time_to_first_token_s is not None


def test_embedding_is_recorded_as_embeddings_without_vectors() -> None:
    litellm.embedding(model="text-embedding-3-small", input=["alpha", "beta"], mock_response=[0.5, 0.25])
    settle()
    assert wait_for(lambda: len(records()) == 1)
    (r,) = records()
    assert r.operation == "embeddings" and r.model == "text-embedding-3-small" and r.provider == "openai"
    assert r.messages == ["alpha", "beta"]
    assert r.outputs == [] and r.output_text is None
    assert r.input_tokens is not None


# -- failures -----------------------------------------------------------------------------


def test_rate_limit_error_is_recorded_with_type_and_message() -> None:
    with pytest.raises(litellm.RateLimitError):
        completion(model="gpt-4o-mini", messages=MSGS, mock_response="litellm.RateLimitError")
    settle()
    (r,) = records()
    assert r.status == "error" and r.error_type == "RateLimitError"
    assert r.error_message is not None and "rate limit" in r.error_message.lower()
    assert r.metadata.get("litellm_call_id")


async def test_async_failure_is_recorded() -> None:
    with pytest.raises(litellm.RateLimitError):
        await litellm.acompletion(model="gpt-4o-mini", messages=MSGS, mock_response="litellm.RateLimitError")
    assert await await_for(lambda: len(records()) == 1)
    assert records()[0].error_type == "RateLimitError"


def test_failure_raised_before_the_request_is_recorded() -> None:
    with hm.history(session="bad-input"), pytest.raises(Exception) as info:
        completion(model="gpt-4o-mini", messages="not a list of messages", mock_response="x")
    settle()
    (r,) = records()
    assert r.status == "error" and r.error_type == type(info.value).__name__ and r.session == "bad-input"


def test_failure_before_a_stream_starts_is_recorded() -> None:
    with pytest.raises(litellm.RateLimitError):
        stream = completion(model="gpt-4o-mini", messages=MSGS, mock_response="litellm.RateLimitError", stream=True)
        for _ in stream:
            pass
    settle()
    (r,) = records()
    assert r.status == "error" and r.error_type == "RateLimitError" and r.stream is True


class _BrokenStream(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint whose stream breaks after two chunks."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        for i, word in enumerate(["one", " two"]):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            chunk = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: {broken json\n\n")
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def broken_stream_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BrokenStream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_failure_during_a_stream_is_recorded_under_the_callers_scope(broken_stream_url: str) -> None:
    with hm.history(session="mid-stream"):
        stream = completion(model="openai/gpt-4o-mini", messages=MSGS, stream=True, api_base=broken_stream_url,
                            api_key="not-a-real-key", num_retries=0)
        with pytest.raises(MidStreamFallbackError):
            for _ in stream:
                pass
    assert wait_for(lambda: len(records()) == 1)  # reported on a thread LiteLLM starts for it
    (r,) = records()
    assert r.status == "error" and r.stream is True and r.session == "mid-stream"
    # LiteLLM reports the cause (the broken chunk) rather than the wrapper the caller sees.
    assert r.error_type in ("MidStreamFallbackError", "JSONDecodeError") and r.error_message


# -- scopes and policies ----------------------------------------------------------------------


async def test_disabled_scope_records_nothing_on_any_path() -> None:
    with hm.history(disable=True):
        completion(model="gpt-4o-mini", messages=MSGS, mock_response="no")
        for _ in completion(model="gpt-4o-mini", messages=MSGS, mock_response="no stream", stream=True):
            pass
        litellm.embedding(model="text-embedding-3-small", input=["x"], mock_response=[0.1])
        with pytest.raises(litellm.RateLimitError):
            completion(model="gpt-4o-mini", messages=MSGS, mock_response="litellm.RateLimitError")
        await litellm.acompletion(model="gpt-4o-mini", messages=MSGS, mock_response="no async")
    # A call outside the scope proves events are flowing; then nothing else may have arrived.
    await litellm.acompletion(model="gpt-4o-mini", messages=MSGS, mock_response="visible")
    assert await hm_litellm.aflush(5.0)
    await asyncio.sleep(0.2)
    assert [r.output_text for r in records()] == ["visible"]


def test_errors_policy_keeps_only_the_failure() -> None:
    with hm.history(policy="errors"):
        completion(model="gpt-4o-mini", messages=MSGS, mock_response="fine")
        with pytest.raises(litellm.RateLimitError):
            completion(model="gpt-4o-mini", messages=MSGS, mock_response="litellm.RateLimitError")
    settle()
    assert [(r.status, r.error_type) for r in records()] == [("error", "RateLimitError")]
    assert records()[0].messages == MSGS


def test_calls_in_threads_keep_their_own_scopes() -> None:
    def work(i: int) -> None:
        with hm.history(session=f"t{i}"):
            completion(model="gpt-4o-mini", messages=MSGS, mock_response=f"out{i}")

    run_in_threads(work, 4)
    settle()
    assert sorted((r.session, r.output_text) for r in records()) == [(f"t{i}", f"out{i}") for i in range(4)]


# -- secrets --------------------------------------------------------------------------------------

# Shapes no value-shape rule knows: only the allow-list keeps them out.
SECRET_KEY = "plainkey0123456789abcdefXYZ"
SECRET_HEADER = "plainheader5555QQQQ7777"
SECRET_META = "plainmeta8888WWWW2222"
SECRET_PW = "plainpw4444ZZZZ3333"
SECRETS = (SECRET_KEY, SECRET_HEADER, SECRET_META, SECRET_PW)


def test_credentials_reach_no_backend(sqlite_url: str, tmp_path: Path) -> None:
    import structlog
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from historymw.backends.log import LogBackend
    from historymw.backends.otel import OTelBackend

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    log_sink = structlog.testing.CapturingLogger()
    logger = structlog.wrap_logger(log_sink, processors=[structlog.processors.JSONRenderer()])
    hm.configure(backends=["ring", "sql",
                           OTelBackend(tracer_provider=provider, capture_content=True, metrics=False),
                           LogBackend(logger=logger)],
                 sql_url=sqlite_url)

    creds: dict[str, Any] = {
        "api_key": SECRET_KEY,
        "api_base": f"https://user:{SECRET_PW}@llm.example.invalid/v1",
        "extra_headers": {"X-Org-Ticket": SECRET_HEADER},
        "metadata": {"note": SECRET_META},
        "aws_secret_access_key": SECRET_PW,
    }
    completion(model="gpt-4o-mini", messages=MSGS, mock_response="ok", **creds)
    for _ in completion(model="gpt-4o-mini", messages=MSGS, mock_response="ok stream", stream=True, **creds):
        pass
    with pytest.raises(litellm.RateLimitError):
        completion(model="gpt-4o-mini", messages=MSGS, mock_response="litellm.RateLimitError", **creds)
    litellm.embedding(model="text-embedding-3-small", input=["x"], mock_response=[0.1], api_key=SECRET_KEY)
    assert wait_for(lambda: len(records()) == 4)
    assert hm_litellm.flush(5.0)
    hm.shutdown(5.0)

    stored = {
        "ring": "\n".join(r.model_dump_json() for r in records()),
        "otel": "\n".join(s.to_json() for s in spans.get_finished_spans()),
        "log": "\n".join(str(c) for c in log_sink.calls),
        "sql": b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("history.db"))
               .decode("latin-1"),
    }
    assert len(spans.get_finished_spans()) == 4 and len(log_sink.calls) == 4
    assert "ok stream" in stored["sql"] and "ok stream" in stored["otel"] and "ok stream" in stored["log"]
    for where, text in stored.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} reached the {where} backend"


# -- lifecycle ---------------------------------------------------------------------------------------


def test_uninstall_removes_the_logger_from_every_list() -> None:
    completion(model="gpt-4o-mini", messages=MSGS, mock_response="before")  # copies callbacks around
    settle()
    hm_litellm.uninstall()
    lists = ("callbacks", "input_callback", "success_callback", "failure_callback",
             "_async_input_callback", "_async_success_callback", "_async_failure_callback")
    for name in lists:
        assert not any(type(cb).__name__ == "HistorymwLogger" for cb in getattr(litellm, name)), name
    assert not hm_litellm.installed()
    completion(model="gpt-4o-mini", messages=MSGS, mock_response="after")
    time.sleep(0.2)
    assert [r.output_text for r in records()] == ["before"]


def test_calls_whose_outcome_never_arrives_are_dropped_and_counted() -> None:
    pending = hm_litellm._Pending(max_items=2, max_age=60.0)
    for i in range(3):
        pending.put(f"id{i}", hm.call(model="m", messages=MSGS).start())
    pending.put("skipped", None)  # a disabled call's marker is not a lost record
    assert hm.stats().dropped_by_reason.get("integration_timeout") == 2
    old = hm_litellm._Pending(max_items=100, max_age=0.05)
    old.put("a", hm.call(model="m", messages=MSGS).start())
    time.sleep(0.1)
    old.put("b", hm.call(model="m", messages=MSGS).start())
    assert old.waiting() == 1
    assert hm.stats().dropped_by_reason.get("integration_timeout") == 3


def test_an_abandoned_stream_does_not_leak() -> None:
    before = hm_litellm.pending()
    stream = completion(model="gpt-4o-mini", messages=MSGS, mock_response="never read", stream=True)
    assert hm_litellm.pending() == before + 1
    del stream
    hm_litellm.uninstall()  # or max age: either way the parked call goes, and is counted
    assert hm_litellm.pending() == 0
    assert hm.stats().dropped_by_reason.get("integration_uninstalled") == 1


def test_install_without_litellm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    hm_litellm.uninstall()
    monkeypatch.setitem(sys.modules, "litellm", None)  # what an environment without it looks like
    with pytest.raises(hm.MissingDependencyError, match=r"pip install 'historymw\[litellm\]'"):
        hm_litellm.install()



def test_the_api_base_becomes_server_address_and_port_never_its_credentials() -> None:
    from historymw.integrations.litellm import _server
    from historymw.localllm import LocalLLM

    with LocalLLM() as server:  # a real OpenAI-compatible server on loopback
        base = server.openai_url.replace("http://", "http://user:s3cret-pass@", 1)
        completion(model="openai/gpt-4o-mini", messages=MSGS, api_base=base, api_key="unused", num_retries=0)
        assert wait_for(lambda: len(records()) == 1)
    (r,) = records()
    assert (r.server_address, r.server_port) == ("127.0.0.1", int(server.openai_url.split(":")[2].split("/")[0]))
    assert "s3cret" not in r.model_dump_json()
    # Without a port in the URL, the scheme's default: the conventions want one beside an address.
    assert _server("https://llm.example/v1") == ("llm.example", 443)
    assert _server("http://llm.example:bad/v1") == (None, None)


def test_a_call_litellm_reports_twice_is_still_one_record() -> None:
    # LiteLLM can report one call's success both from its sync handler (a thread) and its async
    # one (the loop): the repeat must not become a second record without the caller's scope.
    from litellm.integrations.custom_logger import CustomLogger

    reports: list[tuple[Any, ...]] = []

    class Capture(CustomLogger):  # type: ignore[misc]
        def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
            reports.append((kwargs, response_obj, start_time, end_time))

    capture = Capture()
    litellm.callbacks.append(capture)
    try:
        with hm.history(session="once"):
            completion(model="gpt-4o-mini", messages=MSGS, mock_response="one")
        assert wait_for(lambda: len(records()) == 1 and len(reports) == 1)
    finally:
        litellm.callbacks.remove(capture)
    hm_litellm._logger.log_success_event(*reports[0])  # the same call, reported again
    assert hm_litellm.flush(5.0)
    assert [(r.session, r.output_text) for r in records()] == [("once", "one")]


def test_provider_caches_keep_no_long_provider_name() -> None:
    """The per-provider caches are keyed by the provider LiteLLM reports (a custom provider can be any
    string): a long name is not kept as a key, and the record's provider is clipped."""
    long = "p" * 100_000
    spec = hm_litellm._chat(long)[0]
    assert spec.provider == long[:256]
    assert long not in hm_litellm._CHATS
    assert all(len(key[1]) <= 256 for key in hm_litellm._PROVIDER_SPECS if key[1] is not None)
    assert hm_litellm._chat("openai")[0] is hm_litellm._CHATS["openai"][0]  # a usual name is cached
