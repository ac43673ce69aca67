"""The OpenTelemetry backend: each record becomes a GenAI client span, plus metrics.

Records reach `export()` on historymw's export worker, after the call, so spans
are built there with the call's real start and end times and the parent that
was active on the caller's thread when the call started (its trace id, span id
and trace flags are in the record). A record exists only when the policy kept
the call: a sampled-out call makes no span, and an errors-only call that failed
still lands inside the request trace that caused it.

The application's providers are used (the global ones, or ones passed in); this
module never installs a provider. `historymw.otel.setup()` is the explicit
convenience for applications that have none.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .. import counters, policy
from .. import semconv as sc
from .._version import __version__
from ..errors import require
from ..plain import truncated

if TYPE_CHECKING:
    from ..config import Settings
    from ..record import LMCall

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_US = _dt.timedelta(microseconds=1)
_SCALAR_TAG = (str, bool, int, float)


def _require_otel() -> None:
    require("opentelemetry.trace", what="the 'otel' backend", extra="otel")
    require("opentelemetry.metrics", what="the 'otel' backend", extra="otel")


# -- content opt-in ------------------------------------------------------------------


def content_on_spans(setting: bool | None, environ: Any = None) -> bool:
    """Whether prompts and outputs go on spans: the historymw setting when given, else
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT (SPAN_ONLY, SPAN_AND_EVENT, or legacy true)."""
    if setting is not None:
        return setting
    raw = (os.environ if environ is None else environ).get(sc.CAPTURE_CONTENT_ENV, "")
    value = raw.strip().lower()
    if value not in sc.CAPTURE_KNOWN:
        # OpenTelemetry's rule for a bad value: warn and capture nothing (never fail the application).
        from .._log import logger

        logger.warning("historymw.otel.bad_capture_setting", variable=sc.CAPTURE_CONTENT_ENV, value=raw,
                       allowed="NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT, true, false",
                       note="message content is not captured")
        return False
    return value in sc.CAPTURE_ON_SPANS


# -- record -> span ------------------------------------------------------------------


def _ns(t: _dt.datetime) -> int:
    return ((t - _EPOCH) // _US) * 1000


def provider_name(provider: str | None) -> str | None:
    if not provider:
        return None
    p = provider.lower()
    return sc.PROVIDER_ALIASES.get(p, p)


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


def request_attributes(params: dict[str, Any], attrs: dict[str, Any]) -> None:
    """gen_ai.request.* from the call's (redacted) params."""
    for key, attr, kind in sc.REQUEST_PARAMS:
        if attr not in attrs and key in params:
            v = _number(params[key], kind)
            if v is not None:
                attrs[attr] = v
    for key in sc.STOP_PARAMS:
        stop = params.get(key)
        if isinstance(stop, str):
            attrs[sc.REQUEST_STOP_SEQUENCES] = [stop]
            break
        if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
            attrs[sc.REQUEST_STOP_SEQUENCES] = list(stop)
            break
    for key in sc.CHOICE_COUNT_PARAMS:
        n = _number(params.get(key), int)
        if n is not None:
            if n != 1:
                attrs[sc.REQUEST_CHOICE_COUNT] = n
            break
    fmt = params.get("response_format")
    fmt_type = fmt.get("type") if isinstance(fmt, dict) else fmt
    if isinstance(fmt_type, str):
        attrs[sc.OUTPUT_TYPE] = "json" if fmt_type.startswith("json") else fmt_type


def _finish_reasons(r: LMCall) -> list[str]:
    reasons = [o.get("finish_reason") for o in r.outputs if isinstance(o, dict) and "finish_reason" in o]
    if reasons and all(isinstance(x, str) for x in reasons):
        return reasons  # type: ignore[return-value]
    return [r.finish_reason] if r.finish_reason else []


def _server(address: str) -> tuple[str, int | None]:
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and host and not host.endswith(":"):  # not a bare IPv6 address
        return host.strip("[]"), int(port)
    return address, None


