"""@recorded and call(): what gets recorded, and that the call itself is untouched."""

from __future__ import annotations

import asyncio
import gc
import threading
from types import SimpleNamespace
from typing import Any

import pytest

import historymw as hm

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]


def openai_response(text: str = "4", *, as_dict: bool = False) -> Any:
    data = {
        "id": "chatcmpl-123",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "four"}, "finish_reason": "length"},
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }
    if as_dict:
        return data

    def ns(obj: Any) -> Any:
        if isinstance(obj, dict):
            return SimpleNamespace(**{k: ns(v) for k, v in obj.items()})
        if isinstance(obj, list):
            return [ns(v) for v in obj]
        return obj

    return ns(data)


def test_sync_call_is_recorded_with_request_and_str_result() -> None:
    @hm.recorded(provider="openai")
    def ask(model: str, messages: list[dict[str, str]], **params: Any) -> str:
        return "4"

    assert ask("gpt-4o-mini", MSGS, temperature=0.2, max_tokens=5) == "4"
    [rec] = hm.recent(5)
    assert rec.provider == "openai" and rec.model == "gpt-4o-mini" and rec.operation == "chat"
    assert rec.messages == MSGS
    assert rec.params == {"temperature": 0.2, "max_tokens": 5}
    assert rec.output_text == "4" and rec.status == "ok" and rec.source == "decorator"
    assert rec.duration_s >= 0 and rec.ended_at >= rec.started_at
    assert rec.started_at.tzinfo is not None
    assert len(rec.id) == 32


def test_keyword_arguments_and_methods_are_bound_by_name() -> None:
    class Client:
        @hm.recorded(provider="p")
        def complete(self, model: str, messages: Any, top_p: float = 1.0) -> str:
            return "ok"

    Client().complete(model="m1", messages=MSGS, top_p=0.5)
    Client().complete("m2", MSGS, 0.7)
    a, b = hm.recent(2)
    assert (a.model, a.params) == ("m1", {"top_p": 0.5})
    assert (b.model, b.params) == ("m2", {"top_p": 0.7})
    assert a.messages == b.messages == MSGS


@pytest.mark.parametrize("as_dict", [False, True])
def test_openai_style_result_object_or_dict(as_dict: bool) -> None:
    response = openai_response(as_dict=as_dict)

    @hm.recorded(provider="openai")
    def ask(model: str, messages: Any) -> Any:
        return response

    assert ask("gpt-4o-mini", MSGS) is response  # passes through unchanged
    [rec] = hm.recent(1)
    assert rec.output_text == "4"
    assert rec.finish_reason == "stop"
    assert (rec.input_tokens, rec.output_tokens, rec.total_tokens) == (12, 1, 13)
    assert rec.response_id == "chatcmpl-123" and rec.response_model == "gpt-4o-mini-2024-07-18"
    assert [o["content"] for o in rec.outputs] == ["4", "four"]
    assert rec.outputs[1]["finish_reason"] == "length"


def test_anthropic_style_message() -> None:
    msg = {"id": "msg_1", "model": "claude-x", "stop_reason": "end_turn",
           "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}],
           "usage": {"input_tokens": 7, "output_tokens": 2}}

    @hm.recorded(provider="anthropic")
    def ask(model: str, messages: Any) -> Any:
        return msg

    ask("claude-x", MSGS)
    [rec] = hm.recent(1)
    assert rec.output_text == "Hello there" and rec.finish_reason == "end_turn"
    assert (rec.input_tokens, rec.output_tokens, rec.total_tokens) == (7, 2, 9)


def test_extract_reads_any_result_shape() -> None:
    @hm.recorded(provider="custom", extract=lambda r: {"output_text": r["answer"], "input_tokens": r["n"], "cost": 0.5})
    def ask(model: str, messages: Any) -> dict[str, Any]:
        return {"answer": "yes", "n": 3}

    ask("m", MSGS)
    [rec] = hm.recent(1)
    assert (rec.output_text, rec.input_tokens, rec.cost) == ("yes", 3, 0.5)


