"""historymw.integrations.dspy on a real DSPy program (dspy.ChainOfThought on dspy.LM driven by
LiteLLM's mock responses, and DSPy's native engine against a local HTTP endpoint)."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="historymw-dspy-cache-"))

import dspy
import pytest
from _dspy_program import REPLY, Prog, make_lm
from dspy.clients import base_lm

import historymw as hm
from historymw.integrations import dspy as hm_dspy
from historymw.integrations import litellm as hm_litellm


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    hm_dspy.install()
    yield
    # Outcomes LiteLLM has yet to report belong to this test: wait for them, or a later test
    # that installs the LiteLLM integration would record them as its own calls.
    hm_litellm.flush(5.0)
    hm_dspy.uninstall()
    hm_litellm.uninstall()


def records() -> list[hm.LMCall]:
    return hm.recent(1000)


def lens(lm: Any, *modules: Any) -> tuple[int, ...]:
    return (len(base_lm.GLOBAL_HISTORY), len(lm.history), *(len(m.history) for m in modules))


# -- one record per call, DSPy's lists are views of the records -----------------------------


def test_dspy_history_shows_the_records_and_each_call_is_one_record() -> None:
    hm_dspy.uninstall()
    lm = make_lm(temperature=0.3, max_tokens=200)
    cot = dspy.ChainOfThought("question -> answer")
    with dspy.context(lm=lm):
        cot(question="before install")
    before = lens(lm, cot, cot.predict)
    assert before[1:] == (1, 1, 1)
    hm.configure()

    hm_dspy.install()
    with dspy.context(lm=lm):
        answers = [cot(question=f"What is 2+{i}?").answer for i in range(5)]
    assert answers == ["4"] * 5
    # The entries made before install() stay, then the five calls (views, not second copies).
    assert lens(lm, cot, cot.predict) == tuple(n + 5 for n in before)

    recs = records()
    assert len(recs) == 5
    r = recs[-1]
    assert (r.source, r.provider, r.model, r.operation, r.status) == ("dspy", "openai", "gpt-4o-mini", "chat", "ok")
    assert [m["role"] for m in r.messages] == ["system", "user"]
    assert "What is 2+4?" in r.messages[-1]["content"]
    assert r.outputs == [REPLY] and r.output_text == REPLY
    assert r.input_tokens and r.output_tokens and r.total_tokens
    assert r.cost is not None and r.cost > 0
    assert r.cache_hit is False
    assert r.finish_reason == "stop" and r.response_id
    assert r.metadata["dspy_module"] == "ChainOfThought.Predict"
    assert r.params == {"temperature": 0.3, "max_tokens": 200}
    assert r.duration_s > 0


def test_usage_tracking_and_return_values_are_dspys_own() -> None:
    # historymw records DSPy's usual call from its call and result, without DSPy's history
    # entry: what DSPy returns and what its usage tracker sees must not change.
    lm = make_lm()
    with dspy.context(lm=lm), dspy.track_usage() as usage:
        outputs = lm("What is 2+2?")
        outputs2 = lm(messages=[{"role": "user", "content": "and 3+3?"}])
    assert outputs == [REPLY] and outputs2 == [REPLY]
    tokens = usage.get_total_tokens()["openai/gpt-4o-mini"]
    assert tokens["total_tokens"] > 0
    first, second = records()
    assert first.messages == [{"role": "user", "content": "What is 2+2?"}]
    assert second.messages == [{"role": "user", "content": "and 3+3?"}]
    assert first.total_tokens and first.total_tokens * 2 == tokens["total_tokens"]
    assert first.finish_reason == "stop" and first.response_model == "gpt-4o-mini"


def test_an_lm_that_overrides_update_history_still_gets_dspys_entry() -> None:
    seen: list[dict[str, Any]] = []

    class MyLM(dspy.LM):  # type: ignore[misc]
        def update_history(self, entry: dict[str, Any]) -> None:
            seen.append(entry)
            super().update_history(entry)

    lm = MyLM("openai/gpt-4o-mini", mock_response=REPLY, num_retries=0, cache=False)
    assert lm("hello there") == [REPLY]
    assert len(seen) == 1 and seen[0]["prompt"] == "hello there" and seen[0]["outputs"] == [REPLY]
    (r,) = records()
    assert r.messages == [{"role": "user", "content": "hello there"}] and r.output_text == REPLY
    assert r.cache_hit is False and r.finish_reason == "stop"


def test_cache_hits_are_marked() -> None:
    lm = make_lm(cache=True)
    cot = dspy.ChainOfThought("question -> answer")
    question = f"cached question {uuid.uuid4()}"
    with dspy.context(lm=lm):
        cot(question=question)
        cot(question=question)
    first, second = records()
    assert first.cache_hit is False and first.total_tokens
    assert second.cache_hit is True and second.output_text == REPLY


def test_records_keep_their_own_copies_of_what_dspy_built_and_returned() -> None:
    # The record reuses DSPy's request and parsed outputs without copying their strings, but it
    # holds lists and dicts of its own: what the caller changes after the call is not in it.
    lm = make_lm(temperature=0.1, cache=True)
    question = f"q {uuid.uuid4()}"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
    lm(messages=messages)
    outputs = lm(messages=messages)  # a cache hit
    outputs.append("added by the caller")
    outputs[0] = "changed by the caller"
    messages[1]["content"] = "changed by the caller"
    messages.append({"role": "user", "content": "appended by the caller"})
    lm.kwargs["temperature"] = 0.9
    miss, hit = records()
    for r in (miss, hit):
        assert r.outputs == [REPLY] and r.output_text == REPLY
        assert r.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
        assert r.params == {"temperature": 0.1}
    assert hit.cache_hit is True and miss.cache_hit is False
    # Its bytes count what it holds: the reply and the prompt, beyond a bare record's.
    assert hit.size_bytes > len(REPLY) + sum(len(m["content"]) for m in hit.messages)


def test_a_cache_hit_with_messages_copied_another_way_is_still_its_lms() -> None:
    # A cache hit of an LM called directly is recorded from a spec of the LM's own, whose usual
    # drafts carry the LM's id; messages the usual draft does not take (a "name" beside role and
    # content) are copied another way, and that record must carry it too.
    lm, other = make_lm(cache=True), make_lm(cache=True)
    messages = [{"role": "user", "content": f"q {uuid.uuid4()}", "name": "ann"}]
    lm(messages=messages)
    lm(messages=messages)  # a cache hit
    other(messages=[{"role": "user", "content": "for the other LM"}])
    hit = records()[-2]
    assert hit.cache_hit is True and hit.messages == messages
    assert len(lm.history) == 2 and len(other.history) == 1
    out = io.StringIO()
    lm.inspect_history(5, file=out)
    assert out.getvalue().count(messages[0]["content"]) == 2


def test_failures_are_recorded_once() -> None:
    cot = dspy.ChainOfThought("question -> answer")
    with dspy.context(lm=make_lm("litellm.RateLimitError")), pytest.raises(dspy.LMRateLimitError) as info:
        cot(question="will fail")
    (r,) = records()
    assert r.status == "error" and r.error_type == type(info.value).__name__
    assert "RateLimit" in r.error_type and r.source == "dspy"
    assert r.metadata["dspy_module"] == "ChainOfThought.Predict"
    assert "will fail" in r.messages[-1]["content"]


def test_exactly_one_record_per_call_with_both_integrations() -> None:
    hm_litellm.install()  # DSPy's mock path goes through LiteLLM: LiteLLM's logger sees these calls too
    cot = dspy.ChainOfThought("question -> answer")
    with dspy.context(lm=make_lm()):
        for i in range(3):
            cot(question=f"q{i}")
    with dspy.context(lm=make_lm("litellm.RateLimitError")), pytest.raises(dspy.LMRateLimitError):
        cot(question="fails")
    import litellm

    litellm.completion(model="gpt-4o-mini", messages=[{"role": "user", "content": "direct"}], mock_response="d")
    assert hm_litellm.flush(5.0)
    time.sleep(0.3)  # a second record of a DSPy call would arrive on LiteLLM's logging thread by now
    assert sorted((r.source, r.status) for r in records()) == [
        ("dspy", "error"), ("dspy", "ok"), ("dspy", "ok"), ("dspy", "ok"), ("litellm", "ok")]


async def test_exactly_one_record_per_async_call_with_both_integrations() -> None:
    hm_litellm.install()  # LiteLLM's async handlers run as tasks made inside DSPy's attempt
    cot = dspy.ChainOfThought("question -> answer")
    with dspy.context(lm=make_lm()):
        for i in range(2):
            await cot.acall(question=f"async q{i}")
    with dspy.context(lm=make_lm("litellm.RateLimitError")), pytest.raises(dspy.LMRateLimitError):
        await cot.acall(question="async fails")
    assert hm_litellm.flush(5.0)
    time.sleep(0.3)
    assert sorted((r.source, r.status) for r in records()) == [("dspy", "error"), ("dspy", "ok"), ("dspy", "ok")]


def test_a_failing_lm_whose_forward_calls_dspys_is_recorded_once() -> None:
    class Forwarding(dspy.LM):  # DSPy runs it as a legacy LM: its execute runs LM.forward's execute
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            return super().forward(prompt=prompt, messages=messages, **kwargs)

    lm = Forwarding("openai/gpt-4o-mini", mock_response="litellm.RateLimitError", cache=False, num_retries=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(Exception, match="RateLimit"):
            lm("nested failure")
    (r,) = records()
    assert (r.status, r.messages[-1]["content"]) == ("error", "nested failure")


class _OpenAIEndpoint(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat endpoint, for DSPy's native (non-LiteLLM) engine."""

    protocol_version = "HTTP/1.1"
    agents: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        self.agents.append(self.headers.get("user-agent", ""))
        data = json.dumps({
            "id": "chatcmpl-native", "object": "chat.completion", "created": 1, "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAIEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_dspy_native_engine_calls_are_recorded_too(endpoint: str) -> None:
    hm_litellm.install()
    lm = dspy.LM("openai/gpt-4o-mini", api_base=endpoint, api_key="local-test-key", cache=False, num_retries=0)
    with dspy.context(lm=lm):
        assert dspy.ChainOfThought("question -> answer")(question="native?").answer == "4"
    assert _OpenAIEndpoint.agents and "litellm" not in _OpenAIEndpoint.agents[-1].lower()
    (r,) = records()
    assert (r.source, r.model, r.output_text, r.total_tokens) == ("dspy", "gpt-4o-mini", REPLY, 10)


# -- inspect_history ------------------------------------------------------------------------


def test_inspect_history_prints_historymw_records_in_dspys_format() -> None:
    lm_a, lm_b = make_lm(), make_lm()
    cot_a, cot_b = dspy.ChainOfThought("question -> answer"), dspy.ChainOfThought("question -> answer")
    with dspy.context(lm=lm_a):
        cot_a(question="question for A")
    with dspy.context(lm=lm_b):
        cot_b(question="question for B")
    global_lens = len(base_lm.GLOBAL_HISTORY)

    out = io.StringIO()
    dspy.inspect_history(2, file=out)
    text = out.getvalue()
    assert "question for A" in text and "question for B" in text
    assert "User message:" in text and "Response:" in text and "Because 2+2=4." in text

    for owner, mine, other in ((lm_a, "for A", "for B"), (cot_b, "for B", "for A")):
        out = io.StringIO()
        owner.inspect_history(5, file=out)
        assert mine in out.getvalue() and other not in out.getvalue()
    assert len(base_lm.GLOBAL_HISTORY) == global_lens


def test_failures_are_recorded_but_kept_out_of_dspys_history_as_dspy_does() -> None:
    before = len(base_lm.GLOBAL_HISTORY)
    with dspy.context(lm=make_lm("litellm.RateLimitError")), pytest.raises(dspy.LMRateLimitError):
        dspy.Predict("question -> answer")(question="a failing question")
    out = io.StringIO()
    dspy.inspect_history(1, file=out)
    assert "a failing question" not in out.getvalue() and len(base_lm.GLOBAL_HISTORY) == before
    (r,) = records()
    assert r.status == "error" and "RateLimit" in (r.error_type or "")


# -- scopes and policies, in DSPy's own threads ----------------------------------------------------


def test_disable_and_policies_apply_to_dspy_calls() -> None:
    cot = dspy.ChainOfThought("question -> answer")
    good, bad = make_lm(), make_lm("litellm.RateLimitError")
    with hm.history(disable=True), dspy.context(lm=good):
        cot(question="not recorded")
    with hm.history(policy="errors"):
        with dspy.context(lm=good):
            cot(question="fine, not kept")
        with dspy.context(lm=bad), pytest.raises(dspy.LMRateLimitError):
            cot(question="kept")
    with hm.history(policy="sample", sample_rate=0.0), dspy.context(lm=good):
        cot(question="sampled out")
    assert [(r.status, "kept" in r.messages[-1]["content"]) for r in records()] == [("error", True)]


def test_dspy_setting_disable_history_is_honoured() -> None:
    with dspy.context(lm=make_lm(), disable_history=True):
        dspy.ChainOfThought("question -> answer")(question="off")
    assert records() == []


def test_scope_follows_calls_into_dspy_parallel_and_evaluate() -> None:
    prog = Prog()
    examples = [dspy.Example(question=f"q{i}", answer="4").with_inputs("question") for i in range(4)]
    with hm.history(session="batch", tags={"job": "eval"}), dspy.context(lm=make_lm()):
        dspy.Parallel(num_threads=3, disable_progress_bar=True)([(prog, ex) for ex in examples])
        dspy.Evaluate(devset=examples, metric=lambda ex, pred, trace=None: pred.answer == ex.answer,
                      num_threads=2, display_progress=False)(prog)
    recs = records()
    assert len(recs) == 8
    assert {(r.session, tuple(r.tags.items())) for r in recs} == {("batch", (("job", "eval"),))}
    assert {r.metadata["dspy_module"] for r in recs} == {"Prog.ChainOfThought.Predict"}
    with hm.history(disable=True), dspy.context(lm=make_lm()):
        dspy.Parallel(num_threads=3, disable_progress_bar=True)([(prog, ex) for ex in examples])
    assert len(records()) == 8


def test_dspy_context_overrides_are_recorded_with_the_lm_in_force() -> None:
    other = dspy.LM("anthropic/claude-3-5-haiku-20241022", mock_response=REPLY, cache=False, num_retries=0)
    cot = dspy.ChainOfThought("question -> answer")
    with dspy.context(lm=make_lm()):
        cot(question="default lm")
        with dspy.context(lm=other):
            cot(question="overridden lm")
    assert [(r.provider, r.model) for r in records()] == [
        ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku-20241022")]


async def test_async_calls_keep_the_callers_scope() -> None:
    prog = Prog()
    with hm.history(session="async"), dspy.context(lm=make_lm()):
        pred = await prog.acall(question="async question")
    assert pred.answer == "4"
    (r,) = records()
    assert r.session == "async" and r.metadata["dspy_module"] == "Prog.ChainOfThought.Predict"


# -- secrets, uninstall, missing dependency ----------------------------------------------------------

SECRET = "plaindspykey0123456789QWERTY"


def test_credentials_reach_no_backend(sqlite_url: str, tmp_path: Path) -> None:
    import structlog

    from historymw.backends.log import LogBackend

    log_sink = structlog.testing.CapturingLogger()
    logger = structlog.wrap_logger(log_sink, processors=[structlog.processors.JSONRenderer()])
    hm.configure(backends=["ring", "sql", LogBackend(logger=logger)], sql_url=sqlite_url)
    hm_litellm.install()
    lm = make_lm(api_key=SECRET, api_base=f"https://u:{SECRET}@llm.example.invalid/v1")
    cot = dspy.ChainOfThought("question -> answer")
    with dspy.context(lm=lm):
        cot(question="keep my key")
    with dspy.context(lm=make_lm("litellm.RateLimitError", api_key=SECRET)), pytest.raises(dspy.LMRateLimitError):
        cot(question="fail with my key")
    assert hm.flush(5.0)
    hm.shutdown(5.0)
    stored = {
        "ring": "\n".join(r.model_dump_json() for r in records()),
        "log": "\n".join(str(c) for c in log_sink.calls),
        "sql": b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("history.db"))
               .decode("latin-1"),
    }
    assert "keep my key" in stored["sql"] and "keep my key" in stored["log"]
    for where, text in stored.items():
        assert SECRET not in text, f"the API key reached the {where} backend"


def test_uninstall_restores_dspys_behaviour() -> None:
    from dspy.clients.base_lm import BaseLM

    hm_dspy.uninstall()
    originals = (dspy.inspect_history, BaseLM.__call__, BaseLM.update_history, base_lm.record_history)
    hm_dspy.install()
    hm_dspy.install()
    assert dspy.inspect_history is not originals[0]
    hm_dspy.uninstall()
    assert (dspy.inspect_history, BaseLM.__call__, BaseLM.update_history, base_lm.record_history) == originals
    assert "update_history" in vars(BaseLM)

    lm, cot = make_lm(), dspy.ChainOfThought("question -> answer")
    before = lens(lm, cot)
    with dspy.context(lm=lm):
        cot(question="after uninstall")
    assert lens(lm, cot) == tuple(n + 1 for n in before)
    assert records() == []


def test_install_without_dspy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    hm_dspy.uninstall()
    monkeypatch.setitem(sys.modules, "dspy", None)
    with pytest.raises(hm.MissingDependencyError, match=r"pip install 'historymw\[dspy\]'"):
        hm_dspy.install()


@pytest.mark.parametrize("fields", [
    {"finish_reason": "stop", "response_id": "chatcmpl-1", "response_model": "gpt-4o-mini", "cost": 1.5e-05,
     "cache_hit": True},
    {"finish_reason": "arrêt", "response_id": None, "response_model": "m" * 300, "cost": None, "cache_hit": None},
])
def test_a_cache_hit_draft_is_the_one_the_general_path_makes(fields: dict[str, Any]) -> None:
    # A cache-hit DSPy call is recorded through draft.chat_outcome (no dict of fields, no loop):
    # its draft, size included, must be the one parsed_outcome makes from the same outcome.
    from historymw.capture import effective_now
    from historymw.draft import CallSpec, chat_outcome, parsed_outcome, usual_draft

    eff = effective_now()
    spec = CallSpec(None, "openai", "chat", "dspy", None)
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    general = usual_draft(spec, eff, (), {"model": "gpt-4o-mini", "messages": msgs, "temperature": 0.0})
    assert general is not None
    fast = dict(general)
    cut = {k: v[:256] if isinstance(v, str) else v for k, v in fields.items()}
    parsed_outcome(general, eff, 0.25, ["4", "é"], cut, {"dspy": (1, 2)})
    rest = chat_outcome(fast, eff, 0.25, ["4", "é"], *fields.values(), {"dspy": (1, 2)})
    assert rest is None
    assert fast == general


_LABELS = ("stop", "chatcmpl-1", "gpt-4o-mini")


@pytest.mark.parametrize("private", [None, {"dspy": (1, 2)}, {"dspy": (1, 2), "dspy_max": 5, "dspy_prompt": True}])
@pytest.mark.parametrize(("outputs", "fields", "scope", "taken"), [
    (["4"], (*_LABELS, 1.5e-05, True), {}, True),
    (["4"], (*_LABELS, None, False), {}, True),
    # More keys than the draft's first table holds: its growth is counted (see draft.table_growth).
    (["4"], (*_LABELS, 1.5e-05, True), {"session": "s-1", "tags": {"feature": "qa"}}, True),
    (["é"], (*_LABELS, 1.5e-05, True), {}, False),  # not ASCII: its size is asked
    (["4" * 1025], (*_LABELS, 1.5e-05, True), {}, False),  # clip() may change it
    (["4", "5"], (*_LABELS, 1.5e-05, True), {}, False),
    (["4"], ("stop", None, "gpt-4o-mini", 1.5e-05, True), {}, False),  # a label missing
    (["4"], ("stop", "chatcmpl-1", "m" * 300, 1.5e-05, True), {}, False),  # a label cut
    (["4"], (*_LABELS, 1, True), {}, False),  # an int cost
    (["4"], (*_LABELS, 1.5e-05, None), {}, False),
])
def test_the_text_outcome_sets_what_chat_outcome_sets(outputs: list[str], fields: tuple[Any, ...],
                                                      scope: dict[str, Any], taken: bool,
                                                      private: dict[str, Any] | None) -> None:
    # draft.text_outcome is chat_outcome in fewer steps for one ASCII text and its three labels
    # (a cache-hit DSPy call's outcome): its draft, size included, must be chat_outcome's; any
    # other outcome it leaves to chat_outcome, setting nothing.
    from historymw.capture import effective_now
    from historymw.draft import CallSpec, chat_outcome, text_outcome, usual_draft

    with hm.history(**scope):
        eff = effective_now()
    spec = CallSpec(None, "openai", "chat", "dspy", None)
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    draft = usual_draft(spec, eff, (), {"model": "gpt-4o-mini", "messages": msgs, "temperature": 0.0})
    assert draft is not None
    fast, general = dict(draft), dict(draft)
    assert text_outcome(fast, eff, 0.25, list(outputs), *fields, private) is taken
    if taken:
        assert chat_outcome(general, eff, 0.25, list(outputs), *fields, private) is None
        assert fast == general
    else:
        assert fast == draft


def test_the_text_outcome_leaves_a_record_over_its_limit_to_chat_outcome() -> None:
    from historymw.capture import effective_now
    from historymw.draft import CallSpec, text_outcome, usual_draft

    hm.configure(max_bytes=64 * 1024)
    eff = effective_now()
    spec = CallSpec(None, "openai", "chat", "dspy", None)
    empty = usual_draft(spec, eff, (), {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": ""}]})
    assert empty is not None
    # A request that leaves the outcome 500 bytes: a 1000-char output does not fit.
    msgs = [{"role": "user", "content": "x" * (eff.record_limit - empty["size_bytes"] - 500)}]
    draft = usual_draft(spec, eff, (), {"model": "gpt-4o-mini", "messages": msgs})
    assert draft is not None
    before = dict(draft)
    assert not text_outcome(draft, eff, 0.25, ["4" * 1000], *_LABELS, 1.5e-05, True)
    assert draft == before


_MSGS = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+2?"}]


@pytest.mark.parametrize("prompt", [False, True])
@pytest.mark.parametrize(("messages", "outcome", "scope", "taken"), [
    (_MSGS, ("4", *_LABELS, 1.5e-05, True), {}, True),
    (_MSGS[1:], ("4", *_LABELS, None, False), {}, True),
    (_MSGS, ("4", *_LABELS, 1.5e-05, True), {"session": "s-1", "tags": {"feature": "qa"}}, True),
    ([{"role": "user", "content": "x" * 5000}], ("4", *_LABELS, 1.5e-05, True), {}, True),
    ([{"role": "user", "content": "x" * 100_000}], ("4", *_LABELS, 1.5e-05, True), {}, False),  # cut
    (_MSGS, ("é", *_LABELS, 1.5e-05, True), {}, False),  # not ASCII: its size is asked
    (_MSGS, ("4" * 1025, *_LABELS, 1.5e-05, True), {}, False),  # clip() may change it
    (_MSGS, ("4", "stop", None, "gpt-4o-mini", 1.5e-05, True), {}, False),  # a label missing
    (_MSGS, ("4", "stop", "chatcmpl-1", "m" * 300, 1.5e-05, True), {}, False),  # a label cut
    (_MSGS, ("4", *_LABELS, 1, True), {}, False),  # an int cost
    ([{"role": "user", "content": ["a part"]}], ("4", *_LABELS, 1.5e-05, True), {}, False),
])
def test_the_one_step_cache_hit_draft_is_the_two_steps_draft(messages: list[Any], outcome: tuple[Any, ...],
                                                             scope: dict[str, Any], taken: bool,
                                                             prompt: bool) -> None:
    # DSPy's usual cache hit is drafted in one dict (`_text_draft`); the general way drafts it in
    # two steps, `usual_draft` then `text_outcome`: the same fields, the same size. Any other call
    # it leaves to `Recording.complete_chat`.
    from historymw.capture import effective_now
    from historymw.draft import text_outcome, usual_draft

    with hm.history(**scope):
        eff = effective_now()
    hit = hm_dspy._lm_spec(12345, "openai/gpt-4o-mini")
    spec = hit[4] if prompt else hit[0]
    params = {"temperature": 0.0, "max_tokens": 4000}
    state = [1.7e9, time.perf_counter(), None, False]
    text, *fields = outcome
    one_step = hm_dspy._text_draft(spec, eff, "gpt-4o-mini", messages, dict(params), state, text, *fields)
    assert (one_step is not None) is taken
    if one_step is None:
        return
    two_steps = usual_draft(spec, eff, ("gpt-4o-mini", messages), dict(params), state[0], None)
    assert two_steps is not None
    assert text_outcome(two_steps, eff, one_step["duration"], [text], *fields)
    assert one_step == two_steps
    assert one_step["_dspy_prompt"] is True if prompt else "_dspy_prompt" not in one_step


def test_dspys_deprecation_warnings_still_point_at_the_callers_line() -> None:
    # DSPy attributes its warnings to the first frame outside its own modules; were that
    # historymw's wrapper, Python's default filters would hide them from a user's script.
    lm = make_lm()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm(messages=[{"role": "user", "content": "a bare message"}])
    assert [w.filename for w in caught if w.category is DeprecationWarning] == [__file__]
