"""The LlamaIndex integration: the real OpenAI LLM and a Workflow, over HTTP to the local server."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import historymw as hm

pytest.importorskip("llama_index.core", reason="needs: pip install 'historymw[llamaindex]'")
pytest.importorskip("llama_index.llms.openai", reason="needs: pip install 'historymw[llamaindex]'")

from llama_index.core.llms import ChatMessage
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step
from llama_index.llms.openai import OpenAI

from historymw.integrations import llamaindex as hm_llamaindex
from historymw.integrations import openai as hm_openai

from .conftest import API_KEY, BEARER, no_secrets, records


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    hm_llamaindex.install()
    yield
    hm_llamaindex.uninstall()
    hm_openai.uninstall()
    assert not hm_llamaindex._RUNS


def llm(server: Any, **kw: Any) -> OpenAI:
    return OpenAI(model="gpt-4o-mini", api_base=server.openai_url, api_key=API_KEY, max_retries=0,
                  default_headers={"Authorization": BEARER}, **kw)


def msgs(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="Be kind."), ChatMessage(role="user", content=text)]


class Ask(Workflow):
    def __init__(self, llm: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.llm = llm

    @step
    async def ask(self, ev: StartEvent) -> StopEvent:
        reply = await self.llm.achat([ChatMessage(role="user", content=ev.question)])
        return StopEvent(result=reply.message.content)


def test_chat_is_one_record(server: Any) -> None:
    reply = llm(server).chat(msgs("hello index"), top_p=0.5)
    assert reply.message.content == "You said: hello index"
    [r] = records()
    assert (r.source, r.provider, r.model, r.operation) == ("llamaindex", "openai", "gpt-4o-mini", "chat")
    assert r.messages == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hello index"}]
    assert r.params == {"top_p": 0.5}  # what the call passed; LlamaIndex's events carry no LLM settings
    assert r.output_text == "You said: hello index" and r.finish_reason == "stop"
    assert (r.input_tokens, r.output_tokens, r.cache_read_input_tokens) == (4, 4, 2)
    no_secrets([r])


async def test_achat_stream_chat_and_complete(server: Any) -> None:
    model = llm(server)
    reply = await model.achat(msgs("async index"))
    assert reply.message.content == "You said: async index"
    pieces = [chunk.delta for chunk in model.stream_chat(msgs("stream index"))]
    assert "".join(p or "" for p in pieces) == "You said: stream index"
    done = model.complete("complete index")
    assert done.text == "You said: complete index"
    chatted, streamed, completed = records()
    assert chatted.output_text == "You said: async index"
    assert streamed.stream and streamed.output_text == "You said: stream index"
    assert streamed.time_to_first_token_s is not None and streamed.time_to_first_token_s <= streamed.duration_s
    assert completed.operation == "text_completion" and completed.output_text == "You said: complete index"
    assert completed.messages == [{"role": "user", "content": "complete index"}]


def test_errors_and_scopes(server: Any) -> None:
    model = llm(server)
    with pytest.raises(Exception) as info:
        model.chat(msgs("[[429]]"))
    with hm.history(disable=True):
        model.chat(msgs("hidden"))
    with hm.history(session="s-9"):
        model.chat(msgs("seen"))
    failed, seen = records()
    assert failed.status == "error" and failed.error_type == type(info.value).__name__ == "RateLimitError"
    assert failed.metadata["http_status"] == 429
    assert seen.session == "s-9"


def test_abandoned_stream(server: Any) -> None:
    gen = llm(server).stream_chat(msgs("one two three four"))
    next(gen)
    gen.close()
    [r] = records()
    assert r.status == "error" and r.error_type == "StreamAbandoned"


async def test_workflow_run_records_its_llm_call(server: Any) -> None:
    with hm.history(session="wf-1"):
        result = await Ask(llm=llm(server), timeout=30).run(question="from a workflow")
    assert result == "You said: from a workflow"
    [r] = records()
    assert r.session == "wf-1" and r.output_text == result


def test_stacked_on_the_openai_integration_is_one_record(server: Any) -> None:
    hm_openai.install()
    model = llm(server)
    model.chat(msgs("stacked index"))
    list(model.stream_chat(msgs("stacked stream")))
    with hm.history(policy="sample", sample_rate=0.0):
        model.chat(msgs("sampled out"))
    chat, stream = records()
    assert chat.source == stream.source == "llamaindex"
    assert (chat.server_address, chat.server_port) == ("127.0.0.1", server.port)
    assert chat.response_id is not None and chat.cache_read_input_tokens == 2
    assert stream.output_text == "You said: stacked stream" and stream.server_port == server.port


def test_uninstall_and_idempotent_install(server: Any) -> None:
    from llama_index.core.instrumentation import get_dispatcher

    n = len(get_dispatcher().event_handlers)
    hm_llamaindex.install()
    assert len(get_dispatcher().event_handlers) == n and hm_llamaindex.installed()
    hm_llamaindex.uninstall()
    assert len(get_dispatcher().event_handlers) == n - 1 and not hm_llamaindex.installed()
    llm(server).chat(msgs("after"))
    assert records() == []


async def test_workflow_run_leaves_nothing_alive(server: Any) -> None:
    hm_openai.install()
    gc.collect()
    gc.disable()
    try:
        model = llm(server)
        workflow = Ask(llm=model, timeout=30)
        handler = workflow.run(question="no refs")
        result = await handler
        refs = [weakref.ref(o) for o in (model, workflow, handler)]
        del model, workflow, handler
        assert result == "You said: no refs" and len(records()) == 1 and not hm_llamaindex._RUNS
        # Workflows, their run handlers and LLMs are cyclic by LlamaIndex's design: the collector
        # frees every one while historymw's records and handlers are all still there.
        gc.collect()
        assert [r() for r in refs] == [None] * len(refs)
    finally:
        gc.enable()


async def test_async_stacked_is_one_record(server: Any) -> None:
    hm_openai.install()
    model = llm(server)
    await model.achat(msgs("async stacked"))
    [r async for r in await model.astream_chat(msgs("async stream stacked"))]
    chat, stream = records()
    assert chat.source == stream.source == "llamaindex"
    assert chat.cache_read_input_tokens == 2 and chat.server_port == server.port
    assert stream.output_text == "You said: async stream stacked" and stream.stream
