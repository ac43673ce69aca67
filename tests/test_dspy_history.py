"""DSPy's history lists with the integration installed: views of historymw's records that
DSPy code reads as it reads its own lists. Each idiom runs on a real DSPy program (dspy.LM
on LiteLLM's mock responses, or DSPy's DummyLM), plain and installed, and the two agree."""

from __future__ import annotations

import asyncio
import copy
import io
import os
import pickle
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="historymw-dspy-cache-"))

import dspy
import pytest
from _dspy_program import REPLY, Prog, make_lm
from dspy.clients import base_lm
from dspy.teleprompt.utils import get_token_usage
from dspy.utils.dummies import DummyLM

import historymw as hm
from historymw.integrations import dspy as hm_dspy
from historymw.integrations import dspy_history
from historymw.integrations import litellm as hm_litellm

# What differs by nature between two runs: the provider's response object (never kept by
# historymw), the time and the random id.
VOLATILE = ("response", "timestamp", "uuid")


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    hm_dspy.install()
    yield
    hm_litellm.flush(5.0)
    hm_dspy.uninstall()
    hm_litellm.uninstall()
    base_lm.GLOBAL_HISTORY.clear()  # DSPy's own list: what the views showed, now materialised


def comparable(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in entries]


def printed(show: Callable[..., None], n: int) -> str:
    out = io.StringIO()
    show(n, file=out)
    return re.sub(r"\[\d{4}-\d\d-\d\dT[\d:.]+\]", "[time]", out.getvalue())


def plain_and_installed(run: Callable[[], Any]) -> tuple[Any, Any]:
    """run() under DSPy's own history, then under historymw's views (fresh objects each time)."""
    hm_dspy.uninstall()
    base_lm.GLOBAL_HISTORY.clear()
    try:
        plain = run()
    finally:
        base_lm.GLOBAL_HISTORY.clear()
        hm.configure()
        hm_dspy.install()
    return plain, run()


# -- DSPy's readers agree with DSPy ---------------------------------------------------------


def test_entries_and_every_inspect_history_agree_with_dspy_content_included() -> None:
    def run() -> Any:
        lm, prog = make_lm(), Prog()
        with dspy.context(lm=lm):
            prog(question="What is 2+2?")
            prog.cot(question="And 3+3?")
            lm("a bare prompt")
            lm(messages=[{"role": "user", "content": "a bare message"}])
        views = (base_lm.GLOBAL_HISTORY, lm.history, prog.history, prog.cot.history, prog.cot.predict.history)
        return ([comparable(list(v)) for v in views], printed(dspy.inspect_history, 4),
                printed(lm.inspect_history, 4), printed(prog.inspect_history, 4),
                printed(prog.cot.predict.inspect_history, 4), get_token_usage(lm))

    plain, installed_ = plain_and_installed(run)
    assert [len(v) for v in installed_[0]] == [4, 4, 1, 2, 2]
    assert installed_ == plain
    assert installed_[5][0] > 0 and installed_[5][1] > 0  # get_token_usage is not (0, 0)
    assert "Respond with the corresponding output fields" in installed_[1]


def test_entries_are_built_once_per_record_and_shared_by_views() -> None:
    lm, prog = make_lm(), Prog()
    with dspy.context(lm=lm):
        prog(question="shared")
    first = prog.history[0]
    assert first is prog.cot.history[0] is prog.cot.predict.history[-1] is lm.history[-1]
    assert first is base_lm.GLOBAL_HISTORY[-1]
    assert first["response"] is None  # the provider's response object is never held
    assert first["outputs"] == [REPLY] and first["usage"]["total_tokens"] > 0
    assert uuid.UUID(first["uuid"])


def test_dummy_lm_get_convo_and_react_reading_lm_history() -> None:
    def search(query: str) -> str:
        """Search the web."""
        return f"results for {query}"

    def run() -> Any:
        lm = DummyLM([
            {"next_thought": "I should search", "next_tool_name": "search", "next_tool_args": {"query": "cats"}},
            {"next_thought": "Done", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "found", "answer": "cats are great"},
        ])
        react = dspy.ReAct("question -> answer", tools=[search])
        with dspy.context(lm=lm):
            answer = react(question="what about cats?").answer
        observation = lm.history[1]["messages"][-1]["content"]
        return answer, observation, lm.get_convo(-1), lm.get_convo(0), len(lm.history)

    plain, installed_ = plain_and_installed(run)
    assert installed_ == plain
    assert installed_[0] == "cats are great" and "results for cats" in installed_[1]
    assert installed_[4] == 3


