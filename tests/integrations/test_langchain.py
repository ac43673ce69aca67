"""The LangChain/LangGraph integration: real ChatOpenAI/ChatAnthropic over HTTP to the local server."""

from __future__ import annotations

import contextvars
import gc
import weakref
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest

import historymw as hm

pytest.importorskip("langchain_core", reason="needs: pip install 'historymw[langchain]'")
pytest.importorskip("langchain_openai", reason="needs: pip install 'historymw[langchain]'")
pytest.importorskip("langgraph", reason="needs: pip install 'historymw[langchain]'")

from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages

from historymw.integrations import langchain as hm_langchain
from historymw.integrations import openai as hm_openai

from .conftest import API_KEY, BEARER, no_secrets, records


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    yield
    hm_langchain.uninstall()
    hm_openai.uninstall()
    assert not hm_langchain._RUNS


def chat(server: Any, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", base_url=server.openai_url, api_key=API_KEY, max_retries=0,
                      default_headers={"Authorization": BEARER}, **kw)


def test_per_call_handler_records_a_chat_model_run(server: Any) -> None:
    handler = hm_langchain.callback_handler()
    out = chat(server, temperature=0.3).invoke(
        [SystemMessage("Be brief."), HumanMessage("hello chain")],
        config={"callbacks": [handler], "tags": ["checkout"], "metadata": {"user": "u1", "api_key": API_KEY}})
    assert out.content == "You said: hello chain"
    [r] = records()
    assert (r.source, r.provider, r.model, r.operation) == ("langchain", "openai", "gpt-4o-mini", "chat")
    assert r.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello chain"}]
    assert r.params["temperature"] == 0.3
    assert r.output_text == "You said: hello chain" and r.finish_reason == "stop"
    assert (r.input_tokens, r.output_tokens) == (4, 4)
    assert r.tags["user"] == "u1" and r.tags["langchain_tags"] == ["checkout"]
    assert r.tags["api_key"] != API_KEY
    no_secrets([r])


def test_installed_globally_and_per_call_is_still_one_record(server: Any) -> None:
    hm_langchain.install()
    hm_langchain.install()
    model = chat(server)
    model.invoke("global one")
    model.invoke("global two", config={"callbacks": [hm_langchain.callback_handler()]})
    assert [r.output_text for r in records()] == ["You said: global one", "You said: global two"]


async def test_async_handler_ainvoke_and_astream(server: Any) -> None:
    model = chat(server)
    handler = hm_langchain.async_callback_handler()
    out = await model.ainvoke("async chain", config={"callbacks": [handler]})
    assert out.content == "You said: async chain"
    pieces = [c.content async for c in model.astream("async stream", config={"callbacks": [handler]})]
    assert "".join(pieces) == "You said: async stream"
    first, streamed = records()
    assert first.output_text == "You said: async chain" and not first.stream
    assert streamed.stream and streamed.output_text == "You said: async stream"
    assert streamed.time_to_first_token_s is not None and streamed.time_to_first_token_s <= streamed.duration_s


def test_stream_is_one_record_with_time_to_first_token(server: Any) -> None:
    hm_langchain.install()
    pieces = [c.content for c in chat(server, stream_usage=True).stream("stream this please")]
    assert "".join(pieces) == "You said: stream this please"
    [r] = records()
    assert r.stream and r.output_text == "You said: stream this please"
    assert r.input_tokens == 3 and r.output_tokens == 5
    assert r.time_to_first_token_s is not None


def test_errors_and_disabled_scope(server: Any) -> None:
    hm_langchain.install()
    model = chat(server)
    with pytest.raises(Exception) as info:
        model.invoke("[[429]]")
    with hm.history(disable=True):
        model.invoke("hidden")
    [r] = records()
    assert r.status == "error" and r.error_type == type(info.value).__name__
    assert "RateLimitError" in r.error_type and r.metadata["http_status"] == 429