def span_name(r: LMCall) -> str:
    return f"{r.operation} {r.model}" if r.model else r.operation


def _common_attributes(r: LMCall) -> dict[str, Any]:
    """What spans and metric points share: operation, provider, model, server."""
    attrs: dict[str, Any] = {sc.OPERATION_NAME: r.operation}
    provider = provider_name(r.provider)
    if provider:
        attrs[sc.PROVIDER_NAME] = provider
    if r.model:
        attrs[sc.REQUEST_MODEL] = r.model
    if r.server_address:
        host, port = _server(r.server_address)
        attrs[sc.SERVER_ADDRESS] = host
        # The conventions require the port beside the address; one the record does not
        # know is left out rather than guessed (http or https cannot be told from a host).
        if r.server_port is not None:
            port = r.server_port
        if port is not None:
            attrs[sc.SERVER_PORT] = port
    return attrs


def span_attributes(r: LMCall, content: bool, max_chars: int) -> dict[str, Any]:
    """The span's attributes, named by `historymw.semconv`."""
    attrs = _common_attributes(r)
    if r.params:
        request_attributes(r.params, attrs)
    if r.stream:
        attrs[sc.REQUEST_STREAM] = True
        if r.time_to_first_token_s is not None:
            attrs[sc.RESPONSE_TIME_TO_FIRST_CHUNK] = r.time_to_first_token_s
    if r.response_id:
        attrs[sc.RESPONSE_ID] = r.response_id
    if r.response_model:
        attrs[sc.RESPONSE_MODEL] = r.response_model
    reasons = _finish_reasons(r)
    if reasons:
        attrs[sc.RESPONSE_FINISH_REASONS] = reasons
    elif r.status == "error":
        attrs[sc.RESPONSE_FINISH_REASONS] = [sc.FINISH_REASON_ERROR]
    for name, value in ((sc.USAGE_INPUT_TOKENS, r.input_tokens), (sc.USAGE_OUTPUT_TOKENS, r.output_tokens),
                        (sc.USAGE_CACHE_READ_INPUT_TOKENS, r.cache_read_input_tokens),
                        (sc.USAGE_CACHE_CREATION_INPUT_TOKENS, r.cache_creation_input_tokens),
                        (sc.USAGE_REASONING_OUTPUT_TOKENS, r.reasoning_tokens)):
        if value is not None:
            attrs[name] = value
    if r.session is not None:
        attrs[sc.CONVERSATION_ID] = r.session
        attrs[sc.HM_SESSION] = r.session
    if r.status == "error":
        attrs[sc.ERROR_TYPE] = r.error_type or sc.ERROR_TYPE_OTHER
    if r.cost is not None:
        attrs[sc.HM_COST] = r.cost
    if r.cache_hit is not None:
        attrs[sc.HM_CACHE_HIT] = r.cache_hit
    for k, v in r.tags.items():
        if isinstance(v, _SCALAR_TAG):
            attrs[sc.HM_TAG_PREFIX + k] = v
    attrs[sc.HM_SOURCE] = r.source
    attrs[sc.HM_RECORD_ID] = r.id
    if content:
        if r.system_instructions:
            attrs[sc.SYSTEM_INSTRUCTIONS] = to_json(system_instructions(r.system_instructions), max_chars)
        if r.messages:
            attrs[sc.INPUT_MESSAGES] = to_json(input_messages(r.messages), max_chars)
        out = output_messages(r)
        if out:
            attrs[sc.OUTPUT_MESSAGES] = to_json(out, max_chars)
        if r.tool_definitions:
            attrs[sc.TOOL_DEFINITIONS] = to_json(tool_definitions(r.tool_definitions), max_chars)
    return attrs


# -- OpenInference compatibility (opt-in) ---------------------------------------------