def test_cache_hit_entry_matches_dspys() -> None:
    def run() -> Any:
        question = f"cached {uuid.uuid4()}"  # a miss, then a hit, in each run
        lm, cot = make_lm(cache=True), dspy.ChainOfThought("question -> answer")
        with dspy.context(lm=lm):
            cot(question=question)
            cot(question=question)
        return repr(comparable(list(lm.history))).replace(question, "Q"), get_token_usage(lm)

    plain, installed_ = plain_and_installed(run)
    assert installed_ == plain
    assert installed_[1] != (0, 0)


def test_failed_calls_are_kept_out_of_the_views_as_dspy_does() -> None:
    lm, ok = make_lm("litellm.RateLimitError"), make_lm()
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=ok):
        predict(question="fine")
    with dspy.context(lm=lm), pytest.raises(dspy.LMRateLimitError):
        predict(question="fails")
    assert len(lm.history) == 0 and len(predict.history) == 1 and len(base_lm.GLOBAL_HISTORY) == 1
    assert [r.status for r in hm.recent(10)] == ["ok", "error"]  # historymw still has the failure


def test_parallel_async_and_streaming_calls_reach_their_views() -> None:
    lm, prog = make_lm(), Prog()
    with dspy.context(lm=lm):
        results = dspy.Parallel(num_threads=4)([(prog, {"question": f"q{i}"}) for i in range(6)])
        assert [r.answer for r in results] == ["4"] * 6
        asyncio.run(prog.acall(question="async question"))

        async def stream() -> Any:
            final = None
            async for chunk in dspy.streamify(prog)(question="streamed question"):
                final = chunk
            return final

        assert asyncio.run(stream()).answer == "4"
    assert len(lm.history) == len(prog.history) == len(prog.cot.predict.history) == 8
    questions = sorted(e["messages"][-1]["content"].split("\n")[1] for e in prog.history)
    assert questions == sorted([f"q{i}" for i in range(6)] + ["async question", "streamed question"])


# -- DSPy's bounds and switches ---------------------------------------------------------------


def test_max_history_size_per_lm_and_module_as_in_force_at_each_call() -> None:
    lm, predict = make_lm(), dspy.Predict("question -> answer")
    with dspy.context(lm=lm, max_history_size=5):
        for i in range(10):
            predict(question=f"q{i}")
    assert len(lm.history) == len(predict.history) == 5
    assert predict.history[0]["messages"][-1]["content"].split("\n")[1] == "q5"
    with dspy.context(lm=lm, max_history_size=0):
        predict(question="not kept per LM or module")
    assert len(lm.history) == 5 and len(base_lm.GLOBAL_HISTORY) == 11


def test_disable_history_and_historymw_scopes_keep_calls_out() -> None:
    lm, predict = make_lm(), dspy.Predict("question -> answer")
    with dspy.context(lm=lm):
        with dspy.context(disable_history=True):
            predict(question="dspy says no")
        with hm.history(disable=True):
            predict(question="historymw says no")
        predict(question="kept")
    assert [e["messages"][-1]["content"].split("\n")[1] for e in lm.history] == ["kept"]


def test_global_history_clear_empties_what_inspect_history_prints() -> None:
    lm, predict = make_lm(), dspy.Predict("question -> answer")
    with dspy.context(lm=lm):
        predict(question="before clear")
        base_lm.GLOBAL_HISTORY.clear()
        assert len(base_lm.GLOBAL_HISTORY) == 0 and not base_lm.GLOBAL_HISTORY
        assert base_lm.GLOBAL_HISTORY == []
        assert "before clear" not in printed(dspy.inspect_history, 5)
        assert len(lm.history) == 1  # a watermark per view: the LM's own still shows it
        predict(question="after clear")
    text = printed(dspy.inspect_history, 5)
    assert "after clear" in text and "before clear" not in text
    lm.history.clear()
    assert lm.history == [] and len(predict.history) == 2


def test_a_view_shows_at_most_what_the_ring_holds() -> None:
    hm.configure(maxlen=4)
    lm = make_lm()
    with dspy.context(lm=lm):
        for i in range(10):
            lm(f"prompt {i}")
    assert [e["prompt"] for e in lm.history] == [f"prompt {i}" for i in range(6, 10)]
    assert len(hm.ring()) == 4


