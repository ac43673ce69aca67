"""Anthropic SDK integration: each `messages.create` and `messages.stream` call is one record.

    from historymw.integrations import anthropic as hm_anthropic
    hm_anthropic.install()

`install()` wraps `Messages.create` and `Messages.stream` (and their async
counterparts). The record has the `system=` prompt as `system_instructions`,
the tools offered as `tool_definitions`, text and `tool_use` blocks as
`outputs`, `stop_reason` as `finish_reason`, and the prompt-cache read and
creation tokens. A stream's record is written when it ends, fails, or is closed
or dropped by the caller. The API key and headers are never read. Inside a
LangChain call its integration records (`ChatAnthropic`), the SDK call adds no
record of its own: its usage goes into that framework's record.
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
from ..streams import stand_in
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

_MODULES = ("anthropic.resources.messages.messages", "anthropic.resources.beta.messages.messages")
_SPECS = specs("anthropic", "anthropic", "chat")
_patches: Patches = globals().get("_patches") or Patches()  # the same one after importlib.reload


def _sdk() -> Any:
    return require("anthropic", what="historymw.integrations.anthropic", extra="anthropic")


def install() -> None:
    """Record every Anthropic messages.create and messages.stream call (sync and async). Idempotent."""
    _sdk()
    import importlib

    modules = [importlib.import_module(name) for name in _MODULES]
    _patches.apply((getattr(module, cls_name, None), method, wrap)
                   for module in modules for cls_name, method, wrap in _TARGETS)


def uninstall() -> None:
    """Put the SDK's own methods back. Streams already handed out still finish their records."""
    _patches.restore()


def installed() -> bool:
    return bool(_patches)


# -- request and outcome -------------------------------------------------------------


def _system_text(system: Any) -> list[Any] | None:
    if isinstance(system, str):
        return [system]
    if isinstance(system, list):
        return [b.get("text") if isinstance(b, dict) and isinstance(b.get("text"), str) else b for b in system]
    return None


def _prepare(resource: Any, kwargs: dict[str, Any]) -> tuple[Recording | None, Frame | None, dict[str, Any]] | None:
    try:
        given = server_of(getattr(getattr(resource, "_client", None), "base_url", None))
        frame = inside_framework()
        if frame is not None:
            return None, frame, given
        params = model_params(kwargs)
        tools = params.pop("tools", None)
        stop = kwargs.get("stop_sequences")
        if isinstance(stop, list):
            params["stop"] = stop
        rec = begin(_SPECS["chat"], kwargs.get("model"), kwargs.get("messages"), params, "anthropic_integration")
        if rec is None:
            return None
        if tools:
            given["tool_definitions"] = tools
        system = _system_text(kwargs.get("system"))
        if system:
            given["system_instructions"] = system
        return rec, None, given
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("anthropic_integration", exc)
        return None


def _failed(rec: Recording | None, given: dict[str, Any], exc: BaseException) -> None:
    if rec is not None:
        given.update(http_status(exc) or {})
        end(rec, None, exc, given)


def _finished(rec: Recording | None, frame: Frame | None, result: Any, kwargs: dict[str, Any],
              given: dict[str, Any]) -> Any:
    try:
        stream = kwargs.get("stream") is True
        raw = raw_mode(kwargs)
        if raw is not None:
            parsed = parse_raw(result, raw, stream, given)
            if frame is not None:
                if parsed is not None:
                    rid = getattr(parsed, "id", None)
                    frame.deposit(getattr(parsed, "usage", None), response_id=rid if isinstance(rid, str) else None,
                                  **given)
            elif rec is not None:
                end(rec, parsed, None, given)
            return result
        if stream:
            acc = _Acc(rec, frame, given)
            if hasattr(result, "__anext__"):
                return AsyncStream(result, acc)
            if hasattr(result, "__next__"):
                return SyncStream(result, acc)
            acc.done(None)
        elif frame is not None:
            rid = getattr(result, "id", None)
            frame.deposit(getattr(result, "usage", None), response_id=rid if isinstance(rid, str) else None, **given)
        elif rec is not None:
            end(rec, result, None, given)  # the core reads an Anthropic Message: blocks, stop_reason, usage
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("anthropic_integration", exc)
    return result


