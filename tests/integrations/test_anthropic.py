"""The Anthropic SDK integration, against the real SDK talking HTTP to the local server."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import historymw as hm

anthropic = pytest.importorskip("anthropic", reason="needs: pip install 'historymw[anthropic]'")

from historymw.integrations import anthropic as hm_anthropic  # noqa: E402

from .conftest import API_KEY, BEARER, HEADER_KEY, no_secrets, records, user  # noqa: E402

MODEL = "claude-sonnet-4-6"
TOOLS = [{"name": "get_weather", "description": "Weather of a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    hm_anthropic.install()
    yield
    hm_anthropic.uninstall()


def client(server: Any, cls: Any = None) -> Any:
    cls = cls or anthropic.Anthropic
    return cls(base_url=server.anthropic_url, api_key=HEADER_KEY, max_retries=0,
               default_headers={"Authorization": BEARER, "X-Other-Key": API_KEY})


def test_create_with_system_prompt_cache_tokens_and_stop_reason(server: Any) -> None:
    system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    msg = client(server).messages.create(model=MODEL, max_tokens=64, system=system, messages=user("hello there"),
                                         extra_headers={"x-api-key": HEADER_KEY})
    assert msg.content[0].text == "You said: hello there"
    [r] = records()
    assert (r.provider, r.source, r.model, r.status) == ("anthropic", "anthropic", MODEL, "ok")
    assert r.system_instructions == ["You are terse."]
    assert r.params == {"max_tokens": 64}
    assert r.output_text == "You said: hello there" and r.finish_reason == "end_turn"
    assert (r.input_tokens, r.output_tokens) == (5, 4)
    assert (r.cache_read_input_tokens, r.cache_creation_input_tokens) == (2, 3)
    assert (r.server_address, r.server_port) == ("127.0.0.1", server.port)
    assert r.response_id == msg.id
    no_secrets([r])


def test_tool_use_blocks(server: Any) -> None:
    msg = client(server).messages.create(model=MODEL, max_tokens=64, messages=user("Oslo"), tools=TOOLS)
    assert msg.stop_reason == "tool_use"
    [r] = records()
    assert r.tool_definitions == TOOLS
    assert r.finish_reason == "tool_use"
    assert r.outputs[0]["type"] == "tool_use" and r.outputs[0]["input"] == {"city": "Oslo"}


def test_create_stream_true_is_one_record(server: Any) -> None:
    stream = client(server).messages.create(model=MODEL, max_tokens=64, messages=user("stream it now"), stream=True)
    events = [e.type for e in stream]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    [r] = records()
    assert r.stream and r.status == "ok"
    assert r.output_text == "You said: stream it now"
    assert (r.input_tokens, r.output_tokens, r.cache_read_input_tokens) == (3, 5, 1)
    assert r.finish_reason == "end_turn"
    assert 0 <= (r.time_to_first_token_s or -1) <= r.duration_s


def test_messages_stream_helper_sync_and_tool_use(server: Any) -> None:
    c = client(server)
    with c.messages.stream(model=MODEL, max_tokens=64, messages=user("helper text")) as s:
        text = "".join(s.text_stream)
    assert text == "You said: helper text"
    with c.messages.stream(model=MODEL, max_tokens=64, messages=user("Rome"), tools=TOOLS) as s:
        final = s.get_final_message()
    assert final.content[0].input == {"city": "Rome"}
    plain, tool = records()
    assert plain.stream and plain.output_text == text and plain.output_tokens == 4
    assert plain.time_to_first_token_s is not None
    assert tool.finish_reason == "tool_use"
    assert tool.outputs == [{"type": "tool_use", "id": final.content[0].id, "name": "get_weather",
                             "input_json": '{"city": "Rome"}'}]


async def test_async_create_and_async_stream_helper(server: Any) -> None:
    c = client(server, anthropic.AsyncAnthropic)
    msg = await c.messages.create(model=MODEL, max_tokens=64, messages=user("async hi"))
    assert msg.content[0].text == "You said: async hi"
    async with c.messages.stream(model=MODEL, max_tokens=64, messages=user("async stream")) as s:
        text = "".join([t async for t in s.text_stream])
    stream = await c.messages.create(model=MODEL, max_tokens=64, messages=user("async raw"), stream=True)
    kinds = [e.type async for e in stream]
    assert kinds[-1] == "message_stop"
    one, two, three = records()
    assert one.output_text == "You said: async hi" and not one.stream
    assert two.output_text == text == "You said: async stream" and two.stream
    assert three.output_text == "You said: async raw" and three.input_tokens == 2


def test_leaving_a_stream_early_is_recorded_abandoned(server: Any) -> None:
    with client(server).messages.stream(model=MODEL, max_tokens=64, messages=user("a b c d e")) as s:
        for _ in s.text_stream:
            break
    [r] = records()
    assert r.status == "error" and r.error_type == "StreamAbandoned" and r.output_text == "You"


@pytest.mark.parametrize(("marker", "error_type", "status"),
                         [("[[429]]", "RateLimitError", 429), ("[[500]]", "InternalServerError", 500)])
def test_errors_keep_the_sdk_type_and_http_status(server: Any, marker: str, error_type: str, status: int) -> None:
    with pytest.raises(anthropic.APIStatusError):
        client(server).messages.create(model=MODEL, max_tokens=64, messages=user(marker))
    with pytest.raises(anthropic.APIStatusError):
        with client(server).messages.stream(model=MODEL, max_tokens=64, messages=user(marker)):
            pass
    for r in records():
        assert (r.status, r.error_type, r.metadata["http_status"]) == ("error", error_type, status)
    assert len(records()) == 2


def test_connection_cut_mid_stream(server: Any) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the transport's own error type
        for _ in client(server).messages.create(model=MODEL, max_tokens=64, messages=user("a b c [[cut]]"),
                                                stream=True):
            pass
    [r] = records()
    assert r.status == "error" and r.output_text == "You said:"


def test_disabled_scope_and_uninstall(server: Any) -> None:
    from anthropic.resources.messages.messages import AsyncMessages, Messages

    c = client(server)
    with hm.history(disable=True):
        c.messages.create(model=MODEL, max_tokens=64, messages=user("hidden"))
    with hm.history(session="s-1"):
        c.messages.create(model=MODEL, max_tokens=64, messages=user("seen"))
    hm_anthropic.install()  # idempotent
    c.messages.create(model=MODEL, max_tokens=64, messages=user("again"))
    assert [r.session for r in records()] == ["s-1", None]
    hm_anthropic.uninstall()
    assert not hm_anthropic.installed()
    for fn in (Messages.create, Messages.stream, AsyncMessages.create, AsyncMessages.stream):
        assert not hasattr(fn, "__historymw_original__")
    c.messages.create(model=MODEL, max_tokens=64, messages=user("after"))
    assert len(records()) == 2


def test_no_message_or_stream_is_kept_alive(server: Any) -> None:
    gc.collect()
    gc.disable()
    try:
        c = client(server)
        msg = c.messages.create(model=MODEL, max_tokens=64, messages=user("refs"))
        with c.messages.stream(model=MODEL, max_tokens=64, messages=user("refs stream")) as s:
            s.get_final_message()
        message, held = weakref.ref(msg), [weakref.ref(s), weakref.ref(c)]
        del msg
        assert message() is None  # freed by reference counting alone
        del c, s
        assert len(records()) == 2
        # The client and the MessageStream (its event generator points back at it) are cyclic by
        # the SDK's design: the collector frees them while historymw's records are all still there.
        gc.collect()
        assert [r() for r in held] == [None, None]
    finally:
        gc.enable()


def test_with_raw_response(server: Any) -> None:
    raw = client(server).messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=user("raw one"))
    assert raw.http_response.status_code == 200
    msg = raw.parse()
    [r] = records()
    assert r.output_text == msg.content[0].text == "You said: raw one" and r.input_tokens == 2