def test_long_prompt_keeps_head_and_tail_in_inspect_history() -> None:
    hm.configure(max_field_chars=20_000)
    lm, predict = make_lm(), dspy.Predict("context, question -> answer")
    with dspy.context(lm=lm):
        predict(context="x" * 30_000, question="the question at the end")
    out = printed(dspy.inspect_history, 1)
    assert "Respond with the corresponding output fields" in out and "the question at the end" in out
    assert re.search(r"x…\[truncated \d+ chars\]…x", out)


# -- lists a program writes, copies, uninstall -----------------------------------------------------


def test_appending_popping_and_deleting_like_a_list() -> None:
    lm = make_lm()
    with dspy.context(lm=lm):
        lm("one")
        lm.history.append({"prompt": "mine", "messages": None, "outputs": ["x"]})
        lm("two")
    assert [e["prompt"] for e in lm.history] == ["one", "mine", "two"]
    assert lm.history.pop(0)["prompt"] == "one"
    del lm.history[0]
    assert [e["prompt"] for e in lm.history] == ["two"] and len(base_lm.GLOBAL_HISTORY) == 2
    with pytest.raises(TypeError, match="view of historymw's records"):
        lm.history[0] = {}
    assert isinstance(lm.history, list) and lm.history[-1:] == list(lm.history)


def test_copies_start_empty_and_do_not_share_the_view() -> None:
    lm, prog = make_lm(), Prog()
    with dspy.context(lm=lm):
        prog(question="original")
    lm2, prog2 = lm.copy(), prog.deepcopy()
    assert lm2.history == [] and lm2.history is not lm.history and prog2.history == []
    with dspy.context(lm=lm2):
        prog2(question="copy")
    assert len(lm2.history) == len(prog2.history) == 1 and len(prog.history) == 1
    assert pickle.loads(pickle.dumps(lm2)).history == []  # a pickled LM starts empty too
    assert copy.copy(lm.history) == list(lm.history)


def test_uninstall_restores_plain_lists_with_what_the_views_showed() -> None:
    lm, prog = make_lm(), Prog()
    with dspy.context(lm=lm):
        prog(question="kept after uninstall")
    shown = (list(lm.history), list(prog.cot.history))
    hm_dspy.uninstall()
    assert not dspy_history.installed() and "history" not in vars(base_lm.BaseLM)
    assert type(lm.history) is list and type(prog.cot.history) is list
    assert type(base_lm.GLOBAL_HISTORY) is list and len(base_lm.GLOBAL_HISTORY) == 1
    assert (lm.history, prog.cot.history) == shown
    with dspy.context(lm=lm):
        prog(question="plain DSPy again")
    assert len(lm.history) == 2 and lm.history[-1]["response"] is not None


def test_cache_hits_of_a_bare_prompt_show_as_dspy_shows_them() -> None:
    """lm("...") answered from DSPy's cache takes the integration's quickest path: its entries in every
    view, and inspect_history, are still DSPy's own (the prompt, no messages)."""
    prompt = f"What is 2+2? A bare prompt, {id(object())}."  # DSPy's cache is shared by the two runs
    lm = dspy.LM("openai/gpt-4o-mini", mock_response="four", cache=True, num_retries=0)
    with hm.history(disable=True), dspy.context(disable_history=True):
        lm(prompt)  # the miss that fills the cache: what follows is cache hits in both runs
        lm(messages=[{"role": "user", "content": prompt}])

    def run() -> Any:
        for _ in range(2):
            lm(prompt)
            lm(messages=[{"role": "user", "content": prompt}])
        # (the last 4 of lm.history: the LM is shared by both runs, DSPy's own list keeps the first run's)
        return [comparable(list(v)[-4:]) for v in (base_lm.GLOBAL_HISTORY, lm.history)], printed(lm.inspect_history, 4)

    plain, installed_ = plain_and_installed(run)
    assert installed_ == plain
    assert [e["prompt"] for e in installed_[0][1]] == [prompt, None] * 2
    assert [e["usage"] for e in installed_[0][1]] == [{}] * 4  # cache hits
    assert [(r.messages, r.cache_hit) for r in hm.recent(4)] == [([{"role": "user", "content": prompt}], True)] * 4