def _flat_messages(prefix: str, messages: Sequence[Any], attrs: dict[str, Any], max_chars: int) -> None:
    """OpenInference's flattened llm.*_messages.{i}.message.role/content (text content only)."""
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            continue
        if isinstance(m.get("role"), str):
            attrs[f"{prefix}.{i}.message.role"] = m["role"]
        content = m.get("content")
        if isinstance(content, str):
            attrs[f"{prefix}.{i}.message.content"] = truncated(content, max_chars) if len(content) > max_chars \
                else content


def openinference_attributes(r: LMCall, content: bool, max_chars: int) -> dict[str, Any]:
    """The attributes OpenInference readers (Phoenix, Arize) fill their columns from,
    under the same content rule as the GenAI ones."""
    attrs: dict[str, Any] = {sc.OI_SPAN_KIND: sc.OI_KIND_LLM}
    model = r.response_model or r.model
    if model:
        attrs[sc.OI_MODEL_NAME] = model
    if r.provider:
        attrs[sc.OI_PROVIDER] = r.provider.lower()
    for name, value in ((sc.OI_TOKENS_PROMPT, r.input_tokens), (sc.OI_TOKENS_COMPLETION, r.output_tokens),
                        (sc.OI_TOKENS_TOTAL, r.total_tokens), (sc.OI_TOKENS_CACHE_READ, r.cache_read_input_tokens),
                        (sc.OI_TOKENS_CACHE_WRITE, r.cache_creation_input_tokens),
                        (sc.OI_TOKENS_REASONING, r.reasoning_tokens)):
        if value is not None:
            attrs[name] = value
    if r.total_tokens is None and r.input_tokens is not None and r.output_tokens is not None:
        attrs[sc.OI_TOKENS_TOTAL] = r.input_tokens + r.output_tokens
    if r.session is not None:
        attrs[sc.OI_SESSION_ID] = r.session
    if r.params:  # redacted when the record was sealed, like every param
        attrs[sc.OI_INVOCATION_PARAMETERS] = json.dumps(r.params, default=str)[:max_chars]
    if r.tags:
        attrs[sc.OI_METADATA] = json.dumps(r.tags, default=str)[:max_chars]
    if content:
        if r.messages or r.system_instructions:
            request: dict[str, Any] = {"messages": r.messages}
            if r.system_instructions:
                request["system"] = r.system_instructions
            attrs[sc.OI_INPUT_VALUE] = to_json(request, max_chars)
            attrs[sc.OI_INPUT_MIME] = sc.OI_MIME_JSON
            _flat_messages("llm.input_messages", r.messages, attrs, max_chars)
        if r.output_text is not None:
            attrs[sc.OI_OUTPUT_VALUE] = truncated(r.output_text, max_chars) if len(r.output_text) > max_chars \
                else r.output_text
            attrs[sc.OI_OUTPUT_MIME] = sc.OI_MIME_TEXT
            attrs["llm.output_messages.0.message.role"] = "assistant"
            attrs["llm.output_messages.0.message.content"] = attrs[sc.OI_OUTPUT_VALUE]
        elif r.outputs:
            attrs[sc.OI_OUTPUT_VALUE] = to_json(r.outputs, max_chars)
            attrs[sc.OI_OUTPUT_MIME] = sc.OI_MIME_JSON
    if r.status == "error" and not content and r.error_type:
        attrs[sc.OI_OUTPUT_VALUE] = r.error_type  # a failed call's output column is its error, never content
    return attrs


# -- another instrumentation's LLM span -------------------------------------------------