def test_llm_runs_are_text_completions() -> None:
    hm_langchain.install()
    assert FakeListLLM(responses=["a fake completion"]).invoke("complete me") == "a fake completion"
    [r] = records()
    assert r.operation == "text_completion" and r.output_text == "a fake completion"
    assert r.messages == [{"role": "user", "content": "complete me"}]


def test_stacked_on_the_openai_integration_is_one_record_with_the_sdk_usage(server: Any) -> None:
    hm_openai.install()
    hm_langchain.install()
    model = chat(server, stream_usage=True)
    model.invoke("stacked call")
    list(model.stream("stacked stream"))
    with hm.history(disable=True):
        model.invoke("stacked hidden")
    with hm.history(policy="sample", sample_rate=0.0):
        model.invoke("stacked sampled out")
    called, streamed = records()
    for r, text in ((called, "stacked call"), (streamed, "stacked stream")):
        assert r.source == "langchain" and r.output_text == f"You said: {text}"
        assert r.cache_read_input_tokens == 1  # only the SDK's usage has it
        assert (r.server_address, r.server_port) == ("127.0.0.1", server.port)
    assert streamed.input_tokens == 2 and streamed.response_id is not None
    # Outside LangChain the SDK integration records on its own again.
    import openai

    openai.OpenAI(base_url=server.openai_url, api_key=API_KEY).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "direct"}])
    assert records()[-1].source == "openai" and len(records()) == 3


def test_uninstall_removes_the_hook(server: Any) -> None:
    from langchain_core.tracers import context

    n = len(context._configure_hooks)
    hm_langchain.install()
    assert len(context._configure_hooks) == n + 1
    hm_langchain.uninstall()
    assert len(context._configure_hooks) == n and not hm_langchain.installed()
    chat(server).invoke("after uninstall")
    assert records() == []


class State(TypedDict):
    messages: Annotated[list[Any], add_messages]


