"""The function `@hm.recorded` returns behaves like the function it wraps.

Methods, static and class methods bind as before; the wrapper has the wrapped
function's name, docstring and signature, pickles by name, can be weakly
referenced, and keeps no reference to the caller's objects once a call is over.
"""

from __future__ import annotations

import copy
import gc
import inspect
import pickle
import sys
import weakref
from typing import Any

import pytest

import historymw as hm


@hm.recorded
def module_level_ask(model: str, messages: Any) -> str:
    return "ok"


def test_the_wrapper_behaves_like_the_function_it_wraps() -> None:

    class Client:
        @hm.recorded(provider="p")
        def complete(self, model: str, messages: Any) -> str:
            """Complete a chat."""
            return f"{model}!"

        @staticmethod
        @hm.recorded
        def static(model: str, messages: Any) -> str:
            return "static"

        @classmethod
        @hm.recorded
        def klass(cls, model: str, messages: Any) -> str:
            return cls.__name__

    client = Client()
    assert client.complete("m", []) == "m!" and Client.complete(client, "n", []) == "n!"
    assert client.complete(model="k", messages=[]) == "k!"
    assert Client.static("m", []) == "static" and Client.klass("m", []) == "Client"
    assert [r.model for r in hm.recent(5)] == ["m", "n", "k", "m", "m"]
    assert all(r.params == {} for r in hm.recent(5))  # self and cls are not parameters

    wrapped = Client.__dict__["complete"]
    assert wrapped.__name__ == "complete" and wrapped.__doc__ == "Complete a chat."
    assert wrapped.__qualname__.endswith("Client.complete") and wrapped.__module__ == __name__
    assert list(inspect.signature(wrapped).parameters) == ["self", "model", "messages"]
    assert "Client.complete" in repr(wrapped)
    assert copy.copy(wrapped) is wrapped and copy.deepcopy(wrapped) is wrapped
    ref = weakref.ref(wrapped)
    assert ref() is wrapped


def test_a_module_level_wrapper_pickles_by_name() -> None:
    assert pickle.loads(pickle.dumps(module_level_ask)) is module_level_ask


@pytest.mark.parametrize("shape", ["positional", "keyword"])
def test_the_wrapper_keeps_no_reference_to_the_callers_objects(shape: str) -> None:

    class Message(dict[str, str]):
        pass

    @hm.recorded
    def ask(model: str, messages: Any, **params: Any) -> str:
        return "ok"

    msgs = [{"role": "user", "content": "x" * 2000}]
    before = sys.getrefcount(msgs), sys.getrefcount(msgs[0])
    gc.disable()
    try:
        for _ in range(100):
            if shape == "positional":
                ask("m", msgs, temperature=0.5)
            else:
                ask(model="m", messages=msgs, temperature=0.5)
        probe = Message(role="user", content="y")
        ref = weakref.ref(ask)
        ask("m", [probe])
        assert (sys.getrefcount(msgs), sys.getrefcount(msgs[0])) == before
        del ask
        assert ref() is None  # freed by reference counting, with the collector off
    finally:
        gc.enable()
    assert len(hm.ring()) == 101


def test_an_error_inside_the_hot_path_is_counted_and_never_reaches_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from historymw import capture

    @hm.recorded
    def ask(model: str, messages: Any) -> str:
        return "fine"

    def broken(*args: Any) -> None:  # a bug inside historymw, simulated
        raise RuntimeError("draft builder broke")

    monkeypatch.setattr(capture, "usual_draft", broken)
    assert [ask("m", [{"role": "user", "content": "hi"}]) for _ in range(3)] == ["fine"] * 3
    assert [ask(model="m", messages=[{"role": "user", "content": "hi"}]) for _ in range(2)] == ["fine"] * 2
    assert hm.stats().errors == {"capture": 5}
    assert len(hm.ring()) == 0

    def interrupted(model: str, messages: Any) -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # what the call raises still passes through
        hm.recorded(interrupted)("m", [])


@pytest.mark.parametrize("shape", ["positional", "keyword", "mixed"])
def test_both_call_shapes_record_the_same_request(shape: str) -> None:
    @hm.recorded(provider="p")
    def ask(model: str, messages: Any, **params: Any) -> str:
        return "ok"

    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "héllo"}]
    if shape == "positional":
        ask("m", msgs, temperature=0.1, stream=False)
    elif shape == "keyword":
        ask(model="m", messages=msgs, temperature=0.1, stream=False)
    else:
        ask("m", messages=msgs, temperature=0.1, stream=False)
    rec = hm.recent(1)[0]
    assert (rec.model, rec.messages, rec.params, rec.output_text) == ("m", msgs, {"temperature": 0.1, "stream": False},
                                                                      "ok")
    assert rec.size_bytes == hm.ring().bytes_held > sum(len(m["content"]) for m in msgs)
