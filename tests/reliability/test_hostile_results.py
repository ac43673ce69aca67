"""Results and exceptions that run hostile code when looked at do not break or block the call.

- `stream=True` with a result whose `isinstance` check raises (a lazy proxy whose `__class__`
  raises) or whose every attribute raises: the call returns the result itself, untouched.
- An exception whose `__str__` (or an argument's `__str__`/`__repr__`) blocks: the call raises
  that exception without waiting for it; the record keeps the type and a placeholder message.
  A blocking `__str__` is modelled by one that waits for an event the test sets only after the
  call returned: if historymw read the message on the caller's thread, the wait would run out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import historymw as hm
from historymw import counters

MSGS = [{"role": "user", "content": "hi"}]
WAIT_S = 10.0  # how long a blocked __str__ waits for the test before giving up (and failing it)


class LazyProxy:
    """A proxy that resolves lazily; looking at it before it is resolved raises."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise RuntimeError("proxy not resolved")

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"proxy not resolved: {name}")


class IterableLazyProxy(LazyProxy):
    """The same, over a stream: iteration works through the type's own methods."""

    def __init__(self, items: list[str]) -> None:
        object.__setattr__(self, "_items", iter(items))

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(object.__getattribute__(self, "_items"))


@pytest.mark.parametrize("make", [LazyProxy, lambda: IterableLazyProxy(["a", "b"])],
                         ids=["opaque", "iterable"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_stream_true_with_a_result_whose_checks_raise(make: Callable[[], Any], kind: str) -> None:
    result = make()
    if kind == "sync":
        @hm.recorded(provider="p")
        def ask(model: str, messages: list[Any], stream: bool = False) -> Any:
            return result

        got = ask("m", MSGS, stream=True)
    else:
        import asyncio

        @hm.recorded(provider="p")
        async def aask(model: str, messages: list[Any], stream: bool = False) -> Any:
            return result

        got = asyncio.run(aask("m", MSGS, stream=True))
    if type(result) is IterableLazyProxy:  # a stream, told by its type: recorded through a stand-in
        assert list(got) == ["a", "b"]
        assert hm.recent(1)[0].output_text == "ab"
    else:  # nothing can be read from it: the call gets it untouched; the failure is counted, not raised
        assert got is result
        assert hm.stats().errors.get("capture", 0) >= 1


class _Blocking:
    """Shared by the hostile exceptions below: a __str__ that waits for the test's go-ahead."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ran_out: list[str] = []

    def wait(self, where: str) -> str:
        if not self.release.wait(WAIT_S):
            self.ran_out.append(where)
        return f"read after release ({where})"


def _hostile_exceptions(block: _Blocking) -> dict[str, BaseException]:
    class SlowStrError(Exception):
        def __str__(self) -> str:
            return block.wait("__str__")

    class SlowArg:
        def __str__(self) -> str:
            return block.wait("arg __str__")

        def __repr__(self) -> str:
            return block.wait("arg __repr__")

    class SlowName(type):
        @property
        def __name__(cls) -> str:  # type: ignore[override]
            return block.wait("metaclass __name__")

    class NamedError(Exception, metaclass=SlowName):
        pass

    class SlowCauseError(Exception):
        pass

    chained = SlowCauseError("outer")
    chained.__cause__ = SlowStrError("inner")
    return {
        "str_blocks": SlowStrError("x"),
        "arg_str_blocks": ValueError(SlowArg()),
        "arg_repr_blocks": KeyError(SlowArg()),
        "args_repr_block": RuntimeError("two", SlowArg()),
        "oserror_filename_blocks": FileNotFoundError(2, "No such file", SlowArg()),
        "metaclass_name_blocks": NamedError("plain message"),
        "cause_blocks": chained,
    }


CASES = list(_hostile_exceptions(_Blocking()))


@pytest.mark.parametrize("case", CASES)
def test_an_exception_whose_text_blocks_does_not_block_the_call(case: str) -> None:
    block = _Blocking()
    error = _hostile_exceptions(block)[case]

    @hm.recorded(provider="p")
    def ask(model: str, messages: list[Any]) -> str:
        raise error

    try:
        with pytest.raises(type(error)) as raised:
            ask("m", MSGS)
        assert raised.value is error
    finally:
        block.release.set()  # only now may a __str__ historymw called finish
    assert block.ran_out == [], f"historymw waited on {block.ran_out} on the caller's thread"
    r = hm.recent(1)[0]
    assert r.status == "error" and r.error_type == type.__dict__["__name__"].__get__(type(error))
    assert r.error_message is not None


@pytest.mark.parametrize("where", ["extract_raises", "output_text_object"])
def test_user_code_text_in_outputs_and_internal_errors_does_not_block(where: str) -> None:
    block = _Blocking()

    class SlowStrError(Exception):
        def __str__(self) -> str:
            return block.wait("__str__")

    class SlowText:
        def __str__(self) -> str:
            return block.wait("output __str__")

    def extract(result: Any) -> dict[str, Any]:
        if where == "extract_raises":
            raise SlowStrError("extractor failed")
        return {"output_text": SlowText()}

    @hm.recorded(provider="p", extract=extract)
    def ask(model: str, messages: list[Any]) -> object:
        return object()

    counters.COUNTERS._last_logged.clear()  # the internal-error log line is due now, not rate-limited
    try:
        ask("m", MSGS)
    finally:
        block.release.set()
    assert block.ran_out == []
    assert hm.recent(1)[0].status == "ok"


def test_a_plain_message_is_kept_and_a_slow_one_comes_back_in_time() -> None:
    """The bound does not cost ordinary messages: a built-in exception's text and a library's
    own __str__ that answers at once are both recorded as they are."""

    class FriendlyError(Exception):
        def __str__(self) -> str:
            return "friendly text"

    @hm.recorded(provider="p")
    def ask(model: str, messages: list[Any], error: BaseException) -> str:
        raise error

    for error, text in ((ValueError("bad value 42"), "bad value 42"), (KeyError("k"), "'k'"),
                        (FriendlyError(), "friendly text"), (OSError(2, "No such file", "/tmp/x"),
                                                        "[Errno 2] No such file: '/tmp/x'")):
        with pytest.raises(type(error)):
            ask("m", MSGS, error=error)
        r = hm.recent(1)[0]
        assert (r.error_type, r.error_message) == (type(error).__name__, text)
        assert r.error_stacktrace is not None and r.error_stacktrace.rstrip().endswith(text)
        assert "Traceback (most recent call last):" in r.error_stacktrace