class _Acc:
    """Raw stream events (message_start, content_block_*, message_delta) read into one record."""

    __slots__ = ("rec", "frame", "given", "parts", "blocks", "usage", "ttft", "t0", "open")

    def __init__(self, rec: Recording | None, frame: Frame | None, given: dict[str, Any]) -> None:
        self.rec, self.frame, self.given = rec, frame, given
        self.parts: list[str] = []
        self.blocks: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] = {}
        self.ttft: float | None = None
        self.t0 = rec.t0 if rec is not None else time.perf_counter()
        self.open = True
        given["stream"] = True

    def see(self, event: Any) -> None:
        try:
            kind = getattr(event, "type", None)
            if kind == "content_block_delta":
                delta = getattr(event, "delta", None)
                if self.ttft is None:
                    self.ttft = time.perf_counter() - self.t0
                text = getattr(delta, "text", None)
                if isinstance(text, str):
                    self.parts.append(text)
                    return
                partial = getattr(delta, "partial_json", None)
                block = self.blocks.get(getattr(event, "index", -1))
                if isinstance(partial, str) and block is not None:
                    block["input_json"] = block.get("input_json", "") + partial
            elif kind == "message_start":
                message = getattr(event, "message", None)
                self._usage(getattr(message, "usage", None))
                rid, model = getattr(message, "id", None), getattr(message, "model", None)
                if isinstance(rid, str):
                    self.given["response_id"] = rid
                if isinstance(model, str):
                    self.given["response_model"] = model
            elif kind == "content_block_start":
                block = getattr(event, "content_block", None)
                if getattr(block, "type", None) == "tool_use":
                    self.blocks[getattr(event, "index", len(self.blocks))] = {
                        "type": "tool_use", "id": getattr(block, "id", None), "name": getattr(block, "name", None)}
            elif kind == "message_delta":
                reason = getattr(getattr(event, "delta", None), "stop_reason", None)
                if isinstance(reason, str):
                    self.given["finish_reason"] = reason
                self._usage(getattr(event, "usage", None))
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error("anthropic_integration", exc)

    def _usage(self, usage: Any) -> None:
        # message_start has the input and cache counts, message_delta the output count (later ones win).
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            value = getattr(usage, name, None)
            if isinstance(value, int):
                self.usage[name] = value

    def done(self, error: BaseException | None, abandoned: bool = False) -> None:
        if not self.open:
            return
        self.open = False
        try:
            given = self.given
            usage = self.usage or None
            if self.frame is not None:
                self.frame.deposit(usage, response_id=given.get("response_id"),
                                   **{k: v for k, v in given.items() if k.startswith("server_")})
                return
            if self.rec is None:
                return
            if self.parts:
                given["output_text"] = "".join(self.parts)
            outputs: list[Any] = [{"type": "text", "text": given["output_text"]}] if self.parts else []
            outputs.extend(self.blocks[i] for i in sorted(self.blocks))
            if outputs:
                given["outputs"] = outputs
            if self.ttft is not None:
                given["time_to_first_token_s"] = self.ttft
            if usage is not None:
                usage_fields(usage, given)
            if abandoned and error is None:
                error = StreamAbandoned(f"stream closed by the caller after {len(self.parts)} text chunks")
            if error is not None:
                status = http_status(error)
                if status:
                    given.update(status)
            end(self.rec, None, error, given)
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error("anthropic_integration", exc)


# -- the wrappers --------------------------------------------------------------------


def _wrap_create(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        prepared = _prepare(self, kwargs)
        if prepared is None:
            return orig(self, *args, **kwargs)
        rec, frame, given = prepared
        try:
            result = orig(self, *args, **kwargs)
        except BaseException as exc:
            _failed(rec, given, exc)
            raise
        return _finished(rec, frame, result, kwargs, given)
    return create


def _wrap_acreate(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        prepared = _prepare(self, kwargs)
        if prepared is None:
            return await orig(self, *args, **kwargs)
        rec, frame, given = prepared
        try:
            result = await orig(self, *args, **kwargs)
        except BaseException as exc:
            _failed(rec, given, exc)
            raise
        return _finished(rec, frame, result, kwargs, given)
    return create


class _Manager:
    """Stands in for `MessageStreamManager` (sync and async): the request is made, and the record
    begun, when the block is entered; leaving it before the stream ended records an abandoned stream."""

    __slots__ = ("_inner", "_kwargs", "_acc", "_resource")

    def __init__(self, inner: Any, resource: Any, kwargs: dict[str, Any]) -> None:
        self._inner = inner
        self._resource: Any = resource
        self._kwargs: Any = kwargs
        self._acc: _Acc | None = None

    def _begin(self) -> tuple[Recording | None, Frame | None, dict[str, Any]] | None:
        prepared = _prepare(self._resource, self._kwargs)
        self._resource = self._kwargs = None
        return prepared

    def _watch(self, stream: Any, prepared: tuple[Recording | None, Frame | None, dict[str, Any]] | None) -> None:
        if prepared is None:
            return
        try:
            rec, frame, given = prepared
            acc = self._acc = _Acc(rec, frame, given)
            stream._iterator = stand_in(stream._iterator, acc)  # MessageStream reads every event through it
        except Exception as exc:  # noqa: BLE001 - an SDK without _iterator: the stream is not recorded
            counters.COUNTERS.error("anthropic_integration", exc)

    def __enter__(self) -> Any:
        prepared = self._begin()
        try:
            stream = self._inner.__enter__()
        except BaseException as exc:
            if prepared is not None:
                _failed(prepared[0], prepared[2], exc)
            raise
        self._watch(stream, prepared)
        return stream

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._inner.__exit__(*exc)
        finally:
            if self._acc is not None:
                self._acc.done(None, abandoned=True)

    async def __aenter__(self) -> Any:
        prepared = self._begin()
        try:
            stream = await self._inner.__aenter__()
        except BaseException as exc:
            if prepared is not None:
                _failed(prepared[0], prepared[2], exc)
            raise
        self._watch(stream, prepared)
        return stream

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._inner.__aexit__(*exc)
        finally:
            if self._acc is not None:
                self._acc.done(None, abandoned=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _wrap_stream(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _Manager(orig(self, *args, **kwargs), self, kwargs)
    return stream


def _wrap_astream(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _Manager(orig(self, *args, **kwargs), self, kwargs)
    return stream


_TARGETS = (("Messages", "create", _wrap_create), ("AsyncMessages", "create", _wrap_acreate),
            ("Messages", "stream", _wrap_stream), ("AsyncMessages", "stream", _wrap_astream))