def _graph(model: Any) -> Any:
    def answer(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(State)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    return builder.compile(checkpointer=InMemorySaver())


def test_langgraph_thread_id_is_the_session(server: Any) -> None:
    hm_langchain.install()
    graph = _graph(chat(server))
    config = {"configurable": {"thread_id": "t-7"}, "metadata": {"team": "search"}}
    graph.invoke({"messages": [("user", "first turn")]}, config)
    graph.invoke({"messages": [("user", "second turn")]}, config)
    with hm.history(session="explicit"):
        graph.invoke({"messages": [("user", "third")]}, {"configurable": {"thread_id": "t-8"}})
    one, two, three = records()
    assert (one.session, two.session, three.session) == ("t-7", "t-7", "explicit")
    assert one.tags["langgraph_node"] == "answer" and one.tags["team"] == "search"
    assert two.messages[-1] == {"role": "user", "content": "second turn"} and len(two.messages) == 3


def test_langgraph_invocation_leaves_nothing_alive(server: Any) -> None:
    hm_openai.install()
    hm_langchain.install()
    gc.collect()
    gc.disable()
    try:
        model = chat(server)
        graph = _graph(model)
        state = graph.invoke({"messages": [("user", "no refs")]}, {"configurable": {"thread_id": "t-9"}})
        reply = state["messages"][-1]
        refs = [weakref.ref(o) for o in (model, graph, reply, model.root_client)]
        del model, graph, state, reply
        assert len(records()) == 1 and not hm_langchain._RUNS
        # LangChain's and LangGraph's objects are cyclic by their own design: the collector
        # frees every one of them while historymw's records, hook and handler are all still there.
        gc.collect()
        assert [r() for r in refs] == [None] * len(refs)
    finally:
        gc.enable()


def test_chat_anthropic_stacked_on_the_anthropic_integration(server: Any) -> None:
    pytest.importorskip("langchain_anthropic", reason="needs: pip install 'historymw[langchain]'")
    from langchain_anthropic import ChatAnthropic

    from historymw.integrations import anthropic as hm_anthropic

    hm_anthropic.install()
    hm_langchain.install()
    try:
        model = ChatAnthropic(model="claude-sonnet-4-6", base_url=server.anthropic_url, api_key=API_KEY,
                              max_retries=0)
        assert model.invoke("anthropic via langchain").content == "You said: anthropic via langchain"
    finally:
        hm_anthropic.uninstall()
    [r] = records()
    assert r.source == "langchain" and r.provider == "anthropic"
    assert r.finish_reason == "end_turn" and (r.input_tokens, r.cache_read_input_tokens) == (3, 1)


async def test_async_stacked_and_concurrent_runs_are_one_record_each(server: Any) -> None:
    import asyncio

    hm_openai.install()
    hm_langchain.install()
    model = chat(server, stream_usage=True)

    async def one(i: int) -> None:
        with hm.history(session=f"s{i}"):
            if i % 2:
                await model.ainvoke(f"task {i}")
            else:
                [c async for c in model.astream(f"task {i}")]
    await asyncio.gather(*(one(i) for i in range(4)))
    recs = records()
    assert sorted((r.session, r.source, r.output_text) for r in recs) == [
        (f"s{i}", "langchain", f"You said: task {i}") for i in range(4)]
    assert all(r.cache_read_input_tokens == 1 and r.server_port == server.port for r in recs)


def test_runs_whose_end_never_comes_are_bounded_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run LangChain never ends (a dropped stream, a crashed callback chain) is forgotten past the
    bound, counted as integration_timeout; a later end for it records nothing, the others still record."""
    import uuid

    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    monkeypatch.setattr(hm_langchain._RUNS, "limit", 3)
    handler = hm_langchain.callback_handler()
    before = hm.stats().dropped_by_reason.get("integration_timeout", 0)
    ids = [uuid.uuid4() for _ in range(5)]
    meta = {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini"}
    for i, run_id in enumerate(ids):  # each in a context of its own, as concurrent requests are
        contextvars.copy_context().run(handler.on_chat_model_start, {}, [[HumanMessage(f"run {i}")]],
                                       run_id=run_id, metadata=meta)
    assert len(hm_langchain._RUNS) == 3
    assert hm.stats().dropped_by_reason.get("integration_timeout", 0) - before == 2
    result = LLMResult(generations=[[ChatGeneration(message=AIMessage("done"))]])
    for run_id in ids:
        handler.on_llm_end(result, run_id=run_id)
    assert [r.messages[-1]["content"] for r in records()] == ["run 2", "run 3", "run 4"]
    assert all(r.provider == "openai" and r.output_text == "done" for r in records())


def test_errors_only_keeps_a_failed_run_with_its_provider(server: Any) -> None:
    handler = hm_langchain.callback_handler()
    model = ChatOpenAI(model="gpt-4o-mini", base_url=server.openai_url + "/nowhere", api_key=API_KEY,
                       max_retries=0)
    with hm.history(policy="errors"):
        chat(server).invoke("kept only if it fails", config={"callbacks": [handler]})
        with pytest.raises(Exception, match="Not Found"):
            model.invoke("this one fails", config={"callbacks": [handler]})
    [r] = records()
    assert (r.status, r.provider, r.source) == ("error", "openai", "langchain")
    assert r.messages == [{"role": "user", "content": "this one fails"}]
    no_secrets([r])


def test_provider_names_of_any_length_keep_memory_bounded() -> None:
    """The provider comes from a run's metadata (ls_provider): runs naming ever new, huge providers
    keep at most the clipped names in the specs' cache, not the names they were given."""
    import tracemalloc
    import uuid

    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    hm.configure(maxlen=10)
    handler = hm_langchain.callback_handler()
    result = LLMResult(generations=[[ChatGeneration(message=AIMessage("done"))]])
    tracemalloc.start()
    try:
        for i in range(300):
            run_id = uuid.uuid4()
            meta = {"ls_provider": f"{i:04d}" + "p" * 100_000, "ls_model_name": "m"}
            handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run_id, metadata=meta)
            handler.on_llm_end(result, run_id=run_id)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 4 * 2**20, held  # 300 names of 100 KB would be 29 MiB
    assert len(records()) == 10 and all(len(r.provider or "") <= 256 for r in records())
