"""Streams: one record per streamed call, written when the stream ends.

Two kinds of stand-in, both transparent to the caller:

- generators (a recorded generator function, or a generator returned by a
  recorded function): the relay forwards the whole generator protocol
  (`send`, `throw`, `close`, the `return` value; `asend`, `athrow`, `aclose`)
  and records each item it passes on;
- stream objects (a client's `stream=True` result, an SDK's stream, the events
  inside an Anthropic `MessageStream`): `SyncStream`/`AsyncStream` record each
  item and forward every other attribute to the stream they stand for.

Either reports to a sink with `see(item)` and `done(error, abandoned=False)`;
`done` is called once whether the stream ends, fails, or is closed or dropped by
the caller (then the record's error is `StreamAbandoned`).
"""

from __future__ import annotations

import inspect
import time
import types
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING, Any

from . import capture as _capture
from . import counters
from .draft import str_bytes
from .extract import chunk_fields, usage_fields
from .plain import clip

if TYPE_CHECKING:
    from .draft import CallSpec
    from .scope import Effective

_perf = time.perf_counter
# What a result must not be to count as a client's stream object under stream=True.
_NOT_STREAMS = (str, bytes, dict, list, tuple)


class StreamAbandoned(Exception):  # noqa: N818 - it is recorded as error_type; it is not raised
    """Recorded as the error of a stream the caller stopped reading (closed or garbage-collected)."""


class StreamState:
    """Accumulates a stream's chunks into one record, written when the stream ends."""

    __slots__ = ("draft", "spec", "eff", "parts", "chunks")

    def __init__(self, draft: dict[str, Any], spec: CallSpec, eff: Effective) -> None:
        self.draft: dict[str, Any] | None = draft
        self.spec = spec
        self.eff = eff
        self.parts: list[str] = []
        self.chunks = 0
        draft["stream"] = True

    def chunk(self, chunk: Any) -> None:
        draft = self.draft
        if draft is None:
            return
        try:
            self.chunks += 1
            text, reason, usage = chunk_fields(chunk)
            if text:
                if "time_to_first_token_s" not in draft:
                    draft["time_to_first_token_s"] = _perf() - draft["duration"]  # the start, until finish()
                self.parts.append(text)
            if reason is not None:
                draft["finish_reason"] = reason
            if usage is not None:
                usage_fields(usage, draft)
        except Exception as exc:  # noqa: BLE001
            counters.COUNTERS.error("capture", exc)

    see = chunk  # the sink interface SyncStream/AsyncStream report to

    def done(self, error: BaseException | None, abandoned: bool = False) -> None:
        self.end(error, abandoned)

    def end(self, error: BaseException | None = None, abandoned: bool = False,
            given: dict[str, Any] | None = None, ended: float | None = None) -> None:
        """Write the stream's one record (only the first call does anything)."""
        draft, self.draft = self.draft, None
        if draft is None:
            return
        try:
            if self.parts and self.eff.content and not (given and "output_text" in given):
                text = "".join(self.parts)
                if len(text) > self.eff.max_chars:
                    text = clip(text, self.eff.max_chars)
                draft["output_text"] = text
                draft["size_bytes"] = draft.get("size_bytes", 0) + str_bytes(text)
            self.parts = []
            draft["stream_chunks"] = self.chunks
            if abandoned and error is None:
                error = StreamAbandoned(f"stream closed by the caller after {self.chunks} chunks")
            _capture.finish(draft, self.spec, self.eff, None, error, ended, given)
        except Exception as exc:  # noqa: BLE001
            counters.COUNTERS.error("capture", exc)


# -- generators ------------------------------------------------------------------
#
# A relay is built from a `begin(args, kwargs) -> (generator, state or None)`: for a
# recorded generator function, begin takes the head decision and calls the function
# (at the first next(), as the function's own body would run); for a generator some
# function returned, begin is the identity. The relay is itself a generator function,
# so `inspect.isgeneratorfunction` / `isasyncgenfunction` still hold for the wrapper.

Begin = Callable[[tuple[Any, ...], dict[str, Any]], tuple[Any, "StreamState | None"]]