class _ForeignLLMSpans:
    """Ids of other instrumentations' LLM spans that were active when a call started.

    Fed on the caller's thread by `policy.active_span_ids` (through `observe`), read on
    the export worker: a record whose parent is one of them gets no span of its own
    (the other instrumentation's span *is* the call). Bounded: the oldest ids go first.
    """

    def __init__(self, maxlen: int = 8192) -> None:
        self._lock = threading.Lock()
        self._ids: dict[int, None] = {}
        self.maxlen = maxlen

    def observe(self, span: Any) -> None:
        try:
            # The SDK keeps a span's attributes in a BoundedAttributes over a plain dict: read
            # that dict when it is there (the public `attributes` view raises a KeyError inside
            # for every absent key: ~12k instructions a call, against a few hundred).
            attrs = getattr(getattr(span, "_attributes", None), "_dict", None)
            if attrs is None:
                attrs = getattr(span, "attributes", None)  # other SDKs; the API's spans have none
            if not attrs:
                return
            if attrs.get(sc.OI_SPAN_KIND) in sc.FOREIGN_LLM_KINDS \
                    or attrs.get(sc.OPERATION_NAME) in sc.FOREIGN_LLM_OPERATIONS:
                span_id = span.get_span_context().span_id
                with self._lock:
                    self._ids[span_id] = None
                    if len(self._ids) > self.maxlen:
                        del self._ids[next(iter(self._ids))]
        except Exception as exc:  # noqa: BLE001 - runs inside the caller's LM call
            counters.COUNTERS.error("otel_span_observer", exc)

    def __contains__(self, span_id: int) -> bool:
        return span_id in self._ids


FOREIGN_LLM_SPANS = _ForeignLLMSpans()


# -- content in the conventions' message shapes ----------------------------------------


def _text(content: Any) -> dict[str, Any]:
    return {"type": "text", "content": content if isinstance(content, str) else json.dumps(content, default=str)}


def _block_part(block: Any) -> dict[str, Any]:
    """One content block (OpenAI or Anthropic style) as a GenAI message part."""
    if not isinstance(block, dict):
        return _text(block)
    kind = block.get("type")
    if kind in ("text", "input_text", "output_text"):
        return _text(block.get("text", block.get("content")))
    if kind in ("thinking", "reasoning"):
        return {"type": "reasoning", "content": block.get("thinking", block.get("text", ""))}
    if kind == "image_url":
        url = block.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        return {"type": "uri", "modality": "image", "uri": url}
    if kind == "tool_use":
        return {"type": "tool_call", "id": block.get("id"), "name": block.get("name"),
                "arguments": block.get("input")}
    if kind == "tool_result":
        return {"type": "tool_call_response", "id": block.get("tool_use_id"), "response": block.get("content")}
    return dict(block) if isinstance(kind, str) else _text(block)


def _tool_call_parts(calls: Any) -> Iterator[dict[str, Any]]:
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict):
            continue
        fn = call.get("function")
        if not isinstance(fn, dict):
            fn = {}
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass
        yield {"type": "tool_call", "id": call.get("id"), "name": fn.get("name"), "arguments": args}


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if message.get("role") == "tool":
        return [{"type": "tool_call_response", "id": message.get("tool_call_id"), "response": content}]
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        parts.extend(_block_part(b) for b in content)
    elif content is not None:
        parts.append(_text(content))
    parts.extend(_tool_call_parts(message.get("tool_calls")))
    return parts


def input_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """`gen_ai.input.messages`: [{role, parts}] in the order sent."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, dict):
            msg: dict[str, Any] = {"role": m.get("role") or "user", "parts": _parts(m)}
            if isinstance(m.get("name"), str):
                msg["name"] = m["name"]
            out.append(msg)
        else:
            out.append({"role": "user", "parts": [_text(m)]})
    return out


def system_instructions(items: Sequence[Any]) -> list[dict[str, Any]]:
    """`gen_ai.system_instructions`: message parts (a plain prompt is one text part)."""
    parts: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, dict) and "role" in item and "content" in item:  # a system message
            parts.extend(_parts(item))
        else:
            parts.append(_block_part(item))
    return parts


def tool_definitions(items: Sequence[Any]) -> list[dict[str, Any]]:
    """`gen_ai.tool.definitions`: [{type, name, description, parameters}] from OpenAI's
    {"type": "function", "function": {...}} or Anthropic's {name, input_schema} shapes."""
    out: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        fn = item.get("function")
        if isinstance(fn, dict):
            tool = {"type": item.get("type") or "function", "name": fn.get("name"),
                    "description": fn.get("description"), "parameters": fn.get("parameters")}
        else:
            tool = {"type": item.get("type") or "function", "name": item.get("name"),
                    "description": item.get("description"),
                    "parameters": item.get("input_schema", item.get("parameters"))}
        out.append({k: v for k, v in tool.items() if v is not None})
    return out


