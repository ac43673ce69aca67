"""OpenAI SDK integration: each `chat.completions.create` and `responses.create` call is one record.

    from historymw.integrations import openai as hm_openai
    hm_openai.install()

`install()` wraps the `create` methods of the SDK's chat-completions and Responses
resources (sync and async clients). The `.stream(...)` helpers and
`with_raw_response` go through them. A stream (`stream=True`) is handed back
wrapped: the record is written when it ends, fails, is closed early, or is
dropped by the caller. The record keeps the model parameters only (an
allow-list), never the API key, headers or `extra_body`, and the server's host
and port from the client's `base_url`. Inside a LangChain or LlamaIndex call
that its own integration records, the SDK call adds no record of its own: its
usage goes into that framework's record.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from .. import counters
from ..capture import StreamAbandoned
from ..errors import require
from ..extract import usage_fields
from ._common import model_params
from ._stack import (
    AsyncStream,
    Frame,
    Patches,
    Recording,
    SyncStream,
    begin,
    end,
    http_status,
    inside_framework,
    parse_raw,
    raw_mode,
    server_of,
    specs,
)

__all__ = ["install", "installed", "uninstall"]

_TARGETS = (  # (module, class, method, kind)
    ("openai.resources.chat.completions.completions", "Completions", "create", "chat"),
    ("openai.resources.chat.completions.completions", "AsyncCompletions", "create", "chat"),
    ("openai.resources.responses.responses", "Responses", "create", "responses"),
    ("openai.resources.responses.responses", "AsyncResponses", "create", "responses"),
)
_SPECS = specs("openai", "openai", "chat")
_patches: Patches = globals().get("_patches") or Patches()  # the same one after importlib.reload


def _sdk() -> Any:
    return require("openai", what="historymw.integrations.openai", extra="openai")


def install() -> None:
    """Record every OpenAI chat-completions and Responses call (sync and async clients). Idempotent."""
    _sdk()
    import importlib

    _patches.apply(  # a resource this SDK version lacks is passed over
        (getattr(importlib.import_module(module), cls_name, None), method,
         functools.partial(_wrap_async if cls_name.startswith("Async") else _wrap_sync, kind=kind))
        for module, cls_name, method, kind in _TARGETS)


def uninstall() -> None:
    """Put the SDK's own methods back. Streams already handed out still finish their records."""
    _patches.restore()


def installed() -> bool:
    return bool(_patches)


# -- the request ---------------------------------------------------------------------