def sync_relay(begin: Begin) -> Callable[..., Generator[Any, Any, Any]]:
    def relay(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        gen, state = begin(args, kwargs)
        if state is None:  # not recorded: the interpreter's own delegation, nothing in between
            return (yield from gen)
        # PEP 380's expansion of `yield from`, recording each item on its way out.
        try:
            try:
                item = next(gen)
            except StopIteration as stop:
                state.end()
                return stop.value
            while True:
                state.chunk(item)
                try:
                    sent = yield item
                except GeneratorExit:  # closed or garbage-collected by the caller
                    state.end(abandoned=True)
                    gen.close()
                    raise
                except BaseException as exc:  # noqa: BLE001 - throw(): delivered into the generator
                    try:
                        item = gen.throw(exc)
                    except StopIteration as stop:
                        state.end()
                        return stop.value
                else:
                    try:
                        item = gen.send(sent)
                    except StopIteration as stop:
                        state.end()
                        return stop.value
        except BaseException as exc:
            state.end(exc)  # a no-op when it already ended (closed)
            raise
    return relay


def async_relay(begin: Begin) -> Callable[..., AsyncGenerator[Any, Any]]:
    async def relay(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        agen, state = begin(args, kwargs)
        # Async generators have no `yield from`: asend/athrow/aclose are forwarded by hand,
        # recorded or not.
        try:
            try:
                item = await agen.__anext__()
            except StopAsyncIteration:
                if state is not None:
                    state.end()
                return
            while True:
                if state is not None:
                    state.chunk(item)
                try:
                    sent = yield item
                except GeneratorExit:  # aclose(), or dropped by the caller
                    if state is not None:
                        state.end(abandoned=True)
                    await agen.aclose()
                    raise
                except BaseException as exc:  # noqa: BLE001 - athrow(): delivered into the generator
                    try:
                        item = await agen.athrow(exc)
                    except StopAsyncIteration:
                        if state is not None:
                            state.end()
                        return
                else:
                    try:
                        item = await agen.asend(sent)
                    except StopAsyncIteration:
                        if state is not None:
                            state.end()
                        return
        except BaseException as exc:
            if state is not None:
                state.end(exc)
            raise
    return relay


def _given(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, StreamState | None]:
    return args[0], args[1]


record_sync_gen = sync_relay(_given)  # record_sync_gen(gen, state): a recording stand-in for gen
record_async_gen = async_relay(_given)


# -- stream objects ------------------------------------------------------------------


class SyncStream:
    """Stands in for a stream object: hands each item to `sink.see`, calls `sink.done` once when it
    ends, fails, is closed, or is dropped by the caller; forwards every other attribute."""

    __slots__ = ("_inner", "_sink", "__weakref__")

    def __init__(self, inner: Any, sink: Any) -> None:
        self._inner = inner
        self._sink = sink

    def __iter__(self) -> SyncStream:
        return self

    def __next__(self) -> Any:
        try:
            item = next(self._inner)
        except StopIteration:
            self._sink.done(None)
            raise
        except BaseException as exc:
            self._sink.done(exc)
            raise
        self._sink.see(item)
        return item

    def __enter__(self) -> SyncStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sink.done(None, abandoned=True)
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name: str) -> Any:
        if name in ("_inner", "_sink"):  # not set yet (a failed __init__): no recursion through _inner
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __del__(self) -> None:
        try:
            self._sink.done(None, abandoned=True)
        except AttributeError:
            pass


class AsyncStream:
    """The async counterpart of `SyncStream`."""

    __slots__ = ("_inner", "_sink", "__weakref__")

    def __init__(self, inner: Any, sink: Any) -> None:
        self._inner = inner
        self._sink = sink

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._inner.__anext__()
        except StopAsyncIteration:
            self._sink.done(None)
            raise
        except BaseException as exc:
            self._sink.done(exc)
            raise
        self._sink.see(item)
        return item

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """The SDKs' name (their AsyncStream.close is a coroutine)."""
        self._sink.done(None, abandoned=True)
        await _close(self._inner, "close", "aclose")

    async def aclose(self) -> None:
        """The async generators' name."""
        self._sink.done(None, abandoned=True)
        await _close(self._inner, "aclose", "close")

    def __getattr__(self, name: str) -> Any:
        if name in ("_inner", "_sink"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __del__(self) -> None:
        try:
            self._sink.done(None, abandoned=True)
        except AttributeError:
            pass


async def _close(inner: Any, *names: str) -> None:
    for name in names:
        method = getattr(inner, name, None)
        if method is not None:
            result = method()
            if inspect.isawaitable(result):
                await result
            return


def stand_in(inner: Any, sink: Any) -> Any:
    """A SyncStream or AsyncStream for `inner`, by the protocol its type implements; `inner` itself
    when it implements neither. Looks at the type only: no attribute of the object is read."""
    t = type(inner)
    if hasattr(t, "__next__"):
        return SyncStream(inner, sink)
    if hasattr(t, "__anext__"):
        return AsyncStream(inner, sink)
    return inner


def finish_result(draft: dict[str, Any], spec: CallSpec, eff: Effective, result: Any) -> Any:
    """Finish with a result; for a stream, return a recording stand-in for it. Never raises: a result
    historymw cannot classify (a proxy whose attributes raise) is returned untouched, and counted."""
    try:
        t = type(result)  # type() reads the object's type slot: no user code runs
        if t is types.GeneratorType:
            return record_sync_gen(result, StreamState(draft, spec, eff))
        if t is types.AsyncGeneratorType:
            return record_async_gen(result, StreamState(draft, spec, eff))
        # A client's stream object (stream=True). Decided on its type, never on the object: a lazy
        # proxy's __class__ or __getattr__ is user code (it may raise, or block).
        if draft.get("stream") and not issubclass(t, _NOT_STREAMS):
            if hasattr(t, "__next__"):
                return SyncStream(result, StreamState(draft, spec, eff))
            if hasattr(t, "__anext__"):
                return AsyncStream(result, StreamState(draft, spec, eff))
    except Exception as exc:  # noqa: BLE001 - fail open: the result passes through untouched
        counters.COUNTERS.error("capture", exc)
        _capture.finish(draft, spec, eff, None)
        return result
    _capture.finish(draft, spec, eff, result)
    return result