def _reason(reason: Any, r: LMCall) -> str:
    if isinstance(reason, str) and reason:
        return sc.FINISH_REASON_ALIASES.get(reason, reason)
    return "error" if r.status == "error" else "unknown"


def output_messages(r: LMCall) -> list[dict[str, Any]]:
    """`gen_ai.output.messages`: one {role, parts, finish_reason} per choice."""
    outputs = [o for o in r.outputs if isinstance(o, dict)]
    if outputs and all("role" in o or "index" in o for o in outputs):  # OpenAI-style choices
        return [{"role": o.get("role") or "assistant", "parts": _parts(o),
                 "finish_reason": _reason(o.get("finish_reason"), r)} for o in outputs]
    if outputs and all("type" in o for o in outputs):  # Anthropic-style content blocks: one message
        return [{"role": "assistant", "parts": [_block_part(b) for b in outputs],
                 "finish_reason": _reason(r.finish_reason, r)}]
    if r.output_text is not None:
        return [{"role": "assistant", "parts": [_text(r.output_text)], "finish_reason": _reason(r.finish_reason, r)}]
    return []


def _shrink(obj: Any, limit: int) -> Any:
    if isinstance(obj, str):
        return truncated(obj, limit) if len(obj) > limit else obj
    if isinstance(obj, dict):
        return {k: _shrink(v, limit) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shrink(v, limit) for v in obj]
    return obj


def _strings(obj: Any) -> int:
    if isinstance(obj, str):
        return 1
    if isinstance(obj, dict):
        return sum(_strings(v) for v in obj.values())
    if isinstance(obj, list):
        return sum(_strings(v) for v in obj)
    return 0


