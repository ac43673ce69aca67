"""LangChain and LangGraph integration: each chat-model or LLM run is one record.

    from historymw.integrations import langchain as hm_langchain
    hm_langchain.install()                      # every run, through LangChain's configure hook
    # or per call:
    chain.invoke(x, config={"callbacks": [hm_langchain.callback_handler()]})

A LangChain callback handler (sync, and an async one) records `on_chat_model_start`
/ `on_llm_start` through `on_llm_end` / `on_llm_error`; streamed runs
(`.stream()`, `.astream()`) are one record with the time to the first token. A
LangGraph `thread_id` (from the run's configurable) becomes the record's
`session` unless a `history(session=...)` scope gives one; the run's tags and
metadata become its `tags`, redacted like parameters. A `ChatOpenAI` or
`ChatAnthropic` run whose SDK integration is installed too is still one record:
this one, with the SDK's usage, server and response id.

Handlers hold no LangChain object: only run ids and the core's drafts.
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any
from uuid import UUID

from .. import counters
from ..errors import require
from ._common import model_params
from ._stack import FrameworkRun, Recording, Runs, begin, inside_framework, open_frame, scope_labels, spec_for

__all__ = ["async_callback_handler", "callback_handler", "install", "installed", "uninstall"]

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "function",
          "chat": "user", "AIMessageChunk": "assistant"}
# LangChain/LangGraph bookkeeping in a run's metadata: read (ls_provider, ls_model_name), not kept as tags.
_INTERNAL = ("ls_", "checkpoint_", "__", "langgraph_triggers", "langgraph_path", "langgraph_checkpoint_ns")
_MAX_RUNS = 10_000  # runs whose end never came (a dropped stream): the oldest are forgotten

_lock = threading.Lock()
_hook_var: contextvars.ContextVar[Any] | None = None
_classes: tuple[type, type] | None = None


# Runs in flight, by LangChain run id, shared by every historymw handler: a run seen by two
# (installed globally and passed per call) is recorded once.
_RUNS = Runs(_MAX_RUNS)


def _langchain() -> Any:
    return require("langchain_core", what="historymw.integrations.langchain", extra="langchain")


def _handler_classes() -> tuple[type, type]:
    global _classes
    if _classes is not None:
        return _classes
    _langchain()
    from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler

    class HistorymwCallbackHandler(BaseCallbackHandler):  # type: ignore[misc]
        """Records LangChain chat-model and LLM runs into historymw."""

        # Called where the run happens (not in an executor with a copied context), so the
        # scope is the caller's and an SDK call inside the run sees this run's frame.
        run_inline = True
        raise_error = False

        def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, **kw: Any) -> None:
            _start(run_id, "chat", messages[0] if messages else [], kw)

        def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: UUID, **kw: Any) -> None:
            _start(run_id, "text_completion", prompts[0] if prompts else None, kw)

        def on_llm_new_token(self, token: str, *, run_id: UUID, **kw: Any) -> None:  # type: ignore[override]
            _token(run_id)

        def on_llm_end(self, response: Any, *, run_id: UUID, **kw: Any) -> None:
            _end(run_id, response, None)

        def on_llm_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
            _end(run_id, None, error)

    class AsyncHistorymwCallbackHandler(AsyncCallbackHandler):  # type: ignore[misc]
        """The async handler: the same records, for code that wants an AsyncCallbackHandler."""

        run_inline = True
        raise_error = False

        async def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, **kw: Any) -> None:
            _start(run_id, "chat", messages[0] if messages else [], kw)

        async def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: UUID, **kw: Any) -> None:
            _start(run_id, "text_completion", prompts[0] if prompts else None, kw)

        async def on_llm_new_token(self, token: str, *, run_id: UUID, **kw: Any) -> None:  # type: ignore[override]
            _token(run_id)

        async def on_llm_end(self, response: Any, *, run_id: UUID, **kw: Any) -> None:
            _end(run_id, response, None)

        async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
            _end(run_id, None, error)

    _classes = (HistorymwCallbackHandler, AsyncHistorymwCallbackHandler)
    return _classes


def callback_handler() -> Any:
    """A handler to pass per call: `config={"callbacks": [callback_handler()]}`."""
    return _handler_classes()[0]()


def async_callback_handler() -> Any:
    """An `AsyncCallbackHandler` doing the same."""
    return _handler_classes()[1]()


def install() -> None:
    """Record every LangChain chat-model and LLM run, in every thread and task. Idempotent."""
    global _hook_var
    handler = callback_handler()
    from langchain_core.tracers.context import register_configure_hook

    with _lock:
        if _hook_var is not None:
            return
        # LangChain adds a hook's handler whenever its ContextVar holds one: the default
        # value holds it for every thread and task, whatever context they start in.
        _hook_var = contextvars.ContextVar("historymw_langchain_handler", default=handler)
        register_configure_hook(_hook_var, True)


def uninstall() -> None:
    """Remove the hook; runs already started finish their records."""
    global _hook_var
    with _lock:
        var, _hook_var = _hook_var, None
        if var is None:
            return
        from langchain_core.tracers import context

        hooks = context._configure_hooks
        hooks[:] = [hook for hook in hooks if hook[0] is not var]


def installed() -> bool:
    return _hook_var is not None


# -- the records ---------------------------------------------------------------------


def _message(m: Any) -> Any:
    """A LangChain message as a plain chat message dict (the core copies it, bounded)."""
    kind = getattr(m, "type", None)
    if not isinstance(kind, str):
        return m
    out: dict[str, Any] = {"role": _ROLES.get(kind, kind), "content": getattr(m, "content", None)}
    tool_calls = getattr(m, "tool_calls", None)
    if tool_calls:
        out["tool_calls"] = tool_calls
    tool_call_id = getattr(m, "tool_call_id", None)
    if isinstance(tool_call_id, str):
        out["tool_call_id"] = tool_call_id
    return out


def _labels(rec: Recording, tags: Any, metadata: Any) -> dict[str, Any]:
    """session from LangGraph's thread_id; the run's tags and metadata merged into the scope's tags."""
    given: dict[str, Any] = {}
    scope = scope_labels(rec)
    meta = metadata if isinstance(metadata, dict) else {}
    thread = meta.get("thread_id")
    if scope.get("session") is None and isinstance(thread, (str, int)) and not isinstance(thread, bool):
        given["session"] = str(thread)
    extra = {k: v for k, v in meta.items() if k != "thread_id" and not k.startswith(_INTERNAL)}
    if isinstance(tags, list) and tags:
        extra["langchain_tags"] = tags
    if extra:
        base = scope.get("tags")
        given["tags"] = {**base, **extra} if isinstance(base, dict) else extra
    return given


