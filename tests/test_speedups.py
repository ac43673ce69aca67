"""The C hot path (historymw/_speedups.c) against the pure-Python reference in capture.py.

The other capture tests run on both paths (conftest.hot_path); these check what
only the C path could get wrong: that it is built, that it records exactly what
the Python path records for any call shape, and that the object it returns
behaves like the function it wraps.
"""

from __future__ import annotations

import copy
import gc
import inspect
import pickle
import shutil
import sys
import sysconfig
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import historymw as hm
from historymw import capture

needs_c = pytest.mark.skipif(capture._speedups is None, reason="the C hot path is not built here")


@hm.recorded
def module_level_ask(model: str, messages: Any) -> str:
    return "ok"


@pytest.fixture
def c_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Functions the test decorates take the C path (restored after the test)."""
    monkeypatch.setattr(capture, "SPEEDUPS", True)


def test_the_c_hot_path_is_built_where_a_compiler_is() -> None:
    # setup.py builds it with optional=True, so a broken build would only warn; this fails instead.
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) on this machine: the pure-Python hot path is used")
    assert capture._speedups is not None, "historymw._speedups failed to build: see pip's build log"
    assert capture.SPEEDUPS


RESULT: list[Any] = ["ok"]  # what answer() returns: not an argument, which would change the call's shape


def answer(model: str, messages: Any, **params: Any) -> Any:
    return RESULT[0]


def fail(model: str, messages: Any) -> str:
    raise TimeoutError("slow")


def recorded_by(path: str, fn: Any = answer) -> Any:
    """fn decorated on the given path ("c" or "python")."""
    capture.SPEEDUPS = path == "c"
    try:
        return hm.recorded(provider="p")(fn)
    finally:
        capture.SPEEDUPS = capture._speedups is not None


text = st.text(max_size=40)
message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": text}),
    st.fixed_dictionaries({"role": st.sampled_from(["user"]), "content": st.lists(text, max_size=2)}),
    st.dictionaries(st.sampled_from(["role", "content", "name"]), text, max_size=3),
    text,
)
param_value = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text,
                        st.lists(st.integers(), max_size=3))
param_name = st.sampled_from(["temperature", "max_tokens", "stream", "api_key", "user", "tools", "seed"])
result = st.one_of(text, st.none(), st.integers(), st.fixed_dictionaries(
    {"choices": st.just([{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}])}))


@needs_c
@settings(max_examples=150, deadline=None)
@given(model=st.one_of(st.text(max_size=300), st.none(), st.integers()),
       messages=st.one_of(st.lists(message, max_size=4), text, st.none()),
       params=st.dictionaries(param_name, param_value, max_size=4), result=result,
       session=st.one_of(st.none(), st.just("s-1")))
def test_c_and_python_paths_record_the_same_call(model: Any, messages: Any, params: dict[str, Any],
                                                 result: Any, session: str | None) -> None:
    records = []
    RESULT[0] = result
    for path in ("c", "python"):
        hm.configure()
        ask = recorded_by(path)
        with hm.history(session=session, tags={"k": "v"}):
            # Twice: the first sight of a param name classifies it (a cache both paths share).
            for _ in range(2):
                assert ask(model, messages, **params) == result
        rec = hm.recent(1)[0]
        records.append(rec.model_dump(exclude={"id", "started_at", "ended_at", "duration_s"}))
    assert records[0] == records[1]


@needs_c
@pytest.mark.parametrize("policy", ["off", "errors", "sample"])
def test_c_and_python_paths_agree_on_every_policy(policy: str) -> None:
    outcomes = []
    for path in ("c", "python"):
        hm.configure(policy=policy, sample_rate=0.0)
        ask, ask_failing = recorded_by(path), recorded_by(path, fail)
        for _ in range(3):
            ask("m", [{"role": "user", "content": "hi"}])
            with pytest.raises(TimeoutError):
                ask_failing("m", [{"role": "user", "content": "hi"}])
        s = hm.stats()
        outcomes.append(([(r.status, r.error_type) for r in hm.recent(5)], s.recorded, s.sampled_out,
                         s.filtered_out))
    assert outcomes[0] == outcomes[1]


@needs_c
@pytest.mark.usefixtures("c_path")
def test_the_c_wrapper_behaves_like_the_function_it_wraps() -> None:

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
    assert Client.static("m", []) == "static" and Client.klass("m", []) == "Client"
    assert [r.model for r in hm.recent(5)] == ["m", "n", "m", "m"]

    wrapped = Client.__dict__["complete"]
    assert type(wrapped).__module__ == "historymw._speedups"  # the C path, not the Python wrapper
    assert wrapped.__name__ == "complete" and wrapped.__doc__ == "Complete a chat."
    assert wrapped.__qualname__.endswith("Client.complete") and wrapped.__module__ == __name__
    assert list(inspect.signature(wrapped).parameters) == ["self", "model", "messages"]
    assert "Client.complete" in repr(wrapped)
    assert copy.copy(wrapped) is wrapped and copy.deepcopy(wrapped) is wrapped
    ref = weakref.ref(wrapped)
    assert ref() is wrapped


@needs_c
def test_a_module_level_c_wrapper_pickles_by_name() -> None:
    assert pickle.loads(pickle.dumps(module_level_ask)) is module_level_ask


@needs_c
@pytest.mark.usefixtures("c_path")
def test_the_c_path_keeps_no_reference_to_the_callers_objects() -> None:

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
            ask("m", msgs, temperature=0.5)
        probe = Message(role="user", content="y")
        ref = weakref.ref(ask)
        ask("m", [probe])
        assert (sys.getrefcount(msgs), sys.getrefcount(msgs[0])) == before
        del ask
        assert ref() is None  # freed by reference counting, with the collector off
    finally:
        gc.enable()
    assert len(hm.ring()) == 101



@needs_c
@pytest.mark.usefixtures("c_path")
def test_an_error_inside_the_c_path_is_counted_and_never_reaches_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from historymw import scope

    ask = hm.recorded(answer)
    RESULT[0] = "fine"
    # A bug inside historymw, simulated: the scope's decision is not what the C path expects.
    real_init = scope.Effective.__init__

    def broken_init(self: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        self.hot = ()

    monkeypatch.setattr(scope.Effective, "__init__", broken_init)
    hm.configure()
    assert [ask("m", [{"role": "user", "content": "hi"}]) for _ in range(3)] == ["fine"] * 3
    assert hm.stats().errors == {"capture": 3}
    assert len(hm.ring()) == 0

    def interrupted(model: str, messages: Any) -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # what the call raises still passes through
        hm.recorded(interrupted)("m", [])
