"""What the SDK and framework integrations share: one record per call when they stack,
and the few calls into the core they record through.

A LangChain `ChatOpenAI` or a LlamaIndex `OpenAI` LLM calls the OpenAI SDK. With both
integrations installed, the framework's integration opens a `Frame` (in the caller's
context) for the duration of its LLM call; the SDK's integration, seeing an open frame,
records nothing and leaves what only the SDK knows (usage, the server, the response
id) in the frame for the framework's record. The frame is opened whatever the
framework's own head decision was: a call the framework's scope skipped or sampled
out is not recorded by the SDK either.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from .. import counters
from ..draft import LABEL_CHARS, CallSpec
from ..extract import usage_fields
from ..recording import Recording as Recording  # the one object every integration records through
from ..streams import AsyncStream as AsyncStream  # the integrations' stream stand-ins are the core's
from ..streams import SyncStream as SyncStream
from ._common import call_shape


class Frame:
    """A framework LLM call in flight. `found` collects what the SDK call inside it saw."""

    __slots__ = ("open", "found")

    def __init__(self) -> None:
        self.open = True
        self.found: dict[str, Any] | None = None

    def deposit(self, usage: Any = None, **fields: Any) -> None:
        """Called by an SDK integration: keep its usage and details for the framework's record."""
        try:
            found = self.found
            if found is None:
                found = self.found = {}
            if usage is not None:
                usage_fields(usage, found)
            for name, value in fields.items():
                if value is not None:
                    found[name] = value
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error("integration", exc)


OUTER: contextvars.ContextVar[Frame | None] = contextvars.ContextVar("historymw_framework_call", default=None)


def open_frame() -> tuple[Frame, contextvars.Token[Frame | None]]:
    frame = Frame()
    return frame, OUTER.set(frame)


def close_frame(frame: Frame, token: contextvars.Token[Frame | None] | None) -> None:
    """Close the frame; restore the previous one when still in the context that opened it."""
    frame.open = False
    if token is not None:
        try:
            OUTER.reset(token)
        except ValueError:  # ended in another context (a stream closed elsewhere): closed is enough
            pass


def inside_framework() -> Frame | None:
    """The open framework call the current SDK call belongs to, if any."""
    frame = OUTER.get()
    return frame if frame is not None and frame.open else None


def specs(provider: str | None, source: str, *operations: str) -> dict[str, CallSpec]:
    return {op: spec_for(provider, source, op) for op in operations}


def spec_for(provider: str | None, source: str, operation: str) -> CallSpec:
    # The cache keeps its keys: a provider name is clipped (as CallSpec would) before it is one.
    return _spec_for(str.__str__(provider)[:LABEL_CHARS] if isinstance(provider, str) else None, source, operation)


@functools.lru_cache(maxsize=256)
def _spec_for(provider: str | None, source: str, operation: str) -> CallSpec:
    """The spec of a framework's calls to one provider (LangChain and LlamaIndex learn it per call),
    so that the record is begun with its provider instead of having it written in afterwards."""
    return CallSpec(call_shape, provider, operation, source, None)


def begin(spec: CallSpec, model: Any, messages: Any, params: dict[str, Any], where: str) -> Recording | None:
    """Take the head decision under the current scope and capture the request: a Recording when the
    call is kept. `params` becomes the record's (hand over a dict of your own); errors count under `where`."""
    rec = Recording.begin(spec, where=where)
    return rec if rec is not None and rec.request(model, messages, params) else None


def scope_labels(rec: Recording) -> dict[str, Any]:
    """The session and tags the enclosing `history(...)` scopes gave this call."""
    labels = rec.eff.labels
    return labels if isinstance(labels, dict) else {}


class Patches:
    """The methods an integration replaced on a library's classes, and what they replaced, to put back.

    Each wrapper carries the library's own method as `__historymw_original__`; a method that is
    already a historymw wrapper (another copy of the integration module, after a reload) is
    replaced by a wrapper of the library's method, not wrapped a second time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: list[tuple[type, str, Any]] = []  # (class, method name, the original attribute)

    def __bool__(self) -> bool:
        return bool(self._done)

    def apply(self, targets: Iterable[tuple[type | None, str, Callable[[Any], Any]]]) -> None:
        """Replace each (class, method, wrap) by `wrap(original)`, once: a second call does nothing.
        A class or method this version of the library lacks is passed over."""
        with self._lock:
            if self._done:
                return
            for cls, name, wrap in targets:
                orig = cls.__dict__.get(name) if cls is not None else None
                if cls is None or orig is None:
                    continue
                own = getattr(orig, "__historymw_original__", orig)  # the library's method under any wrapper
                wrapper = wrap(own)
                wrapper.__historymw_original__ = own
                setattr(cls, name, wrapper)
                self._done.append((cls, name, orig))

    def restore(self) -> None:
        """Put the library's own methods back."""
        with self._lock:
            while self._done:
                cls, name, orig = self._done.pop()
                setattr(cls, name, orig)