def _start(run_id: UUID, operation: str, request: Any, kw: dict[str, Any]) -> None:
    try:
        if run_id in _RUNS:  # another historymw handler has it
            return
        if inside_framework() is not None:  # a call inside another recorded LLM call (a wrapper LLM)
            return
        frame, token = open_frame()
        run = FrameworkRun(None, frame, token)
        meta = kw.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        inv = kw.get("invocation_params")
        inv = inv if isinstance(inv, dict) else {}
        model = meta.get("ls_model_name") or inv.get("model") or inv.get("model_name")
        provider = meta.get("ls_provider") or inv.get("_type")
        params = model_params(inv)
        tools = params.pop("tools", None)
        messages = [_message(m) for m in request] if operation == "chat" else request
        spec = spec_for(provider if isinstance(provider, str) else None, "langchain", operation)
        rec = run.rec = begin(spec, model, messages, params, "langchain_integration")
        if rec is not None:
            run.given = _labels(rec, kw.get("tags"), meta)
            if tools:
                run.given["tool_definitions"] = tools
        _RUNS.add(run_id, run)
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("langchain_integration", exc)


def _token(run_id: UUID) -> None:
    run = _RUNS.get(run_id)
    if run is not None and run.ttft is None:
        run.ttft = time.perf_counter() - run.t0


def _end(run_id: UUID, response: Any, error: BaseException | None) -> None:
    try:
        run = _RUNS.pop(run_id)
        if run is not None:
            run.finish(response, error, _result)
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("langchain_integration", exc)


def _result(response: Any, given: dict[str, Any]) -> None:
    """output_text, outputs, finish_reason, usage and ids from an LLMResult."""
    generations = getattr(response, "generations", None)
    first = generations[0][0] if generations and generations[0] else None
    if first is not None:
        message = getattr(first, "message", None)
        text = getattr(first, "text", None)
        info = getattr(first, "generation_info", None) or {}
        if message is not None:
            content = getattr(message, "content", None)
            text = content if isinstance(content, str) else text
            out: dict[str, Any] = {"role": "assistant", "content": content}
            tool_calls = getattr(message, "tool_calls", None)
            if tool_calls:
                out["tool_calls"] = tool_calls
            given["outputs"] = [out]
            usage = getattr(message, "usage_metadata", None)
            if isinstance(usage, dict):
                _usage_metadata(usage, given)
            meta = getattr(message, "response_metadata", None) or {}
            info = {**meta, **info} if isinstance(meta, dict) else info
            rid = getattr(message, "id", None)
            if isinstance(rid, str) and not rid.startswith("run-") and not rid.startswith("lc_run"):
                given["response_id"] = rid
        if isinstance(text, str):
            given["output_text"] = text
        reason = info.get("finish_reason") or info.get("stop_reason") if isinstance(info, dict) else None
        if isinstance(reason, str):
            given["finish_reason"] = reason
        model = info.get("model_name") or info.get("model") if isinstance(info, dict) else None
        if isinstance(model, str):
            given["response_model"] = model
    output = getattr(response, "llm_output", None)
    if isinstance(output, dict) and "input_tokens" not in given:
        usage = output.get("token_usage") or output.get("usage")
        if usage:
            from ..extract import usage_fields

            usage_fields(usage, given)


def _usage_metadata(usage: dict[str, Any], given: dict[str, Any]) -> None:
    """LangChain's UsageMetadata: input/output/total tokens and their details."""
    for name, field in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                        ("total_tokens", "total_tokens")):
        if isinstance(usage.get(name), int):
            given[field] = usage[name]
    details_in = usage.get("input_token_details") or {}
    details_out = usage.get("output_token_details") or {}
    for source, name, field in ((details_in, "cache_read", "cache_read_input_tokens"),
                                (details_in, "cache_creation", "cache_creation_input_tokens"),
                                (details_out, "reasoning", "reasoning_tokens")):
        if isinstance(source, dict) and isinstance(source.get(name), int):
            given[field] = source[name]
