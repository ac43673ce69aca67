"""A recorded generator is the generator, as its caller sees it: `send()` values reach it, `throw()` is
delivered into it, its `return` value comes out of `yield from`, `close()` runs its cleanup; for async
generators, `asend`, `athrow` and `aclose` likewise. Each behaviour is checked under every way a call
can go (recorded, disabled, sampled out, errors-only), for a recorded generator function and for a
generator returned by a recorded plain function, and compared with the bare generator's behaviour."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

import historymw as hm


class BoomError(Exception):
    pass


def echo(model: str, messages: list[Any]) -> Generator[str, Any, str]:
    """Yields what it was sent back; on BoomError thrown in, yields "caught"; returns a summary."""
    got: list[Any] = []
    try:
        value = yield "ready"
        while value != "stop":
            got.append(value)
            try:
                value = yield f"got {value}"
            except BoomError:
                value = yield "caught"
    finally:
        echo.cleanups += 1  # type: ignore[attr-defined]
    return f"done after {got}"


echo.cleanups = 0  # type: ignore[attr-defined]


async def aecho(model: str, messages: list[Any]) -> Any:
    """The async counterpart of `echo` (async generators have no return value)."""
    try:
        value = yield "ready"
        while value != "stop":
            try:
                value = yield f"got {value}"
            except BoomError:
                value = yield "caught"
    finally:
        aecho.cleanups += 1  # type: ignore[attr-defined]


aecho.cleanups = 0  # type: ignore[attr-defined]


def _scope(kind: str) -> AbstractContextManager[Any]:
    if kind == "recorded":
        return hm.history()
    if kind == "disabled":
        return hm.history(disable=True)
    if kind == "sampled_out":
        return hm.history(policy="sample", sample_rate=0.0)
    return hm.history(policy="errors")


SCOPES = ["recorded", "disabled", "sampled_out", "errors_only"]

# A recorded generator function, and a recorded plain function returning a generator.
SYNC_SHAPES: dict[str, Callable[[], Callable[..., Any]]] = {
    "bare": lambda: echo,
    "generator_function": lambda: hm.recorded(echo),
    "returns_generator": lambda: hm.recorded(lambda model, messages: echo(model, messages)),
}
ASYNC_SHAPES: dict[str, Callable[[], Callable[..., Any]]] = {
    "bare": lambda: aecho,
    "generator_function": lambda: hm.recorded(aecho),
    "returns_generator": lambda: hm.recorded(lambda model, messages: aecho(model, messages)),
}


def _sync_script(gen: Generator[str, Any, str]) -> list[Any]:
    """Drive every part of the protocol; what the caller observes."""
    seen: list[Any] = [next(gen), gen.send("a"), gen.throw(BoomError()), gen.send("b")]

    def outer() -> Generator[str, Any, str]:
        return (yield from gen)

    delegating = outer()
    seen.append(next(delegating))  # resumes `gen` with None through the delegation
    try:
        delegating.send("stop")
    except StopIteration as stop:
        seen.append(("returned", stop.value))
    return seen


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("shape", ["generator_function", "returns_generator"])
def test_sync_generator_protocol_is_transparent(shape: str, scope: str) -> None:
    expected = _sync_script(echo("m", []))
    fn = SYNC_SHAPES[shape]()
    with _scope(scope):
        observed = _sync_script(fn("m", [{"role": "user", "content": "hi"}]))
    assert observed == expected
    assert observed[-1] == ("returned", "done after ['a', 'b', None]")
    if scope == "recorded":
        r = hm.recent(1)[0]
        assert r.status == "ok" and r.stream and r.output_text is not None
        assert r.output_text.startswith("readygot acaught")


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("shape", ["generator_function", "returns_generator"])
def test_sync_throw_not_handled_propagates_and_close_runs_cleanup(shape: str, scope: str) -> None:
    fn = SYNC_SHAPES[shape]()
    with _scope(scope):
        before = echo.cleanups  # type: ignore[attr-defined]
        gen = fn("m", [])
        next(gen)
        gen.close()
        assert echo.cleanups == before + 1  # type: ignore[attr-defined]

        def raising(model: str, messages: list[Any]) -> Iterator[str]:
            yield "x"

        thrower = hm.recorded(raising) if shape == "generator_function" else \
            hm.recorded(lambda model, messages: raising(model, messages))
        it = thrower("m", [])
        next(it)
        with pytest.raises(KeyError):
            it.throw(KeyError("into the generator"))
    if scope in ("recorded", "errors_only"):
        last = hm.recent(1)[0]
        assert last.status == "error" and last.error_type == "KeyError"


def test_recorded_wrappers_stay_generator_functions() -> None:
    assert inspect.isgeneratorfunction(hm.recorded(echo))
    assert inspect.isasyncgenfunction(hm.recorded(aecho))


async def _async_script(agen: Any) -> list[Any]:
    seen: list[Any] = [await agen.__anext__(), await agen.asend("a"), await agen.athrow(BoomError()),
                       await agen.asend("b")]
    try:
        await agen.asend("stop")
    except StopAsyncIteration:
        seen.append("stopped")
    return seen


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("shape", ["generator_function", "returns_generator"])
def test_async_generator_protocol_is_transparent(shape: str, scope: str) -> None:
    expected = asyncio.run(_async_script(aecho("m", [])))
    fn = ASYNC_SHAPES[shape]()

    async def main() -> list[Any]:
        with _scope(scope):
            return await _async_script(fn("m", []))

    assert asyncio.run(main()) == expected == ["ready", "got a", "caught", "got b", "stopped"]
    if scope == "recorded":
        r = hm.recent(1)[0]
        assert r.status == "ok" and r.output_text == "readygot acaughtgot b"


@pytest.mark.parametrize("scope", SCOPES)
def test_async_aclose_runs_cleanup_and_athrow_propagates(scope: str) -> None:
    fn = hm.recorded(aecho)

    async def main() -> None:
        with _scope(scope):
            before = aecho.cleanups  # type: ignore[attr-defined]
            agen = fn("m", [])
            assert await agen.__anext__() == "ready"
            await agen.aclose()
            assert aecho.cleanups == before + 1  # type: ignore[attr-defined]

            agen = fn("m", [])
            await agen.__anext__()
            with pytest.raises(KeyError):
                await agen.athrow(KeyError("into the generator"))

    asyncio.run(main())
    if scope in ("recorded", "errors_only"):
        assert hm.recent(1)[0].error_type == "KeyError"
    if scope == "recorded":
        closed = hm.recent(2)[0]
        assert closed.error_type == "StreamAbandoned" and closed.output_text == "ready"


def test_async_for_and_break_still_record() -> None:
    @hm.recorded
    async def stream(model: str, messages: list[Any]) -> AsyncIterator[str]:
        for piece in ("a", "b", "c"):
            yield piece

    async def main() -> list[str]:
        got = [p async for p in stream("m", [])]
        agen = stream("m", [])
        async for _p in agen:
            break
        await agen.aclose()
        return got

    assert asyncio.run(main()) == ["a", "b", "c"]
    full, broken = hm.recent(2)
    assert (full.status, full.output_text, full.stream_chunks) == ("ok", "abc", 3)
    assert (broken.error_type, broken.output_text) == ("StreamAbandoned", "a")
