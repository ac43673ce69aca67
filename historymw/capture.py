"""Capture: `@recorded` and `call(...)`, the code that runs inside every LM call.

The hot path, in order: read the scope (one ContextVar), branch on its mode;
when recording, copy the request into a plain dict (the draft), run the call,
read the result into the draft, hand it to the backends. Everything after the
branch is fail-open: an exception inside historymw is counted and logged,
never raised into the call, and the call's own result or exception passes
through untouched.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from . import counters, runtime
from .draft import (
    LOOKUP,
    RECORD_BASE_BYTES,
    SIZEOF_SHIFT,
    CallSpec,
    outcome,
    request,
    str_bytes,
    table_growth,
    usual_draft,
)
from .extract import usage_fields
from .plain import clip
from .policy import FULL, SKIP, TAIL, active_span_ids, sampled_in
from .scope import CURRENT, SAMPLE, Effective
from .streams import StreamAbandoned as StreamAbandoned  # its home is streams; this name is older
from .streams import StreamState, async_relay, finish_result, sync_relay

F = TypeVar("F", bound=Callable[..., Any])

_perf = time.perf_counter
_now = time.time
_modules = sys.modules
_STATE = runtime.STATE
# The __sizeof__() of an ASCII str of 1024 chars: a str result at most this large is at most 1024 chars
# long (a wider one takes more bytes a char), which finish_text keeps whole.
SHORT_TEXT = 1024 + "".__sizeof__()


def effective_now() -> Effective:
    """The current scope's decision under the current configuration."""
    frame = CURRENT.get()
    eff = frame.eff
    return eff if eff.gen == _STATE.gen else frame.refresh()


def decide() -> tuple[Effective, int]:
    """The current scope and its head decision for one call: (eff, FULL, TAIL or SKIP)."""
    eff = effective_now()
    mode = eff.mode
    if mode != FULL and mode != SKIP:
        mode = head(eff)
    return eff, mode


def head(eff: Effective) -> int:
    """The per-call head decision of a sampling or errors-only scope: FULL, TAIL or SKIP."""
    if eff.mode == TAIL:
        return TAIL
    span = active_span_ids() if "opentelemetry.trace" in _modules else None
    if span is None:  # no span to agree with: a Bernoulli trial, its sampler counts the calls it skips
        if eff.sampler.take():
            return FULL
        return TAIL if eff.keep_errors else SKIP
    if sampled_in(eff.bound, eff.rate, span):  # by trace id, as OpenTelemetry's ratio sampler
        return FULL
    if eff.keep_errors:
        return TAIL
    next(eff.sampled_out)
    return SKIP


def start(eff: Effective, spec: CallSpec, mode: int, args: tuple[Any, ...], kwargs: dict[str, Any],
          started: float | None = None, span: Any = LOOKUP, usual: bool = True) -> dict[str, Any] | None:
    """The draft of a call the head decision kept (FULL or TAIL); None on an internal error.

    `span`: the (trace_id, span_id, trace_flags) the call belongs to, when it was taken
    earlier on the caller's context (None: no span); by default, the span active now.
    `usual=False`: `usual_draft` was tried already (the recorded function's wrapper)."""
    try:
        if mode == FULL and usual:
            draft = usual_draft(spec, eff, args, kwargs, started, span)
            if draft is not None:
                draft["duration"] = _perf()  # the start's perf_counter, until finish()
                return draft
        t0 = _perf()
        wall = _now() if started is None else started
        if mode != FULL:  # TAIL: keep only the references the call holds anyway, copy if it fails
            draft = {"started": wall, "duration": t0, "provider": spec.provider, "operation": spec.operation,
                     "source": spec.source, "_args": args, "_kwargs": kwargs}
        else:  # any other call shape: copied by `request()`
            model, messages, params, size, system = request(spec, eff, args, kwargs)
            # "duration" holds the start's perf_counter until finish() turns it into the duration.
            draft = {"started": wall, "duration": t0, "provider": spec.provider, "model": model,
                     "operation": spec.operation, "source": spec.source, "messages": messages,
                     "params": params, "size_bytes": RECORD_BASE_BYTES + size, "output_text": None,
                     "stream": type(params) is dict and params.get("stream") is True}
            if system is not None:
                draft["system_instructions"] = system
        if eff.labels is not None:  # session and tags of the enclosing history(...) scopes
            draft.update(eff.labels)
            draft["size_bytes"] = draft.get("size_bytes", 0) + eff.labels_bytes
        if span is LOOKUP:
            span = active_span_ids() if "opentelemetry.trace" in _modules else None
        if span is not None:
            draft["trace_id"], draft["span_id"], draft["trace_flags"] = span
        return draft
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("capture", exc)
        return None


