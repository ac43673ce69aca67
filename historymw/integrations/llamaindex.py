"""LlamaIndex integration: each LLM chat or completion (sync, async, streamed) is one record.

    from historymw.integrations import llamaindex as hm_llamaindex
    hm_llamaindex.install()

`install()` adds an event handler and a span handler to LlamaIndex's root
instrumentation dispatcher. `LLMChatStartEvent`/`LLMCompletionStartEvent` begin
a record, the first `...InProgressEvent` of a stream gives the time to the first
token, `...EndEvent` ends it; a failed call ends it through the span handler's
`prepare_to_drop_span` (with the exception's type), a failed or abandoned
stream through `ExceptionEvent`. Everything an LLM call inside a Workflow does
is covered the same way. An `OpenAI` LLM whose SDK integration is installed
too is still one record: this one, with the SDK's usage, server and response id.

The handlers hold no LlamaIndex object: only span ids and the core's drafts.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .. import counters
from ..capture import StreamAbandoned
from ..errors import require
from ..extract import get, usage_fields
from ._common import model_params
from ._stack import FrameworkRun, Runs, begin, inside_framework, open_frame, spec_for

__all__ = ["install", "installed", "uninstall"]

_MAX_RUNS = 10_000

_lock = threading.Lock()
_handlers: tuple[Any, Any] | None = None
_dispatch: dict[type, Any] = {}


_RUNS = Runs(_MAX_RUNS)  # by the span id LlamaIndex gives every event of one call


def _llamaindex() -> Any:
    return require("llama_index.core", what="historymw.integrations.llamaindex", extra="llamaindex")


def _make_handlers() -> tuple[Any, Any]:
    _llamaindex()
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.exception import ExceptionEvent
    from llama_index.core.instrumentation.events.llm import (
        LLMChatEndEvent,
        LLMChatInProgressEvent,
        LLMChatStartEvent,
        LLMCompletionEndEvent,
        LLMCompletionInProgressEvent,
        LLMCompletionStartEvent,
    )
    from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

    _dispatch.update({
        LLMChatStartEvent: _chat_start, LLMCompletionStartEvent: _completion_start,
        LLMChatInProgressEvent: _progress, LLMCompletionInProgressEvent: _progress,
        LLMChatEndEvent: _end_event, LLMCompletionEndEvent: _end_event, ExceptionEvent: _exception,
    })
    dispatch = _dispatch.get

    class HistorymwEventHandler(BaseEventHandler):  # type: ignore[misc]
        """Hands LlamaIndex's LLM events to historymw."""

        @classmethod
        def class_name(cls) -> str:
            return "HistorymwEventHandler"

        def handle(self, event: Any, **kwargs: Any) -> None:
            fn = dispatch(type(event))
            if fn is not None:
                fn(event)

    class HistorymwSpanHandler(BaseSpanHandler[Any]):  # type: ignore[misc]
        """Tracks no span; hears of a failed LLM call (a dropped span) with its exception."""

        @classmethod
        def class_name(cls) -> str:
            return "HistorymwSpanHandler"

        def new_span(self, id_: str, bound_args: Any, instance: Any = None, parent_span_id: Any = None,
                     tags: Any = None, **kwargs: Any) -> None:
            return None

        def prepare_to_exit_span(self, id_: str, bound_args: Any, instance: Any = None, result: Any = None,
                                 **kwargs: Any) -> None:
            return None

        def prepare_to_drop_span(self, id_: str, bound_args: Any, instance: Any = None,
                                 err: BaseException | None = None, **kwargs: Any) -> None:
            if id_ in _RUNS:
                _end(id_, None, err if err is not None else RuntimeError("the LLM call failed"))
            return None

    return HistorymwEventHandler(), HistorymwSpanHandler()


def install() -> None:
    """Record every LlamaIndex LLM chat and completion call. Idempotent."""
    global _handlers
    _llamaindex()
    from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]

    with _lock:
        if _handlers is None:
            _handlers = _make_handlers()
        events, spans = _handlers
        root = get_dispatcher()
        if not any(h is events for h in root.event_handlers):
            root.add_event_handler(events)
        if not any(h is spans for h in root.span_handlers):
            root.add_span_handler(spans)