def test_exception_passes_through_unchanged_and_is_recorded() -> None:
    err = ValueError("rate limited")

    @hm.recorded
    def ask(model: str, messages: Any) -> str:
        raise err

    with pytest.raises(ValueError) as info:
        ask("m", MSGS)
    assert info.value is err
    [rec] = hm.recent(1)
    assert rec.status == "error" and rec.error_type == "ValueError" and rec.error_message == "rate limited"
    assert rec.messages == MSGS


async def test_async_call() -> None:
    @hm.recorded(provider="openai")
    async def ask(model: str, messages: Any) -> str:
        await asyncio.sleep(0)
        return "async answer"

    assert await ask("m", MSGS) == "async answer"
    [rec] = hm.recent(1)
    assert rec.output_text == "async answer" and rec.status == "ok"


async def test_async_exception_and_cancellation() -> None:
    @hm.recorded
    async def fails(model: str, messages: Any) -> str:
        raise KeyError("x")

    @hm.recorded
    async def slow(model: str, messages: Any) -> str:
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(KeyError):
        await fails("m", MSGS)
    task = asyncio.ensure_future(slow("m", MSGS))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    a, b = hm.recent(2)
    assert a.error_type == "KeyError"
    assert b.error_type == "CancelledError" and b.status == "error"


