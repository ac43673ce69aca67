"""The OpenAI SDK integration, against the real SDK talking HTTP to the local server."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import historymw as hm

openai = pytest.importorskip("openai", reason="needs: pip install 'historymw[openai]'")

from historymw.integrations import openai as hm_openai  # noqa: E402

from .conftest import API_KEY, BEARER, HEADER_KEY, no_secrets, records, user  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    hm_openai.install()
    yield
    hm_openai.uninstall()


def client(server: Any, cls: Any = None) -> Any:
    cls = cls or openai.OpenAI
    return cls(base_url=server.openai_url, api_key=API_KEY, max_retries=0,
               default_headers={"Authorization": BEARER, "X-Api-Key": HEADER_KEY})


def test_chat_completion_is_one_record_with_usage_server_and_no_key(server: Any) -> None:
    c = client(server)
    resp = c.chat.completions.create(model="gpt-4o-mini", messages=user("hello world"), temperature=0.2,
                                     extra_headers={"Authorization": BEARER}, extra_body={"api_key": API_KEY})
    assert resp.choices[0].message.content == "You said: hello world"
    [r] = records()
    assert (r.provider, r.source, r.model, r.operation, r.status) == ("openai", "openai", "gpt-4o-mini", "chat", "ok")
    assert r.messages == user("hello world")
    assert r.params == {"temperature": 0.2}
    assert r.output_text == "You said: hello world"
    assert r.finish_reason == "stop"
    assert (r.input_tokens, r.output_tokens, r.total_tokens) == (2, 4, 6)
    assert r.cache_read_input_tokens == 1
    assert r.response_id == resp.id
    assert (r.server_address, r.server_port) == ("127.0.0.1", server.port)
    no_secrets([r])


def test_responses_api_reads_instructions_reasoning_and_output(server: Any) -> None:
    c = client(server)
    resp = c.responses.create(model="o3-mini", input="what is up", instructions="Answer briefly.")
    assert resp.output_text == "You said: what is up"
    [r] = records()
    assert r.output_text == "You said: what is up"
    assert r.system_instructions == ["Answer briefly."]
    assert r.messages == user("what is up")
    assert r.reasoning_tokens == 2
    assert r.cache_read_input_tokens == r.input_tokens // 2
    assert r.finish_reason == "completed"
    assert r.response_id == resp.id


def test_tool_calls_and_tool_definitions(server: Any) -> None:
    resp = client(server).chat.completions.create(model="gpt-4o-mini", messages=user("Paris"), tools=TOOLS)
    assert resp.choices[0].message.tool_calls
    [r] = records()
    assert r.tool_definitions == TOOLS
    assert "tools" not in r.params
    assert r.finish_reason == "tool_calls"
    assert r.outputs[0]["tool_calls"][0]["function"]["name"] == "get_weather"


async def test_async_client_and_async_stream(server: Any) -> None:
    c = client(server, openai.AsyncOpenAI)
    resp = await c.chat.completions.create(model="gpt-4o-mini", messages=user("async one"))
    assert resp.choices[0].message.content == "You said: async one"
    stream = await c.chat.completions.create(model="gpt-4o-mini", messages=user("async two"), stream=True,
                                             stream_options={"include_usage": True})
    text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == "You said: async two"
    first, second = records()
    assert first.output_text == "You said: async one" and not first.stream
    assert second.stream and second.output_text == text
    assert second.input_tokens == 2 and second.output_tokens == 4
    assert second.time_to_first_token_s is not None and second.time_to_first_token_s <= second.duration_s


def test_sync_stream_is_one_record_with_usage_and_time_to_first_token(server: Any) -> None:
    c = client(server)
    stream = c.chat.completions.create(model="gpt-4o-mini", messages=user("stream me please"), stream=True,
                                       stream_options={"include_usage": True})
    assert isinstance(stream, openai.Stream) or hasattr(stream, "response")
    pieces = [ch.choices[0].delta.content for ch in stream if ch.choices and ch.choices[0].delta.content]
    [r] = records()
    assert r.stream and r.status == "ok"
    assert r.output_text == "".join(pieces) == "You said: stream me please"
    assert (r.input_tokens, r.output_tokens, r.cache_read_input_tokens) == (3, 5, 1)
    assert r.finish_reason == "stop"
    assert 0 <= (r.time_to_first_token_s or -1) <= r.duration_s


def test_stream_helpers_of_chat_and_responses(server: Any) -> None:
    c = client(server)
    with c.chat.completions.stream(model="gpt-4o-mini", messages=user("helper chat"),
                                   stream_options={"include_usage": True}) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content == "You said: helper chat"
    with c.responses.stream(model="gpt-4o-mini", input="helper responses") as rs:
        done = rs.get_final_response()
    assert done.output_text == "You said: helper responses"
    chat, resp = records()
    assert chat.stream and chat.output_text == "You said: helper chat" and chat.input_tokens == 2
    assert resp.stream and resp.output_text == "You said: helper responses"
    assert resp.input_tokens == 2 and resp.response_id == done.id and resp.finish_reason == "completed"


def test_early_close_and_abandoned_streams_are_recorded(server: Any) -> None:
    c = client(server)
    stream = c.chat.completions.create(model="gpt-4o-mini", messages=user("one two three four"), stream=True)
    for _ in range(3):  # the role chunk, "You", " said:"
        next(stream)
    stream.close()
    [closed] = records()
    assert closed.status == "error" and closed.error_type == "StreamAbandoned"
    assert closed.output_text == "You said:"
    dropped = c.chat.completions.create(model="gpt-4o-mini", messages=user("never read"), stream=True)
    del dropped
    assert records()[-1].error_type == "StreamAbandoned"
    assert len(records()) == 2


def test_with_raw_response(server: Any) -> None:
    raw = client(server).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=user("raw"))
    assert raw.http_response.status_code == 200
    parsed = raw.parse()
    [r] = records()
    assert r.output_text == parsed.choices[0].message.content == "You said: raw"
    assert r.input_tokens == 1


@pytest.mark.parametrize(("marker", "error_type", "status"),
                         [("[[429]]", "RateLimitError", 429), ("[[500]]", "InternalServerError", 500)])
def test_errors_keep_the_sdk_type_and_http_status(server: Any, marker: str, error_type: str, status: int) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client(server).chat.completions.create(model="gpt-4o-mini", messages=user(marker))
    assert info.value.status_code == status
    [r] = records()
    assert (r.status, r.error_type, r.metadata["http_status"]) == ("error", error_type, status)


def test_connection_cut_mid_stream_is_an_error_record(server: Any) -> None:
    stream = client(server).chat.completions.create(model="gpt-4o-mini", messages=user("a b c d [[cut]]"),
                                                    stream=True)
    with pytest.raises(Exception) as info:
        for _ in stream:
            pass
    [r] = records()
    assert r.status == "error" and r.error_type == type(info.value).__name__
    assert r.output_text == "You said:"


def test_scopes_disable_and_session(server: Any) -> None:
    c = client(server)
    with hm.history(disable=True):
        c.chat.completions.create(model="gpt-4o-mini", messages=user("hidden"))
    with hm.history(session="u-42", tags={"feature": "search"}):
        c.chat.completions.create(model="gpt-4o-mini", messages=user("seen"))
    with hm.history(policy="errors"):
        c.chat.completions.create(model="gpt-4o-mini", messages=user("fine"))
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="gpt-4o-mini", messages=user("[[429]]"))
    seen, failed = records()
    assert (seen.session, seen.tags) == ("u-42", {"feature": "search"})
    assert failed.status == "error" and failed.messages == user("[[429]]")


def test_install_is_idempotent_and_uninstall_restores(server: Any) -> None:
    from openai.resources.chat.completions.completions import AsyncCompletions, Completions
    from openai.resources.responses.responses import Responses

    wrapped = Completions.create
    hm_openai.install()
    assert Completions.create is wrapped and hm_openai.installed()
    client(server).chat.completions.create(model="gpt-4o-mini", messages=user("once"))
    assert len(records()) == 1
    hm_openai.uninstall()
    assert not hm_openai.installed()
    for cls in (Completions, AsyncCompletions, Responses):
        assert not hasattr(cls.create, "__historymw_original__")
    client(server).chat.completions.create(model="gpt-4o-mini", messages=user("unrecorded"))
    assert len(records()) == 1


def test_no_client_or_response_is_kept_alive(server: Any) -> None:
    gc.collect()
    gc.disable()
    try:
        c = client(server)
        resp = c.chat.completions.create(model="gpt-4o-mini", messages=user("refs"))
        stream = c.chat.completions.create(model="gpt-4o-mini", messages=user("refs stream"), stream=True)
        chunks = list(stream)
        acyclic = [weakref.ref(o) for o in (resp, chunks[0], stream, stream._inner)]
        held = weakref.ref(c)
        del resp, stream, chunks
        # Freed by reference counting alone: historymw holds none of them.
        assert [r() for r in acyclic] == [None] * len(acyclic)
        del c
        assert len(records()) == 2  # the records live on
        # The client is cyclic by its own design (resources point back at it): the collector
        # frees it while historymw's records and state are all still there.
        gc.collect()
        assert held() is None
    finally:
        gc.enable()


def test_async_in_many_tasks_each_its_own_scope(server: Any) -> None:
    async def main() -> None:
        c = client(server, openai.AsyncOpenAI)

        async def one(i: int) -> None:
            with hm.history(session=f"s{i}"):
                await c.chat.completions.create(model="gpt-4o-mini", messages=user(f"task {i}"))
        await asyncio.gather(*(one(i) for i in range(4)))
    asyncio.run(main())
    assert sorted((r.session, r.output_text) for r in records()) == [
        (f"s{i}", f"You said: task {i}") for i in range(4)]


def test_a_reloaded_integration_module_records_once_and_uninstalls(server: Any) -> None:
    """A hot reloader or a test re-imports the module (importlib.reload) and installs again: one
    record per call, and uninstall() still puts the SDK's own method back."""
    import importlib

    from openai.resources.chat.completions.completions import Completions

    hm_openai.uninstall()
    own = Completions.create
    hm_openai.install()
    module = importlib.reload(hm_openai)
    module.install()
    client(server).chat.completions.create(model="gpt-4o-mini", messages=user("reloaded"))
    assert len(records()) == 1
    assert Completions.create.__historymw_original__ is own
    module.uninstall()
    assert Completions.create is own and not module.installed()