def uninstall() -> None:
    """Remove both handlers from the root dispatcher; calls in flight are not recorded."""
    import sys

    with _lock:
        handlers = _handlers
        module = sys.modules.get("llama_index.core.instrumentation")
        if handlers is None or module is None:
            return
        root = module.get_dispatcher()  # type: ignore[attr-defined]
        root.event_handlers = [h for h in root.event_handlers if h is not handlers[0]]
        root.span_handlers = [h for h in root.span_handlers if h is not handlers[1]]
        _RUNS.close_all()


def installed() -> bool:
    import sys

    module = sys.modules.get("llama_index.core.instrumentation")
    handlers = _handlers
    if handlers is None or module is None:
        return False
    return any(h is handlers[0] for h in module.get_dispatcher().event_handlers)


# -- the records ---------------------------------------------------------------------


def _message(m: Any) -> Any:
    role = getattr(m, "role", None)
    role = getattr(role, "value", role)
    if not isinstance(role, str):
        return m
    return {"role": role, "content": getattr(m, "content", None)}


def _begin(event: Any, operation: str, request: Any) -> None:
    try:
        span_id = event.span_id
        if not isinstance(span_id, str) or span_id in _RUNS:
            return
        if inside_framework() is not None:  # a call inside another recorded LLM call (a wrapper LLM)
            return
        frame, token = open_frame()
        run = FrameworkRun(None, frame, token)
        model_dict = event.model_dict if isinstance(event.model_dict, dict) else {}
        extra = event.additional_kwargs if isinstance(event.additional_kwargs, dict) else {}
        params = model_params(model_dict, model_dict.get("additional_kwargs"), extra)
        tools = params.pop("tools", None)
        name = model_dict.get("class_name")
        # "openai_llm" -> "openai": LlamaIndex names its LLM classes after the provider.
        provider = name.split("_")[0].lower() if isinstance(name, str) and name else None
        rec = run.rec = begin(spec_for(provider, "llamaindex", operation),
                              model_dict.get("model") or model_dict.get("model_name"), request, params,
                              "llamaindex_integration")
        if rec is not None and tools:
            run.given["tool_definitions"] = tools
        _RUNS.add(span_id, run)
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("llamaindex_integration", exc)


def _chat_start(event: Any) -> None:
    _begin(event, "chat", [_message(m) for m in event.messages or ()])


def _completion_start(event: Any) -> None:
    _begin(event, "text_completion", event.prompt)


def _progress(event: Any) -> None:
    run = _RUNS.get(event.span_id)
    if run is not None and run.ttft is None:
        run.ttft = time.perf_counter() - run.t0


def _end_event(event: Any) -> None:
    if event.span_id in _RUNS:
        _end(event.span_id, event.response, None)


def _exception(event: Any) -> None:
    if event.span_id in _RUNS:
        error = event.exception
        if isinstance(error, GeneratorExit):
            error = StreamAbandoned("stream closed by the caller")
        _end(event.span_id, None, error)


def _end(span_id: str, response: Any, error: BaseException | None) -> None:
    try:
        run = _RUNS.pop(span_id)
        if run is not None:
            run.finish(response, error, _result)
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("llamaindex_integration", exc)


def _result(response: Any, given: dict[str, Any]) -> None:
    """A ChatResponse or CompletionResponse: text, tool calls, finish reason, usage."""
    message = getattr(response, "message", None)
    if message is not None:
        text = getattr(message, "content", None)
        out: dict[str, Any] = {"role": "assistant", "content": text}
        extra = getattr(message, "additional_kwargs", None)
        tool_calls = extra.get("tool_calls") if isinstance(extra, dict) else None
        if tool_calls:
            out["tool_calls"] = tool_calls
        given["outputs"] = [out]
    else:
        text = getattr(response, "text", None)
    if isinstance(text, str):
        given["output_text"] = text
    raw = getattr(response, "raw", None)
    if raw is not None:
        choices = get(raw, "choices")
        if isinstance(choices, (list, tuple)) and choices:
            reason = get(choices[0], "finish_reason")
            if isinstance(reason, str):
                given["finish_reason"] = reason
        usage = get(raw, "usage")
        if usage is not None:
            usage_fields(usage, given)
        rid, model = get(raw, "id"), get(raw, "model")
        if isinstance(rid, str):
            given["response_id"] = rid
        if isinstance(model, str):
            given["response_model"] = model
    if "input_tokens" not in given:
        extra = getattr(response, "additional_kwargs", None)
        if isinstance(extra, dict) and "prompt_tokens" in extra:
            usage_fields(extra, given)