def to_json(messages: Any, max_chars: int) -> str:
    """Compact JSON within max_chars: long strings are cut first (the JSON stays valid);
    only when that is not enough is the JSON text itself cut, with a visible marker."""
    text = json.dumps(messages, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text) <= max_chars:
        return text
    share = max(32, max_chars // (2 * max(1, _strings(messages))))
    text = json.dumps(_shrink(messages, share), ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= max_chars else truncated(text, max_chars)


# -- metrics ---------------------------------------------------------------------------


class _Totals:
    """historymw's counters as monotonic totals for the life of the process.

    `configure()` starts new counters (and a new ring and pipelines); an
    OpenTelemetry counter must not go backwards, so what the previous
    configuration counted is carried over.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: counters.Counters | None = None
        self._carried: dict[tuple[str, str], int] = {}
        self._last_runtime_values: dict[tuple[str, str], int] = {}

    @staticmethod
    def _read(c: counters.Counters) -> dict[tuple[str, str], int]:
        values = {("recorded", ""): c.recorded.value, ("sampled_out", ""): c.sampled_out.value,
                  ("filtered_out", ""): c.filtered_out.value, ("evicted", ""): c.evicted.value}
        values.update({("dropped", k): v.value for k, v in list(c.dropped.items())})
        values.update({("errors", k): v.value for k, v in list(c.errors.items())})
        return values

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        """(monotonic totals, gauges)."""
        from .. import runtime

        with self._lock:
            c = counters.COUNTERS
            if self._counters is not None and c is not self._counters:
                for k, v in self._read(self._counters).items():  # the old counters' final values
                    self._carried[k] = self._carried.get(k, 0) + v
            self._counters = c
            totals = self._read(c)
            rt = runtime.STATE.runtime
            ring = rt.ring if rt is not None else None
            # Ring evictions and exports live on the ring and pipelines, which a new
            # configuration (or shutdown) replaces: carry the last value seen on a reset.
            live = {("evicted", "ring"): ring.evicted if ring is not None else 0,
                    ("exported", ""): sum(p.exported for p in rt.pipelines) if rt is not None else 0}
            for k, v in live.items():
                last = self._last_runtime_values.get(k, 0)
                if v < last:
                    self._carried[k] = self._carried.get(k, 0) + last
                self._last_runtime_values[k] = v
            totals.update(live)
            for k, v in self._carried.items():
                totals[k] = totals.get(k, 0) + v
            gauges = {"ring_bytes": ring.bytes_held if ring is not None else 0,
                      "ring_records": len(ring) if ring is not None else 0,
                      "queued": sum(p.queued() for p in rt.pipelines) if rt is not None else 0}
            return totals, gauges


_TOTALS = _Totals()
_live_backends: weakref.WeakSet[OTelBackend] = weakref.WeakSet()


def _observe(kind: str) -> Any:
    """A callback for one of historymw's own instruments (reads nothing while no otel backend is live)."""
    from opentelemetry.metrics import Observation

    def callback(_options: Any) -> Iterable[Any]:
        if not any(b.active for b in list(_live_backends)):
            return []
        try:
            totals, gauges = _TOTALS.snapshot()
        except Exception as exc:  # noqa: BLE001 - a metrics collection must never fail because of us
            counters.COUNTERS.error("otel_metrics", exc)
            return []
        if kind in gauges:
            return [Observation(gauges[kind])]
        if kind == "dropped":
            return [Observation(v, {sc.ATTR_DROP_REASON: k[1]}) for k, v in totals.items() if k[0] == "dropped"]
        if kind == "errors":
            return [Observation(v, {sc.ATTR_ERROR_KIND: k[1]}) for k, v in totals.items() if k[0] == "errors"]
        return [Observation(sum(v for k, v in totals.items() if k[0] == kind))]
    return callback


class _Instruments:
    """The instruments of one meter provider, created once however often configure() runs."""

    def __init__(self, meter_provider: Any) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter(sc.INSTRUMENTATION_SCOPE, __version__, meter_provider)
        self.duration = meter.create_histogram(
            sc.METRIC_OPERATION_DURATION, unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(sc.DURATION_BUCKETS))
        self.tokens = meter.create_histogram(
            sc.METRIC_TOKEN_USAGE, unit="{token}", description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(sc.TOKEN_BUCKETS))
        self.time_to_first_chunk = meter.create_histogram(
            sc.METRIC_TIME_TO_FIRST_CHUNK, unit="s",
            description="Time from the request to the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=list(sc.DURATION_BUCKETS))
        self.time_per_output_chunk = meter.create_histogram(
            sc.METRIC_TIME_PER_OUTPUT_CHUNK, unit="s",
            description="Time per output chunk after the first (a stream's mean).",
            explicit_bucket_boundaries_advisory=list(sc.CHUNK_BUCKETS))
        for name, kind, description in (
            (sc.METRIC_RECORDED, "recorded", "Calls recorded (kept by the policy)."),
            (sc.METRIC_SAMPLED_OUT, "sampled_out", "Calls a head decision (sampling) did not record."),
            (sc.METRIC_FILTERED_OUT, "filtered_out", "Calls a tail decision (errors-only) did not keep."),
            (sc.METRIC_DROPPED, "dropped", "Records lost on the way (full queue, failed export, ...), by reason."),
            (sc.METRIC_EVICTED, "evicted", "Records the ring buffer evicted to stay within its bounds."),
            (sc.METRIC_EXPORTED, "exported", "Records delivered to I/O backends."),
            (sc.METRIC_ERRORS, "errors", "Exceptions caught inside historymw (export errors included), by kind."),
        ):
            meter.create_observable_counter(name, callbacks=[_observe(kind)], unit="{record}"
                                            if kind != "errors" else "{error}", description=description)
        meter.create_observable_gauge(sc.METRIC_RING_BYTES, callbacks=[_observe("ring_bytes")], unit="By",
                                      description="Bytes the ring buffer accounts for.")
        meter.create_observable_gauge(sc.METRIC_RING_RECORDS, callbacks=[_observe("ring_records")],
                                      unit="{record}", description="Records in the ring buffer.")
        meter.create_observable_gauge(sc.METRIC_QUEUED, callbacks=[_observe("queued")], unit="{record}",
                                      description="Records waiting in export queues.")


_instruments_lock = threading.Lock()
_instruments: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()


def instruments_for(meter_provider: Any) -> _Instruments:
    with _instruments_lock:
        inst = _instruments.get(meter_provider)
        if inst is None:
            inst = _instruments[meter_provider] = _Instruments(meter_provider)
        return inst


# -- the backend -------------------------------------------------------------------------


class OTelBackend:
    """Records -> GenAI client spans and metrics, on the application's providers.

    `tracer_provider` / `meter_provider` default to the global ones (whatever the
    application set, now or later). `capture_content` None follows
    `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`. `metrics=False` leaves
    metrics out.
    """

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None,
                 capture_content: bool | None = None, max_field_chars: int = 20000,
                 metrics: bool = True, compat: str | None = None) -> None:
        _require_otel()
        from opentelemetry import metrics as otel_metrics
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

        self._trace, self._Context = trace, Context
        self._NonRecordingSpan, self._SpanContext, self._TraceFlags = NonRecordingSpan, SpanContext, TraceFlags
        self._kind, self._error_status = SpanKind.CLIENT, (Status, StatusCode.ERROR)
        self.tracer_provider = tracer_provider
        self.tracer = trace.get_tracer(sc.INSTRUMENTATION_SCOPE, __version__, tracer_provider)
        self.capture_content = content_on_spans(capture_content)
        self.max_field_chars = max_field_chars
        self.meter_provider = (meter_provider if meter_provider is not None else otel_metrics.get_meter_provider())
        self._instruments = instruments_for(self.meter_provider) if metrics else None
        self.compat = check_compat(compat)
        # From now on the caller's thread notes other instrumentations' LLM spans (see _ForeignLLMSpans).
        policy.span_observer = FOREIGN_LLM_SPANS.observe
        self.active = True
        _live_backends.add(self)
        _register_exit_flush()

    def _parent(self, r: LMCall) -> Any:
        if not r.trace_id or not r.span_id:
            return self._Context()  # a root span, whatever the worker thread's context holds
        flags = self._TraceFlags.SAMPLED if r.trace_flags is None else r.trace_flags
        parent = self._SpanContext(int(r.trace_id, 16), int(r.span_id, 16), is_remote=False,
                                   trace_flags=self._TraceFlags(flags))
        return self._trace.set_span_in_context(self._NonRecordingSpan(parent), self._Context())

    def _span(self, r: LMCall) -> None:
        if r.span_id and int(r.span_id, 16) in FOREIGN_LLM_SPANS:
            return  # another instrumentation's span already is this call (the record still goes elsewhere)
        start = _ns(r.started_at)
        end = start + round(r.duration_s * 1e9)
        attrs = span_attributes(r, self.capture_content, self.max_field_chars)
        if self.compat == sc.COMPAT_OPENINFERENCE:
            attrs.update(openinference_attributes(r, self.capture_content, self.max_field_chars))
        span = self.tracer.start_span(span_name(r), context=self._parent(r), kind=self._kind,
                                      attributes=attrs, start_time=start)
        if r.status == "error":
            # What Span.record_exception adds, from the record: its message and stack were
            # redacted when it was sealed, like every field.
            event = {sc.EXCEPTION_TYPE: r.error_type or sc.ERROR_TYPE_OTHER}
            if r.error_message:
                event[sc.EXCEPTION_MESSAGE] = r.error_message
            if r.error_stacktrace:
                event[sc.EXCEPTION_STACKTRACE] = r.error_stacktrace
            span.add_event(sc.EXCEPTION_EVENT, event, timestamp=end)
            status_cls, error = self._error_status
            span.set_status(status_cls(error, r.error_message or r.error_type))
        span.end(end_time=end)

    def _metrics(self, r: LMCall) -> None:
        inst = self._instruments
        if inst is None:
            return
        attrs = _common_attributes(r)
        if r.response_model:
            attrs[sc.RESPONSE_MODEL] = r.response_model
        if r.status == "error":
            inst.duration.record(r.duration_s, {**attrs, sc.ERROR_TYPE: r.error_type or sc.ERROR_TYPE_OTHER})
        else:
            inst.duration.record(r.duration_s, attrs)
        if r.input_tokens is not None:
            inst.tokens.record(r.input_tokens, {**attrs, sc.TOKEN_TYPE: sc.TOKEN_TYPE_INPUT})
        if r.output_tokens is not None:
            inst.tokens.record(r.output_tokens, {**attrs, sc.TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT})
        ttfc = r.time_to_first_token_s
        if r.stream and ttfc is not None:
            inst.time_to_first_chunk.record(ttfc, attrs)
            chunks = r.stream_chunks
            if chunks is not None and chunks > 1 and r.duration_s >= ttfc:
                # Chunk times are not kept per chunk: the stream's mean after the first.
                inst.time_per_output_chunk.record((r.duration_s - ttfc) / (chunks - 1), attrs)

    def export(self, records: Sequence[LMCall]) -> None:
        for r in records:
            # Per record: one malformed record must cost only its own span, and a retry
            # of the batch (which the pipeline does when export raises) would duplicate spans.
            try:
                self._span(r)
                self._metrics(r)
            except Exception as exc:  # noqa: BLE001
                counters.COUNTERS.error("otel_span", exc)

    def flush(self, timeout: float | None = None) -> bool:
        """Push the spans to the provider's exporters, so `hm.flush()` means they left the process."""
        provider = self.tracer_provider if self.tracer_provider is not None else self._trace.get_tracer_provider()
        force = getattr(provider, "force_flush", None)
        if not callable(force):
            return True
        millis = 30000 if timeout is None else max(1, int(timeout * 1000))
        return bool(force(millis))

    def shutdown(self) -> None:
        # The providers belong to the application: flush our spans, never shut them down.
        self.active = False
        _live_backends.discard(self)
        try:
            self.flush(2.0)
        except Exception as exc:  # noqa: BLE001
            counters.COUNTERS.error("otel_flush", exc)


_exit_hook_registered = False


def _register_exit_flush() -> None:
    """Flush historymw into the providers at exit, before they shut down.

    Exit hooks run last-registered first. An application usually builds its
    TracerProvider (whose SDK exit hook shuts it down) before it configures
    historymw, so a hook registered here, at the first otel backend, runs
    before the provider's: the records still queued reach it while it can export.
    """
    global _exit_hook_registered
    if _exit_hook_registered:
        return
    _exit_hook_registered = True
    atexit.register(_flush_at_exit)


def _flush_at_exit() -> None:
    if not any(b.active for b in list(_live_backends)):
        return
    from .. import runtime

    rt = runtime.STATE.runtime
    if rt is not None:
        try:
            rt.flush(rt.settings.shutdown_timeout)
        except Exception as exc:  # noqa: BLE001 - exit must go on
            counters.COUNTERS.error("otel_exit_flush", exc)


def check_compat(compat: str | None) -> str | None:
    """The compatibility attribute set (None: the GenAI conventions only); a clear error otherwise."""
    if compat is None or compat.strip() == "":
        return None
    value = compat.strip().lower()
    if value not in sc.COMPAT_VALUES:
        raise ValueError(f"otel_compat={compat!r} is not valid: expected one of "
                         f"{', '.join(sorted(sc.COMPAT_VALUES))} (or unset)")
    return value


def create(settings: Settings) -> OTelBackend:
    """The 'otel' backend on the global providers, configured by `settings`."""
    return OTelBackend(capture_content=settings.otel_capture_content, max_field_chars=settings.max_field_chars,
                       compat=settings.otel_compat)