def _request(kind: str, kwargs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """(model, messages, params, given fields) of a create() call's keyword arguments."""
    params = model_params(kwargs)
    given: dict[str, Any] = {}
    tools = params.pop("tools", None)
    if tools:
        given["tool_definitions"] = tools
    if kind == "chat":
        messages = kwargs.get("messages")
    else:
        messages = kwargs.get("input")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        instructions = kwargs.get("instructions")
        if isinstance(instructions, str):
            given["system_instructions"] = [instructions]
        reasoning = kwargs.get("reasoning")
        if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
            params["reasoning_effort"] = reasoning["effort"]
    return kwargs.get("model"), messages, params, given


# -- the outcome ---------------------------------------------------------------------


def _responses_fields(resp: Any, given: dict[str, Any]) -> None:
    """output_text, outputs and finish_reason of a Responses API `Response` (the core reads usage and ids)."""
    outputs: list[dict[str, Any]] = []
    texts: list[str] = []
    for item in getattr(resp, "output", None) or ():
        kind = getattr(item, "type", None)
        if kind == "message":
            text = "".join(str(getattr(p, "text", "") or "") for p in getattr(item, "content", None) or ())
            texts.append(text)
            outputs.append({"type": "message", "role": getattr(item, "role", None), "content": text})
        elif kind == "function_call":
            outputs.append({"type": "function_call", "name": getattr(item, "name", None),
                            "arguments": getattr(item, "arguments", None), "call_id": getattr(item, "call_id", None)})
        elif isinstance(kind, str):
            outputs.append({"type": kind})
    if texts:
        given["output_text"] = "".join(texts)
    if outputs:
        given["outputs"] = outputs
    details = getattr(resp, "incomplete_details", None)
    reason = getattr(details, "reason", None) if details is not None else None
    status = getattr(resp, "status", None)
    if isinstance(reason, str) or isinstance(status, str):
        given["finish_reason"] = reason if isinstance(reason, str) else status


def _deposit(frame: Frame, kind: str, result: Any, server: dict[str, Any]) -> None:
    """Inside a framework's call: only what the framework cannot see goes to its record."""
    rid = getattr(result, "id", None)
    frame.deposit(getattr(result, "usage", None), response_id=rid if isinstance(rid, str) else None, **server)


def _finished(rec: Recording | None, frame: Frame | None, kind: str, result: Any,
              given: dict[str, Any]) -> Any:
    """Record a create() call's result; a stream comes back wrapped, to be recorded when it ends."""
    try:
        raw = raw_mode(given.pop("_kwargs", {}))
        stream = given.pop("_stream", False)
        if raw is not None:
            parsed = parse_raw(result, raw, stream, given)
            if frame is not None:
                if parsed is not None:
                    _deposit(frame, kind, parsed, given)
            elif rec is not None:
                if parsed is not None and kind == "responses":
                    _responses_fields(parsed, given)
                end(rec, parsed, None, given)
            return result
        if stream:
            acc = _Acc(rec, frame, kind, given)
            if hasattr(result, "__anext__"):
                return AsyncStream(result, acc)
            if hasattr(result, "__next__"):
                return SyncStream(result, acc)
            acc.done(None)
            return result
        if frame is not None:
            _deposit(frame, kind, result, {k: v for k, v in given.items() if k.startswith("server_")})
        elif rec is not None:
            if kind == "responses":
                _responses_fields(result, given)
            end(rec, result, None, given)
    except Exception as exc:  # noqa: BLE001 - fail open: the caller gets its result
        counters.COUNTERS.error("openai_integration", exc)
        if rec is not None:
            end(rec, None, None, given)
    return result


class _Acc:
    """A stream's chunks or events, read into one record (or, stacked, into the framework's)."""

    __slots__ = ("rec", "frame", "kind", "given", "parts", "tools", "usage", "ttft", "t0", "open")

    def __init__(self, rec: Recording | None, frame: Frame | None, kind: str, given: dict[str, Any]) -> None:
        self.rec, self.frame, self.kind, self.given = rec, frame, kind, given
        self.parts: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.usage: Any = None
        self.ttft: float | None = None
        self.t0 = rec.t0 if rec is not None else time.perf_counter()
        self.open = True
        given["stream"] = True

    def see(self, item: Any) -> None:
        try:
            if self.kind == "chat":
                self._chat(item)
            else:
                self._event(item)
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error("openai_integration", exc)

    def _text(self, text: str) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.t0
        self.parts.append(text)

    def _chat(self, chunk: Any) -> None:
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
        rid = getattr(chunk, "id", None)
        if isinstance(rid, str) and "response_id" not in self.given:
            self.given["response_id"] = rid
            model = getattr(chunk, "model", None)
            if isinstance(model, str):
                self.given["response_model"] = model
        choices = getattr(chunk, "choices", None)
        if not choices:
            return
        choice = choices[0]
        delta = getattr(choice, "delta", None)
        if delta is not None:
            text = getattr(delta, "content", None)
            if text:
                self._text(text)
            for call in getattr(delta, "tool_calls", None) or ():
                if self.ttft is None:
                    self.ttft = time.perf_counter() - self.t0
                index = getattr(call, "index", 0)
                slot = self.tools.setdefault(index if isinstance(index, int) else 0, {"name": None, "arguments": ""})
                fn = getattr(call, "function", None)
                name, args = getattr(fn, "name", None), getattr(fn, "arguments", None)
                if isinstance(name, str):
                    slot["name"] = name
                if isinstance(args, str):
                    slot["arguments"] += args
        reason = getattr(choice, "finish_reason", None)
        if isinstance(reason, str):
            self.given["finish_reason"] = reason

    def _event(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            delta = getattr(event, "delta", None)
            if isinstance(delta, str) and delta:
                self._text(delta)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            resp = getattr(event, "response", None)
            self.usage = getattr(resp, "usage", None)
            rid, model = getattr(resp, "id", None), getattr(resp, "model", None)
            if isinstance(rid, str):
                self.given["response_id"] = rid
            if isinstance(model, str):
                self.given["response_model"] = model
            _responses_fields(resp, self.given)

    def done(self, error: BaseException | None, abandoned: bool = False) -> None:
        """The stream ended (or failed, or was closed or dropped by the caller): write the record, once."""
        if not self.open:
            return
        self.open = False
        try:
            given = self.given
            if self.frame is not None:
                rid = given.get("response_id")
                self.frame.deposit(self.usage, response_id=rid,
                                   **{k: v for k, v in given.items() if k.startswith("server_")})
                return
            if self.rec is None:
                return
            if self.parts and "output_text" not in given:
                given["output_text"] = "".join(self.parts)
            if self.tools and "outputs" not in given:
                given["outputs"] = [{"type": "tool_call", **t} for _, t in sorted(self.tools.items())]
            if self.ttft is not None:
                given["time_to_first_token_s"] = self.ttft
            if self.usage is not None:
                usage_fields(self.usage, given)
            if abandoned and error is None:
                error = StreamAbandoned(f"stream closed by the caller after {len(self.parts)} text chunks")
            if error is not None:
                merged = http_status(error)
                if merged:
                    given.setdefault("metadata", {}).update(merged["metadata"])
            end(self.rec, None, error, given)
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error("openai_integration", exc)


# -- the wrappers --------------------------------------------------------------------


def _prepare(resource: Any, kind: str, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> tuple[Recording | None, Frame | None, dict[str, Any]] | None:
    """Before the call: (recording, framework frame, given fields), or None when nothing is to be kept."""
    try:
        frame = inside_framework()
        client = getattr(resource, "_client", None)
        given = server_of(getattr(client, "base_url", None))
        given["_kwargs"] = kwargs
        given["_stream"] = kwargs.get("stream") is True
        if frame is not None:
            return None, frame, given
        model, messages, params, extra = _request(kind, kwargs)
        rec = begin(_SPECS["chat"], model, messages, params, "openai_integration")
        if rec is None:
            return None
        given.update(extra)
        return rec, None, given
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("openai_integration", exc)
        return None


def _failed(rec: Recording | None, given: dict[str, Any], exc: BaseException) -> None:
    if rec is not None:
        given.pop("_kwargs", None)
        given.pop("_stream", None)
        status = http_status(exc)
        if status:
            given.update(status)
        end(rec, None, exc, given)


def _wrap_sync(orig: Callable[..., Any], kind: str) -> Callable[..., Any]:
    @functools.wraps(orig)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        prepared = _prepare(self, kind, args, kwargs)
        if prepared is None:
            return orig(self, *args, **kwargs)
        rec, frame, given = prepared
        try:
            result = orig(self, *args, **kwargs)
        except BaseException as exc:
            _failed(rec, given, exc)
            raise
        return _finished(rec, frame, kind, result, given)

    return create


def _wrap_async(orig: Callable[..., Any], kind: str) -> Callable[..., Any]:
    @functools.wraps(orig)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        prepared = _prepare(self, kind, args, kwargs)
        if prepared is None:
            return await orig(self, *args, **kwargs)
        rec, frame, given = prepared
        try:
            result = await orig(self, *args, **kwargs)
        except BaseException as exc:
            _failed(rec, given, exc)
            raise
        return _finished(rec, frame, kind, result, given)

    return create