def finish_text(draft: dict[str, Any], eff: Effective, text: str) -> None:
    """`finish()` for the usual outcome of a FULL call: a str result, no extract=. Never raises."""
    try:
        draft["duration"] = _perf() - draft["duration"]
        if eff.content:
            if len(text) > 1024:
                text = clip(text, eff.max_chars)
            draft["output_text"] = text
            draft["size_bytes"] += str_bytes(text)
        eff.commit(draft)
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("capture", exc)


def finish(draft: dict[str, Any], spec: CallSpec, eff: Effective, result: Any = None,
           error: BaseException | None = None, ended: float | None = None,
           given: dict[str, Any] | None = None) -> None:
    """Complete a draft with the call's outcome, apply the tail decision, commit. Never raises."""
    if (type(result) is str and error is None and given is None and ended is None and spec.extract is None
            and "_args" not in draft):
        finish_text(draft, eff, result)  # the common case
        return
    try:
        draft["duration"] = _perf() - draft["duration"] if ended is None else ended - draft["started"]
        if "_args" in draft:  # TAIL: only failures are kept
            args, kwargs = draft.pop("_args"), draft.pop("_kwargs")
            if error is None:
                next(eff.filtered_out)
                return
            model, messages, params, size, system = request(spec, eff, args, kwargs)
            draft.update(model=model, messages=messages, params=params,
                         size_bytes=draft.get("size_bytes", 0) + RECORD_BASE_BYTES + size)
            if system is not None:
                draft["system_instructions"] = system
        if result is not None or error is not None or given or spec.extract is not None:
            outcome(draft, spec, eff, result, error, given)
        draft["size_bytes"] += table_growth(draft)  # the many-field records (finish_text's have few)
        eff.commit(draft)
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("capture", exc)


# -- the decorator -------------------------------------------------------------


