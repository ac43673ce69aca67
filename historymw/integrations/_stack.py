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
import time
from collections.abc import Callable
from typing import Any

from .. import counters
from ..capture import decide, finish, start
from ..draft import CallSpec
from ..extract import usage_fields
from ..policy import SKIP
from ..streams import AsyncStream as AsyncStream  # the integrations' stream stand-ins are the core's
from ..streams import SyncStream as SyncStream


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
    return {op: CallSpec(None, provider, op, source, None) for op in operations}


class Recording:
    """One call being recorded: the core's draft and scope decision, nothing of the caller's."""

    __slots__ = ("draft", "eff", "spec", "t0")

    def __init__(self, draft: dict[str, Any], eff: Any, spec: CallSpec) -> None:
        self.draft: dict[str, Any] | None = draft
        self.eff = eff
        self.spec = spec
        self.t0 = time.perf_counter()

    def labels(self) -> dict[str, Any]:
        """The session and tags the enclosing `history(...)` scopes gave this call."""
        labels = self.eff.labels
        return labels if isinstance(labels, dict) else {}

    def end(self, result: Any = None, error: BaseException | None = None, given: dict[str, Any] | None = None,
            ended: float | None = None) -> None:
        """Finish the record, once (the core reads `result`, then `given` fields win)."""
        draft, self.draft = self.draft, None
        if draft is not None:
            finish(draft, self.spec, self.eff, result, error, ended, given or None)


def begin(spec: CallSpec, model: Any, messages: Any, params: dict[str, Any],
          started: float | None = None) -> Recording | None:
    """Take the head decision under the current scope; a Recording when the call is kept."""
    eff, mode = decide()
    if mode == SKIP:
        return None
    params["model"], params["messages"] = model, messages
    draft = start(eff, spec, mode, (), params, started)
    return None if draft is None else Recording(draft, eff, spec)


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
        rec.end(None, error, given)