def server_of(url: Any) -> dict[str, Any]:
    """server_address/server_port of a client's base URL (an httpx URL), never its credentials."""
    host = getattr(url, "host", None)
    if not isinstance(host, str) or not host:
        return {}
    port = getattr(url, "port", None)
    if not isinstance(port, int):
        port = 443 if getattr(url, "scheme", "") == "https" else 80
    return {"server_address": host, "server_port": port}


RAW_HEADER = "X-Stainless-Raw-Response"  # how the SDKs' with_raw_response/with_streaming_response mark a call


def raw_mode(kwargs: dict[str, Any]) -> str | None:
    """"stream" under with_streaming_response; "true" (OpenAI) or "raw" (Anthropic) under
    with_raw_response; else None."""
    headers = kwargs.get("extra_headers")
    if type(headers) is dict and headers:
        mode = headers.get(RAW_HEADER)
        return mode if isinstance(mode, str) else None
    return None


def parse_raw(result: Any, mode: str, stream: bool, given: dict[str, Any]) -> Any:
    """The parsed body of a with_raw_response result (the SDK caches it: the caller's parse() gets
    the same object); None when the body is the caller's to read (streams, with_streaming_response),
    and then the HTTP status goes into `given`."""
    if mode != "stream" and not stream:
        return result.parse()
    status = getattr(getattr(result, "http_response", None), "status_code", None)
    if isinstance(status, int):
        given["metadata"] = {"http_status": status}
    return None


def http_status(error: BaseException) -> dict[str, Any] | None:
    """{"metadata": {"http_status": N}} for an SDK error that carries one."""
    status = getattr(error, "status_code", None)
    return {"metadata": {"http_status": status}} if isinstance(status, int) else None


class FrameworkRun:
    """One framework LLM call in flight (a LangChain run, a LlamaIndex span): its recording, the
    frame SDK calls inside it report to, time to first token, and the fields gathered so far."""

    __slots__ = ("rec", "frame", "token", "ttft", "t0", "given")

    def __init__(self, rec: Recording | None, frame: Frame, token: contextvars.Token[Frame | None]) -> None:
        self.rec, self.frame, self.token = rec, frame, token
        self.given: dict[str, Any] = {}
        self.ttft: float | None = None
        self.t0 = time.perf_counter()

    def finish(self, response: Any, error: BaseException | None,
               read_result: Callable[[Any, dict[str, Any]], None]) -> None:
        """Close the frame and end the record: `read_result(response, given)` reads the framework's
        result; what the SDK call inside saw (its usage is the provider's own count) wins."""
        close_frame(self.frame, self.token)
        rec = self.rec
        if rec is None or rec.draft is None:
            return
        given = self.given
        if self.ttft is not None:
            given["stream"] = True
            given["time_to_first_token_s"] = self.ttft
        if response is not None:
            read_result(response, given)
        elif error is not None:
            given.update(http_status(error) or {})
        found = self.frame.found
        if found:
            given.update(found)
        end(rec, None, error, given)


def end(rec: Recording, result: Any, error: BaseException | None, given: dict[str, Any]) -> None:
    """Finish the record, once: with the call's error, else its result (read by the core); the
    `given` fields win over what the result says."""
    if error is not None:
        rec.fail(error, **given)
    else:
        rec.succeed(result, **given)


class Runs:
    """Framework calls in flight, by the framework's id for them (a LangChain run id, a LlamaIndex
    span id), shared by every handler of one integration so that a call two handlers see is
    recorded once. Bounded: past `limit`, the oldest (a run whose end never came, such as a
    dropped stream) is forgotten, its frame closed, and counted as `integration_timeout`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._runs: OrderedDict[Hashable, FrameworkRun] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._runs

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, key: Hashable) -> FrameworkRun | None:
        return self._runs.get(key)

    def add(self, key: Hashable, run: FrameworkRun) -> None:
        with self._lock:
            self._runs[key] = run
            while len(self._runs) > self.limit:
                _, old = self._runs.popitem(last=False)
                close_frame(old.frame, None)
                counters.COUNTERS.drop("integration_timeout", 1)

    def pop(self, key: Hashable) -> FrameworkRun | None:
        with self._lock:
            return self._runs.pop(key, None)

    def close_all(self) -> None:
        """Forget every run in flight and close its frame (the integration is being removed)."""
        with self._lock:
            runs = list(self._runs.values())
            self._runs.clear()
        for run in runs:
            close_frame(run.frame, None)