def recorded(fn: F | None = None, *, provider: str | None = None, operation: str = "chat",
             source: str = "decorator", extract: Callable[[Any], dict[str, Any]] | None = None) -> Any:
    """Record every call of an LM function: sync, async, generator or async generator.

    `model` and `messages` are read from the call's arguments; the other
    arguments become `params` (redacted). The return value is read when it is a
    str or an OpenAI/Anthropic-style response; `extract=fn(result) -> dict` of
    LMCall fields handles anything else. A stream (a generator, or a client's
    stream object returned for `stream=True`) becomes one record when it ends.
    Results and exceptions pass through unchanged.
    """
    if fn is None:
        return functools.partial(recorded, provider=provider, operation=operation, source=source,
                                 extract=extract)
    spec = CallSpec(fn, provider, operation, source, extract)
    get_frame = CURRENT.get

    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        def begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, StreamState | None]:
            eff, mode = decide()  # at the first next(), where the function's own body starts
            draft = start(eff, spec, mode, args, kwargs) if mode != SKIP else None
            return fn(*args, **kwargs), None if draft is None else StreamState(draft, spec, eff)
        relay = async_relay(begin) if inspect.isasyncgenfunction(fn) else sync_relay(begin)
        return functools.wraps(fn)(relay)

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            eff = get_frame().eff
            mode = eff.mode
            if mode != FULL and mode != SKIP:  # a head decision to take, or a stale scope's
                eff, mode = decide()
            if mode == SKIP:
                return await fn(*args, **kwargs)
            draft = start(eff, spec, mode, args, kwargs)
            if draft is None:
                return await fn(*args, **kwargs)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                finish(draft, spec, eff, None, exc)
                raise
            return finish_result(draft, spec, eff, result)
        return async_wrapper

    def other(eff: Effective, mode: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call the wrapper's usual path does not take: an errors-only (TAIL) decision, or a shape
        `usual_draft` declined (`start()` copies it)."""
        draft = start(eff, spec, mode, args, kwargs, usual=False)
        if draft is None:
            return fn(*args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            finish(draft, spec, eff, None, exc)
            raise
        return finish_result(draft, spec, eff, result)

    # The hot path, in one place: the head decision (a disabled call costs a ContextVar read
    # and a branch; a sampled-out one, a countdown more), the usual draft, the call, a str
    # result. Any other call goes through other(), any other result through finish_result().
    # A stale scope (the configuration changed: policy.STALE) decides again through decide().
    text = str if spec.extract is None else None  # None: the type of no result, so extract= reads each

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        eff = get_frame().eff
        mode = eff.mode
        if mode != FULL:
            if mode == SKIP:
                return fn(*args, **kwargs)
            # head()'s first case, inline (Sampler.take): a sampled-out call takes one of the skips.
            # No call between the read and the write: under the GIL, no other thread runs between them.
            # (No local names either: each would cost every call of the wrapper, recorded or not.)
            if mode == SAMPLE and "opentelemetry.trace" not in _modules and eff.sampler.skip > 0:
                eff.sampler.skip -= 1
                return fn(*args, **kwargs)
            eff, mode = decide()
            if mode != FULL:
                return fn(*args, **kwargs) if mode == SKIP else other(eff, mode, args, kwargs)
        try:
            draft = usual_draft(spec, eff, args, kwargs)
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error("capture", exc)
            return fn(*args, **kwargs)
        if draft is None:
            return other(eff, FULL, args, kwargs)
        t0 = _perf()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            draft["duration"] = t0  # as finish() expects it (start()'s)
            finish(draft, spec, eff, None, exc)
            raise
        # (held + SIZEOF_SHIFT: str_bytes(result), in one call; a longer one goes to finish_text.)
        if type(result) is not text or (held := result.__sizeof__()) > SHORT_TEXT:
            draft["duration"] = t0
            return finish_result(draft, spec, eff, result)
        try:  # finish_text(), inline: the usual outcome, a short str
            draft["duration"] = _perf() - t0
            draft["output_text"] = result
            draft["size_bytes"] += held + SIZEOF_SHIFT
            commit = eff.commit  # (a slot attribute called as a method would take the slow lookup)
            commit(draft)
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error("capture", exc)
        return result
    return wrapper


# -- manual recording -----------------------------------------------------------


class call:  # noqa: N801 - used like a function: `with hm.call(...) as c`
    """Record one call made through any client, by hand.

    ```
    with hm.call(provider="anthropic", model="m", messages=msgs, params=p) as c:
        resp = client.messages.create(...)
        c.output(result=resp)          # or c.output(text=..., usage=..., finish_reason=...)
    ```
    An exception leaving the block is recorded and re-raised. For a stream, call
    `c.chunk(piece)` for each piece. Without `with`: `c = hm.call(...).start()`,
    then `c.output(...)` and `c.end()` (or `c.end(error=exc)`), from any thread:
    the scope is the one active at `start()`. Every method is fail-open.
    """

    __slots__ = ("_spec", "_request", "_started_at", "_draft", "_eff", "_stream", "_given", "_result")

    def __init__(self, *, provider: str | None = None, model: str | None = None, messages: Any = None,
                 params: dict[str, Any] | None = None, operation: str = "chat", source: str = "manual",
                 extract: Callable[[Any], dict[str, Any]] | None = None,
                 started_at: float | None = None) -> None:
        self._spec = CallSpec(None, provider, operation, source, extract)
        request_kwargs = dict(params) if isinstance(params, dict) else {}
        request_kwargs["model"], request_kwargs["messages"] = model, messages
        self._request: dict[str, Any] | None = request_kwargs
        self._started_at = started_at
        self._draft: dict[str, Any] | None = None
        self._eff: Effective | None = None
        self._stream: StreamState | None = None
        self._given: dict[str, Any] = {}
        self._result: Any = None

    @property
    def recording(self) -> bool:
        """True while this call may produce a record (under errors-only: if it fails)."""
        return self._draft is not None

    def start(self) -> call:
        """Take the head decision under the current scope and capture the request."""
        request_kwargs, self._request = self._request, None
        if request_kwargs is None:  # started already
            return self
        eff, mode = decide()
        if mode != SKIP:
            self._eff = eff
            self._draft = start(eff, self._spec, mode, (), request_kwargs, self._started_at)
        return self

    def __enter__(self) -> call:
        return self.start()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.end(error=exc)

    def set(self, **fields: Any) -> None:
        """Set more LMCall fields (cache_hit=, response_id=, metadata=, server_address=, ...)."""
        if self._draft is not None:
            self._given.update(fields)

    def output(self, text: str | None = None, *, result: Any = None, usage: Any = None,
               finish_reason: str | None = None, outputs: Any = None, cost: float | None = None,
               **fields: Any) -> None:
        """Give the outcome: a raw `result` to read, and/or the fields themselves (which win)."""
        if self._draft is None:
            return
        try:
            given = self._given
            given.update(fields)
            for name, value in (("output_text", text), ("outputs", outputs),
                                ("finish_reason", finish_reason), ("cost", cost)):
                if value is not None:
                    given[name] = value
            if usage is not None:
                usage_fields(usage, given)
            if result is not None:
                self._result = result
        except Exception as exc:  # noqa: BLE001
            counters.COUNTERS.error("capture", exc)

    def chunk(self, chunk: Any) -> None:
        """Record one piece of a streamed response (a str or a provider's chunk)."""
        if self._draft is None or self._eff is None:
            return
        if self._stream is None:
            self._stream = StreamState(self._draft, self._spec, self._eff)
        self._stream.chunk(chunk)

    def end(self, error: BaseException | None = None, *, ended_at: float | None = None) -> None:
        """Finish the call, once; `error` records a failure. Never raises."""
        draft, eff, self._draft = self._draft, self._eff, None
        if draft is None or eff is None:
            return
        result, self._result = self._result, None
        given = self._given or None
        if self._stream is not None:  # the joined chunks are the output
            self._stream.end(error, given=given, ended=ended_at)
        else:  # the result is read first, then the given fields win
            finish(draft, self._spec, eff, result, error, ended_at, given)