def test_generator_stream_is_one_record_with_joined_text_and_ttft() -> None:
    @hm.recorded(provider="p")
    def stream(model: str, messages: Any) -> Any:
        yield "Hel"
        yield "lo"
        yield {"choices": [{"delta": {"content": "!"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 3}}

    chunks = list(stream("m", MSGS))
    assert chunks[:2] == ["Hel", "lo"]
    [rec] = hm.recent(5)
    assert rec.stream and rec.output_text == "Hello!" and rec.finish_reason == "stop"
    assert rec.time_to_first_token_s is not None and 0 <= rec.time_to_first_token_s <= rec.duration_s
    assert rec.total_tokens == 6


def test_stream_failing_midway_is_recorded_with_partial_text() -> None:
    @hm.recorded
    def stream(model: str, messages: Any) -> Any:
        yield "part"
        raise ConnectionError("dropped")

    got = []
    with pytest.raises(ConnectionError):
        for c in stream("m", MSGS):
            got.append(c)
    assert got == ["part"]
    [rec] = hm.recent(1)
    assert rec.status == "error" and rec.error_type == "ConnectionError" and rec.output_text == "part"


def test_stream_abandoned_by_close_or_garbage_collection() -> None:
    @hm.recorded
    def stream(model: str, messages: Any) -> Any:
        yield "a"
        yield "b"
        yield "c"

    s = stream("m", MSGS)
    next(s)
    s.close()
    s2 = stream("m", MSGS)
    next(s2)
    next(s2)
    del s2
    gc.collect()
    a, b = hm.recent(2)
    assert a.error_type == b.error_type == "StreamAbandoned"
    assert a.output_text == "a" and b.output_text == "ab"
    assert "after 2 chunks" in (b.error_message or "")


async def test_async_generator_stream_and_abandonment() -> None:
    @hm.recorded
    async def stream(model: str, messages: Any) -> Any:
        for piece in ("x", "y", "z"):
            yield piece

    assert [c async for c in stream("m", MSGS)] == ["x", "y", "z"]
    agen = stream("m", MSGS)
    assert await agen.__anext__() == "x"
    await agen.aclose()
    a, b = hm.recent(2)
    assert (a.output_text, a.status) == ("xyz", "ok")
    assert (b.output_text, b.error_type) == ("x", "StreamAbandoned")


def test_client_stream_object_returned_for_stream_true_is_wrapped() -> None:
    class ClientStream:
        def __init__(self) -> None:
            self.items = iter([{"choices": [{"delta": {"content": "to"}}]},
                               {"choices": [{"delta": {"content": "ken"}, "finish_reason": "stop"}]}])
            self.response_headers = {"x": "1"}

        def __iter__(self) -> ClientStream:
            return self

        def __next__(self) -> Any:
            return next(self.items)

    @hm.recorded
    def create(model: str, messages: Any, stream: bool = False) -> Any:
        return ClientStream()

    result = create("m", MSGS, stream=True)
    assert result.response_headers == {"x": "1"}  # attributes still reachable
    assert len(list(result)) == 2
    [rec] = hm.recent(1)
    assert rec.stream and rec.output_text == "token" and rec.finish_reason == "stop"


def test_manual_call_context_manager() -> None:
    with hm.call(provider="anthropic", model="claude", messages=MSGS, params={"max_tokens": 10}) as c:
        assert c.recording
        c.output(text="answer", usage={"input_tokens": 3, "output_tokens": 5}, finish_reason="end_turn")
        c.set(cache_hit=True, response_id="r-1", metadata={"route": "a"})
    [rec] = hm.recent(1)
    assert (rec.provider, rec.model, rec.source) == ("anthropic", "claude", "manual")
    assert rec.params == {"max_tokens": 10}
    assert (rec.output_text, rec.input_tokens, rec.output_tokens, rec.total_tokens) == ("answer", 3, 5, 8)
    assert rec.cache_hit is True and rec.response_id == "r-1" and rec.metadata == {"route": "a"}


def test_manual_call_records_and_reraises_exception() -> None:
    with pytest.raises(TimeoutError):
        with hm.call(model="m", messages=MSGS):
            raise TimeoutError("slow")
    [rec] = hm.recent(1)
    assert rec.error_type == "TimeoutError"


def test_manual_call_started_in_one_thread_finished_in_another_keeps_the_scope() -> None:
    with hm.history(session="s-1"):
        c = hm.call(model="m", messages=MSGS, source="custom").start()
    done = threading.Event()

    def finish() -> None:
        c.output(result=openai_response("threaded", as_dict=True))
        c.end()
        done.set()

    threading.Thread(target=finish).start()
    assert done.wait(5)
    [rec] = hm.recent(1)
    assert (rec.session, rec.output_text, rec.source) == ("s-1", "threaded", "custom")


def test_manual_stream_chunks() -> None:
    with hm.call(model="m", messages=MSGS) as c:
        for piece in ("a", "b"):
            c.chunk(piece)
    [rec] = hm.recent(1)
    assert rec.stream and rec.output_text == "ab"


def test_prompt_string_becomes_a_user_message() -> None:
    @hm.recorded
    def complete(model: str, prompt: str) -> str:
        return "done"

    complete("m", "Say hi")
    [rec] = hm.recent(1)
    assert rec.messages == [{"role": "user", "content": "Say hi"}]


def test_a_system_keyword_is_kept_as_system_instructions_not_as_a_param() -> None:
    @hm.recorded(provider="anthropic")
    def create(model: str, messages: Any, **params: Any) -> str:
        return "ok"

    msgs = [{"role": "user", "content": "hi"}]
    create(model="claude", messages=msgs, system="You are terse.", max_tokens=5)
    create("claude", msgs, system=[{"type": "text", "text": "Block prompt."}])
    first, second = hm.recent(2)
    assert first.system_instructions == ["You are terse."] and first.params == {"max_tokens": 5}
    assert second.system_instructions == [{"type": "text", "text": "Block prompt."}] and second.params == {}

    hm.configure(capture_content=False)  # a system prompt is content: not kept without content capture
    create(model="claude", messages=msgs, system="You are terse.")
    (r,) = hm.recent(1)
    assert r.system_instructions == [] and "system" not in r.params


def test_calls_with_no_messages_or_long_ones_are_recorded_under_a_small_field_limit() -> None:
    hm.configure(max_field_chars=100)

    @hm.recorded(provider="openai")
    def ask(model: str, messages: list[dict[str, str]], **params: Any) -> str:
        return "ok"

    ask("m", [])
    ask("m", [{"role": "user", "content": "x" * 50}])
    ask(model="m", messages=[{"role": "user", "content": "y" * 500}])
    empty, short, long = hm.recent(3)
    assert empty.messages == [] and short.messages == [{"role": "user", "content": "x" * 50}]
    assert long.messages[0]["content"].startswith("y" * 40) and len(long.messages[0]["content"]) < 200
    assert hm.stats().errors == {}
