"""Building a draft: the plain dict a call is captured into on the caller's thread.

`request()` copies model, messages and params out of the call's arguments;
`outcome()` reads the result or the error. Both bound what they keep (field
length, record size) and count the bytes they keep, so the ring can hold to
`max_bytes`. The usual shapes (a list of {"role", "content"} str dicts, scalar
params, a str result) take a fast path; anything else goes through
`plain.plain`, which handles cycles, odd objects, bytes and depth.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import counters, errtext
from .extract import result_fields, usage_fields
from .plain import (
    DICT_OVERHEAD,
    DICT_PER_ITEM,
    LIST_OVERHEAD,
    LIST_PER_ITEM,
    SCALAR_SIZE,
    STR_OVERHEAD,
    Budget,
    clip,
    head_tail,
    plain,
    plain_str,
)
from .policy import active_span_ids
from .redact import KEY_CACHE

if TYPE_CHECKING:
    from .scope import Effective

# Sizes count a record as it is once sealed (record.seal), which is never less than the
# draft it starts as: the ring reads and exports seal the drafts it holds in place, and
# `max_bytes` bounds what is held either way (tests/reliability/test_byte_bound.py).
STR_HEADER = STR_OVERHEAD  # sys.getsizeof("") for an ASCII str: its size is this plus one byte a char
# A str's __sizeof__() is str_bytes(s) in one call (a str is no GC object: sys.getsizeof adds nothing)
# on CPython 3.10 and 3.11, whose ASCII header STR_HEADER is. Later ones have a smaller header: this
# shift, added to __sizeof__(), keeps an ASCII str's count the same there (and a wider str's is an
# estimate either way).
SIZEOF_SHIFT = STR_HEADER - "".__sizeof__()
# What sealing adds to every record: its id (a 32-char str), the messages list that replaces
# the draft's pairs (its header and a grown list's slack), and the ring's deque slot.
SEAL_BYTES = 81 + 56 + 48 + 8
# What a draft dict (a table of up to 21 keys, 464 bytes) and its fixed fields take beyond the
# strings and containers it holds (calibrated with tracemalloc: tests/test_ring.py checks the
# factor). A draft with more keys counts its larger table: see `table_growth`.
RECORD_BASE_BYTES = 400 + SEAL_BYTES
# A message as sealing leaves it: a {"role", "content"} dict (184 bytes), its list slot and
# growth slack, the role str's header. The draft's (role, content) tuple in a list, or its two
# slots in a flat tuple, take less.
MSG_BYTES = 184 + 8 + 2 + STR_HEADER
PAIR_BYTES = MSG_BYTES
MESSAGE_BYTES = PAIR_BYTES + SIZEOF_SHIFT  # a usual message beside its role's chars and its content's __sizeof__()
TUPLE_BYTES = 40  # the flat tuple's own header
LABEL_CHARS = 256  # longest model or provider name kept
DICT_BYTES = DICT_OVERHEAD  # params kept as a dict
PARAM_BYTES = DICT_PER_ITEM + SCALAR_SIZE  # one scalar param
SCALARS = frozenset({int, float, bool, type(None)})
_now = time.time
_modules = sys.modules
_sizeof = sys.getsizeof
LOOKUP: Any = object()  # start(span=...), usual_draft(span=...): look the active span up now

# Request parameters that name no credential: a call whose params all come from
# here (with scalar values) skips the per-key check.
COMMON_PARAMS = frozenset({
    "temperature", "max_tokens", "max_completion_tokens", "top_p", "top_k", "n", "stream", "seed",
    "frequency_penalty", "presence_penalty", "stop", "timeout", "num_retries", "logprobs",
    "top_logprobs", "user", "parallel_tool_calls", "reasoning_effort", "cache", "rollout_id",
})
# What `usual_draft`'s loop over the params lets through at once: "stream" is read where it is met
# (a rare param: no `"stream" in params` test for every other call).
_NOT_STREAM = COMMON_PARAMS - {"stream"}

# LMCall fields that extract=, call.output() and call.set() may set.
SETTABLE_FIELDS = frozenset({
    "output_text", "outputs", "finish_reason", "input_tokens", "output_tokens", "total_tokens",
    "cost", "response_id", "response_model", "cache_hit", "server_address", "metadata", "model",
    "provider", "session", "tags", "operation", "stream", "time_to_first_token_s",
    "system_instructions", "tool_definitions", "cache_read_input_tokens", "cache_creation_input_tokens",
    "reasoning_tokens", "server_port",
})
_INT_FIELDS = frozenset({"input_tokens", "output_tokens", "total_tokens", "cache_read_input_tokens",
                         "cache_creation_input_tokens", "reasoning_tokens", "server_port"})
# Prompt-like content: dropped with capture_content=False, like messages and outputs.
_CONTENT_SETTABLE = frozenset({"output_text", "outputs", "system_instructions", "tool_definitions"})


class CallSpec:
    """What is known about a recorded function before any call: computed once."""

    __slots__ = ("provider", "provider_bytes", "base_bytes", "operation", "source", "extract", "names",
                 "skip_first", "model_pos", "messages_pos", "simple_upto", "pair_args", "draft")

    def __init__(self, fn: Callable[..., Any] | None, provider: str | None, operation: str,
                 source: str, extract: Callable[[Any], dict[str, Any]] | None) -> None:
        if type(provider) is str and len(provider) > LABEL_CHARS:
            provider = provider[:LABEL_CHARS]
        self.provider = provider
        # What every record of this function takes before its model, messages and params.
        self.provider_bytes = label_bytes(provider)
        self.base_bytes = RECORD_BASE_BYTES + DICT_BYTES + TUPLE_BYTES + STR_HEADER + self.provider_bytes
        self.operation = operation
        self.source = source
        self.extract = extract
        names: list[str] = []
        if fn is not None:
            try:
                for p in inspect.signature(fn).parameters.values():
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                        names.append(p.name)
            except (TypeError, ValueError):
                pass
        self.skip_first = bool(names) and names[0] in ("self", "cls")
        self.names = tuple(names)
        # Where model and messages sit among the positional arguments, and how many
        # leading positionals are only those (the fast path binds them by index).
        self.model_pos = names.index("model") if "model" in names else -1
        self.messages_pos = names.index("messages") if "messages" in names else -1
        upto = 1 if self.skip_first else 0
        while upto < len(names) and names[upto] in ("model", "messages"):
            upto += 1
        self.simple_upto = upto
        # 2 when the usual positional call, `ask(model, messages)`, passes exactly these two in this
        # order (a method's self goes the general way); -1 otherwise.
        self.pair_args = 2 if names[:2] == ["model", "messages"] else -1
        # What `usual_draft` copies: every key of a usual draft, in order, the constant ones filled in.
        self.draft: dict[str, Any] = {
            "started": 0.0, "duration": 0.0, "provider": provider, "model": None, "operation": operation,
            "source": source, "_pairs": (), "params": None, "size_bytes": 0, "output_text": None, "stream": False}


def held_bytes(value: Any) -> int:
    """What a small plain value (ints, floats, str, tuples and lists of them) takes in memory."""
    t = type(value)
    if t is str:
        return str_bytes(value)
    if t is tuple or t is list:
        size = TUPLE_BYTES + 8 * len(value)
        for v in value:
            size += SCALAR_SIZE if type(v) in SCALARS else held_bytes(v)
        return size
    return SCALAR_SIZE


def str_bytes(s: str) -> int:
    """A str's exact size: its header + 1 byte a char when ASCII (the common, cheap case), else asked."""
    return len(s) + STR_HEADER if s.isascii() else sys.getsizeof(s)


def table_growth(draft: dict[str, Any]) -> int:
    """Bytes the draft's dict takes beyond the 21-key table RECORD_BASE_BYTES counts, once
    sealing has added its keys (id, messages, its mark: three at most). Only drafts with many
    fields (usage, response ids, streams, errors, a session, a span) get there."""
    n = len(draft) + 3
    return 0 if n <= 21 else 832 - 464 if n <= 42 else 1584 - 464


def label_bytes(value: object) -> int:
    """What a model or provider name (a str or None) takes."""
    return str_bytes(value) if type(value) is str else 0


def labels(session: str | None, tags: dict[str, Any], max_chars: int) -> tuple[dict[str, Any] | None, int]:
    """(what a scope adds to each draft, the bytes it is counted for): the session truncated at
    max_chars like any other string, the tags as bounded plain data. A scope's labels are one
    object shared by its drafts; each record counts them all the same, so the ring's budget holds
    whether they are shared or not."""
    out: dict[str, Any] = {}
    size = 0
    if session is not None:
        if len(session) > max_chars:
            session = head_tail(session, max_chars)
        out["session"] = session
        size += DICT_PER_ITEM + str_bytes(session)
    if tags:
        budget = Budget(max_chars, 64 * 1024, scan=True)
        copied = plain(tags, budget)
        out["tags"] = copied if type(copied) is dict else {"value": copied}
        size += DICT_PER_ITEM + budget.used
    return out or None, size


def usual_draft(spec: CallSpec, eff: Effective, args: tuple[Any, ...], kwargs: dict[str, Any],
                started: float | None = None, span: Any = LOOKUP) -> dict[str, Any] | None:
    """The whole draft of the usual call, started now (but for its "duration": the caller times
    the call, see `capture.start`); None sends the call to `request()`.

    The usual call: `model` a str, `messages` a list of {"role": str, "content": str}
    within the field and record limits, other arguments scalar and named in
    COMMON_PARAMS; model and messages passed by position (`ask("m", msgs)`) or by
    name (`ask(model="m", messages=msgs)`). One pass over the messages, no copy of
    a message: they are kept as one flat (role, content, role, content, ...) tuple
    under "_pairs", which `record.seal` turns into "messages". The collector
    untracks a tuple of str at its first pass, so a queued draft is one object for
    later collections to walk, not one per message. Like `capture.start`, it adds
    the scope's labels and the span's ids (`span`: as `capture.start` takes it).

    Every call of a recorded function runs this: each line here costs every caller
    (benchmarks/instructions.py counts it), so the usual shapes are read with the
    fewest steps (a subscript in a try rather than .get(), sizes summed once).
    """
    if not eff.content:
        return None
    # A copy of a dict is cheaper than a dict display of the same keys. Made first, so that a
    # "stream" param is set where the loop below meets it (a call that turns out unusual drops it).
    draft = spec.draft.copy()
    try:
        if not args:  # both by name: the params are the other arguments (a KeyError: one is missing)
            params = kwargs.copy()
            model = params.pop("model")
            messages = params.pop("messages")
        elif (n := len(args)) == spec.pair_args:  # ask("m", msgs)
            model, messages = args
            params = kwargs  # the wrapper's own **kwargs dict (Python builds one per call): kept as is
        else:  # by position, another way (a method's self is skipped by model_pos/messages_pos)
            if n > spec.simple_upto:
                return None
            mp, sp = spec.model_pos, spec.messages_pos
            model = args[mp] if 0 <= mp < n else kwargs.get("model")
            messages = args[sp] if 0 <= sp < n else kwargs.get("messages")
            params = kwargs
        if type(model) is not str or type(messages) is not list or (model_chars := len(model)) > LABEL_CHARS:
            return None
        for k in params:  # a loop: cheaper than set operations for the few params a call has
            if k not in _NOT_STREAM or type(params[k]) not in SCALARS:
                if k == "stream" and type(params[k]) in SCALARS:
                    draft["stream"] = params[k] is True
                    continue
                # By position beside model or messages by name (or twice): the params are the rest.
                rest = _params_beside(kwargs) if args else None
                if rest is None:
                    return None
                params = rest
                draft["stream"] = "stream" in rest and rest["stream"] is True
                break
        # Each message counts its pair, its role's chars and its content's str; the model is an
        # ASCII name, as a rule. (The small terms first: a sum under 257 is a cached int, each
        # larger one a new int.)
        size = model_chars + len(params) * PARAM_BYTES + len(messages) * MESSAGE_BYTES + spec.base_bytes
    except KeyError:
        return None
    read = message_pairs(messages)
    if read is None:
        return None
    pairs, chars = read
    size += chars
    if size > eff.draft_limit and over_limits(size, pairs, eff):  # (one test for the usual call)
        return None
    draft["started"] = _now() if started is None else started
    draft["model"] = model
    draft["_pairs"] = pairs
    draft["params"] = params
    draft["size_bytes"] = size
    if eff.labels is not None:  # session and tags of the enclosing history(...) scopes
        draft.update(eff.labels)
        draft["size_bytes"] = size + eff.labels_bytes
    if span is LOOKUP:  # the span active now, if OpenTelemetry is imported
        if "opentelemetry.trace" in _modules and (span := active_span_ids()) is not None:
            draft["trace_id"], draft["span_id"], draft["trace_flags"] = span
    elif span is not None:
        draft["trace_id"], draft["span_id"], draft["trace_flags"] = span
    return draft


def over_limits(size: int, pairs: tuple[str, ...], eff: Effective) -> bool:
    """Does a usual request of `size` bytes, past `eff.draft_limit` (the smaller of the two limits),
    go the general way: a content the field limit truncates (the size bounds each content's
    length, so only a large request is looked at), or a record over its limit?"""
    if size > eff.max_chars and max(map(len, pairs[1::2]), default=0) > eff.max_chars:
        return True
    return size > eff.record_limit


def message_pairs(messages: list[Any]) -> tuple[tuple[str, ...], int] | None:
    """The usual messages, each {"role": str, "content": str}, as one flat (role, content, role,
    content, ...) tuple, and what they add to a draft's size beside MESSAGE_BYTES each: each role's
    chars and each content's str (`str_bytes` in one `__sizeof__()` call: see SIZEOF_SHIFT).
    None for any other message. `usual_draft` and LiteLLM's one-step draft read messages through it."""
    pairs: list[str] = []
    size = 0
    try:
        for m in messages:
            if type(m) is not dict or len(m) != 2:
                return None
            role = m["role"]  # a KeyError: another key than these two
            content = m["content"]
            if type(role) is not str or type(content) is not str:
                return None
            pairs.append(role)  # two appends: cheaper than `pairs += role, content` (no tuple, no extend)
            pairs.append(content)
            size += len(role) + content.__sizeof__()
    except KeyError:
        return None
    return tuple(pairs), size


def _params_beside(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The params of a positional call that named model or messages too: the other keyword
    arguments, when all are usual (COMMON_PARAMS, scalar); else None (not the usual call)."""
    params = {k: v for k, v in kwargs.items() if k != "model" and k != "messages"}
    if len(params) == len(kwargs):
        return None
    for k in params:
        if k not in COMMON_PARAMS or type(params[k]) not in SCALARS:
            return None
    return params


def fast_messages(messages: Any, max_chars: int, limit: int) -> tuple[list[Any], int] | None:
    """Copy the usual list of {"role": str, "content": str}; None sends it to the slow path."""
    if type(messages) is not list:
        return None
    out: list[Any] = []
    used = LIST_OVERHEAD + 8 * len(messages)
    for m in messages:
        if type(m) is not dict or len(m) != 2:
            return None
        role, content = m.get("role"), m.get("content")
        if type(role) is not str or type(content) is not str:
            return None
        n = len(content)
        if n > max_chars:
            content = head_tail(content, max_chars)
            n = len(content)
        out.append((role, content))  # a pair is cheaper than a dict: seal() makes it one
        used += MSG_BYTES + len(role) + str_bytes(content)
    return (out, used) if used <= limit else None


def fast_params(kwargs: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    """Copy keyword params of scalars and short strings, leaving model and messages out;
    None sends them to the slow path (credential-named keys, containers, objects)."""
    if kwargs.keys() <= COMMON_PARAMS and SCALARS.issuperset(map(type, kwargs.values())):
        return dict(kwargs), DICT_OVERHEAD + len(kwargs) * (DICT_PER_ITEM + SCALAR_SIZE)
    secret = KEY_CACHE.get  # None for a key never seen: the slow path classifies it
    out: dict[str, Any] = {}
    used = DICT_OVERHEAD
    for k, v in kwargs.items():
        if k == "model" or k == "messages":
            continue
        if secret(k) is not False:
            return None
        if type(v) is str:
            if len(v) >= 10:  # 10: shorter than any secret shape, nothing to scan
                return None
            used += DICT_PER_ITEM + str_bytes(v)  # as plain() counts it: the record is the same either way
        elif type(v) in SCALARS:
            used += DICT_PER_ITEM + SCALAR_SIZE
        else:
            return None
        out[k] = v
    return out, used


def copy_messages(messages: Any, budget: Budget) -> list[Any]:
    """Plain copy of chat messages within the budget (a str prompt becomes one user message)."""
    fast = fast_messages(messages, budget.max_chars, budget.remaining)
    if fast is not None:
        budget.take(fast[1])
        return fast[0]
    if isinstance(messages, str):
        return [{"role": "user", "content": plain_str(str.__str__(messages), budget)}]
    if messages is None:
        return []
    copied = plain(messages, budget)
    return copied if type(copied) is list else [copied]


def model_name(model: object) -> str:
    """A name for a non-str `model` argument (an enum, a str subclass, an object)."""
    value = getattr(model, "value", model)  # enums
    if isinstance(value, str):
        return str.__str__(value)[:LABEL_CHARS]
    return f"<{type(model).__name__}>"


def _bind(spec: CallSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(model, messages, every other argument by name) for any call shape."""
    model, messages = kwargs.get("model"), kwargs.get("messages")
    params: dict[str, Any] = {}
    names = spec.names
    for i in range(1 if spec.skip_first else 0, len(args)):
        name = names[i] if i < len(names) else f"arg{i}"
        if name == "model":
            model = args[i]
        elif name == "messages":
            messages = args[i]
        else:
            params[name] = args[i]
    for k, v in kwargs.items():
        if k != "model" and k != "messages":
            params[k] = v
    if messages is None and "prompt" in params:  # completion-style APIs
        messages = params.pop("prompt")
    return model, messages, params


def request(spec: CallSpec, eff: Effective, args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> tuple[Any, list[Any], dict[str, Any], int, list[Any] | None]:
    """(model, messages, params, bytes kept, system instructions or None) copied out of
    any call's arguments. `usual_draft` takes the usual call shape; this is the rest.

    A `system=` argument (Anthropic's system prompt, given beside the messages) is
    kept as the record's system instructions, as content, not among the params."""
    model, messages, raw = _bind(spec, args, kwargs)
    system = raw.pop("system", None) if "system" in raw else None
    fast_p = fast_params(raw)
    if fast_p is not None:
        params, used = fast_p
    else:
        budget = Budget(eff.max_chars, eff.record_limit // 2, scan=True)
        params = plain(raw, budget)
        used = budget.used
    if type(model) is not str:
        model = None if model is None else model_name(model)
    elif len(model) > LABEL_CHARS:
        model = model[:LABEL_CHARS]
    used += label_bytes(model) + spec.provider_bytes
    if not eff.content:
        return model, [], params, used, None
    budget = Budget(eff.max_chars, eff.record_limit - used)
    kept_system: list[Any] | None = None
    if system is not None:
        copied_system = plain(system if isinstance(system, list) else [system], budget)
        kept_system = copied_system if type(copied_system) is list else [copied_system]
    copied = copy_messages(messages, budget) if messages is not None else []
    return model, copied, params, used + budget.used, kept_system


def outcome(draft: dict[str, Any], spec: CallSpec, eff: Effective, result: Any,
            error: BaseException | None, given: dict[str, Any] | None) -> None:
    """Read the result (or error, or fields given by code) into the draft."""
    budget = Budget(eff.max_chars, eff.record_limit - draft["size_bytes"])
    if error is not None:
        draft["status"] = "error"
        draft["error_type"] = errtext.type_name(error)
        message = errtext.message(error)  # the exception's __str__ is user code: read within a bound
        draft["error_message"] = plain_str(message, Budget(eff.max_chars, eff.record_limit, scan=True))
        if error.__traceback__ is not None:  # for the exception event an APM shows; failures only
            stack = Budget(eff.max_chars, eff.record_limit - draft["size_bytes"], scan=True)
            draft["error_stacktrace"] = plain_str(errtext.stacktrace(error, message), stack)
            draft["size_bytes"] += stack.used
    elif spec.extract is not None:
        _apply_extract(draft, spec.extract, result, budget, eff.content)
    else:
        result_fields(result, draft, budget, eff.content)
    if given:
        apply_fields(draft, given, budget, eff.content)
    draft["size_bytes"] += budget.used


def _apply_extract(draft: dict[str, Any], extract: Callable[[Any], dict[str, Any]], result: Any,
                   budget: Budget, content: bool) -> None:
    try:
        fields = extract(result)
        if not isinstance(fields, dict):
            raise TypeError(f"extract= must return a dict of LMCall fields, got {type(fields).__name__}")
    except Exception as exc:  # noqa: BLE001 - the user's extractor failed: keep the record, count it
        counters.COUNTERS.error("extract", exc)
        draft["metadata"] = {"historymw": f"extract= raised {type(exc).__name__}"}
        return
    apply_fields(draft, fields, budget, content)


def apply_fields(draft: dict[str, Any], fields: dict[str, Any], budget: Budget, content: bool) -> None:
    """Set LMCall fields given by code (extract=, call.output, call.set) as bounded plain data."""
    for name, value in fields.items():
        if name not in SETTABLE_FIELDS or (not content and name in _CONTENT_SETTABLE):
            continue
        if name not in draft:
            budget.take(DICT_PER_ITEM)  # the draft's slot for it
        if name in _INT_FIELDS:
            draft[name] = value if isinstance(value, int) and not isinstance(value, bool) else None
            budget.take(SCALAR_SIZE)
        elif name == "cost" or name == "time_to_first_token_s":
            draft[name] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            budget.take(SCALAR_SIZE)
        elif name == "cache_hit" or name == "stream":
            draft[name] = value if isinstance(value, bool) else None
        elif name == "output_text":
            outputs = draft.get("outputs")
            if type(value) is str and outputs and outputs[0] is value:
                draft[name] = value  # the first output itself, counted there
            else:
                draft[name] = None if value is None else plain_str(errtext.text_of(value), budget)
        elif name in ("metadata", "tags"):  # free-form: may hold credentials, so redact like params
            scanned = Budget(budget.max_chars, budget.remaining, scan=True)
            copied = plain(value, scanned)
            draft[name] = copied if isinstance(copied, dict) else {"value": copied}
            budget.take(scanned.used)
        elif name == "outputs" or name == "system_instructions" or name == "tool_definitions":
            if isinstance(value, str):  # a plain system prompt
                value = [value]
            copied = plain(value, budget)
            draft[name] = copied if isinstance(copied, list) else [copied]
        else:  # model, provider, session, ...: short strings, bounded and counted like the rest
            scanned = Budget(budget.max_chars, budget.remaining, scan=True)
            copied = plain(value, scanned)
            if copied is not None and not isinstance(copied, str):
                copied = plain_str(str(copied), scanned)
            draft[name] = copied
            budget.take(scanned.used)


def _put_private(draft: dict[str, Any], into: dict[str, Any], private: dict[str, Any]) -> int:
    """Put each of `private` into `into` (the draft, or what will update it) under "_" + name, never
    part of the record; the bytes of those the draft does not hold yet (each is counted once)."""
    used = 0
    for name, value in private.items():
        key = "_" + name
        if key not in draft:
            used += held_bytes(value)
        into[key] = value
    return used


def keep_private(draft: dict[str, Any], name: str, value: Any) -> None:
    """Keep `value` with the draft for historymw's own readers under "_" + name (never part of
    the record), counted in its size once."""
    key = "_" + name
    if key not in draft:
        draft["size_bytes"] = draft.get("size_bytes", 0) + held_bytes(value)
    draft[key] = value


# Fields `parsed_outcome` takes as they are, by the type `apply_fields` would keep.
_PARSED_TYPES = {**dict.fromkeys(_INT_FIELDS, int), "cost": float, "cache_hit": bool,
                 **dict.fromkeys(("finish_reason", "response_id", "response_model", "server_address"), str)}


def parsed_outcome(draft: dict[str, Any], eff: Effective, duration: float, outputs: list[Any] | None,
                   fields: dict[str, Any], private: dict[str, Any] | None = None) -> dict[str, Any]:
    """Set an outcome a framework already parsed into plain values, without `apply_fields`' copy.

    `outputs`: a list of str built for this record (not the framework's own list); its first is
    the output text. `fields`: values of exactly the type the record keeps (ints, a float cost, a
    bool cache_hit, str ids). A str is immutable, so holding the framework's own str objects is
    holding a copy. Strings are clipped and every byte counted as `apply_fields` does; they are
    not scanned here: `record.seal` scans every string of a record before anyone reads or exports
    it. `private`: see `keep_private`. Returns the fields not taken (another type, or the record
    over its limit), for `apply_fields`."""
    rest: dict[str, Any] = {}
    taken: dict[str, Any] = {}
    used = 0
    max_chars = eff.max_chars
    for name, value in fields.items():
        t = type(value)
        if t is not _PARSED_TYPES.get(name):
            if value is not None:
                rest[name] = value
            continue
        if t is str:
            if len(value) > 1024:
                value = clip(value, max_chars)
            used += len(value) + STR_HEADER if value.isascii() else sys.getsizeof(value)
        elif t is not bool:
            used += SCALAR_SIZE
        if name not in draft:
            used += DICT_PER_ITEM
        taken[name] = value
    if outputs is not None and eff.content:
        used += LIST_OVERHEAD + (0 if "outputs" in draft else DICT_PER_ITEM)
        for i, text in enumerate(outputs):
            if len(text) > 1024:
                outputs[i] = text = clip(text, max_chars)
            used += LIST_PER_ITEM + (len(text) + STR_HEADER if text.isascii() else sys.getsizeof(text))
        taken["outputs"] = outputs
        taken["output_text"] = outputs[0] if outputs else None  # the first output, counted there
    if draft["size_bytes"] + used > eff.record_limit:  # apply_fields truncates to fit: let it
        rest.update(taken)
        taken.clear()
        used = 0
    if private:
        used += _put_private(draft, taken, private)
    taken["duration"] = duration
    draft.update(taken)
    draft["size_bytes"] += used + (table_growth(draft) if not rest else 0)  # else finish() adds it
    return rest


# What one choice of `chat_outcome`'s dict-shaped outputs takes beside its strings: its dict
# of four keys ("index", "role", "content", "finish_reason") and its list slot.
CHOICE_BYTES = DICT_OVERHEAD + 4 * DICT_PER_ITEM + LIST_PER_ITEM
# Longest metadata value `chat_outcome` keeps as it is (an id); a longer one is free-form data.
META_LABEL_CHARS = 128
# The most a usage's token counts take in a draft: `extract.usage_fields` sets at most six.
USAGE_BYTES = 6 * (DICT_PER_ITEM + SCALAR_SIZE)


def chat_outcome(draft: dict[str, Any], eff: Effective, duration: float, outputs: list[Any],
                 finish_reason: str | None, response_id: str | None, response_model: str | None,
                 cost: float | None, cache_hit: bool | None, private: dict[str, Any] | None,
                 usage: Any = None, metadata: dict[str, Any] | None = None,
                 fields: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """`parsed_outcome` for the usual chat response a framework parsed (DSPy's, LiteLLM's), one
    field per argument: no dict to build, no loop over fields. A label (finish_reason, response_id,
    response_model) that is not a str, and a cache_hit that is not a bool, are not set (the
    response had none); `cost` a float or None. Labels are cut at 64 (finish_reason) or 256 chars.
    `private`: as in `parsed_outcome`.

    `outputs`: a non-empty list made for this record, either of str (the texts) or of choice
    dicts {"index": int, "role": str, "content": str or None, "finish_reason": str or None}
    (an OpenAI-style response's choices, as `extract.result_fields` would copy them), whose
    content is the output text. `usage`: the response's usage, read by `extract.usage_fields`
    (token counts are set, even as None, as a response's are). `metadata`: a dict of short
    labels (str keys that name no credential, str values of at most META_LABEL_CHARS chars, such
    as a framework's call id), kept as it is; any other metadata is copied and scanned as
    free-form data by `apply_fields`. Either way `record.seal` scans every string of the record
    before anyone reads it. `fields`: other LMCall fields, left to `apply_fields`.

    Returns None when all is taken, else the fields for `apply_fields` (the record over its
    limit, `fields`, unusual metadata), which the caller hands to `capture.finish`."""
    content = eff.content
    used = LIST_OVERHEAD + DICT_PER_ITEM if content else 0
    # A str's size: its header and a byte a char when ASCII (`str_bytes`, inline: sys.getsizeof
    # costs several times more), else asked.
    if used:
        for i, out in enumerate(outputs):
            if type(out) is str:
                if len(out) > 1024:
                    outputs[i] = out = clip(out, eff.max_chars)
                used += LIST_PER_ITEM + (len(out) + STR_HEADER if out.isascii() else _sizeof(out))
                continue
            text, role, reason = out["content"], out["role"], out["finish_reason"]
            if type(text) is str:
                if len(text) > 1024:
                    out["content"] = text = clip(text, eff.max_chars)
                used += len(text) + STR_HEADER if text.isascii() else _sizeof(text)
            if len(role) > 64:  # a label, cut as finish_reason is
                out["role"] = role = role[:64]
            used += CHOICE_BYTES + (len(role) + STR_HEADER if role.isascii() else _sizeof(role))
            if reason is not None:
                if len(reason) > 64:
                    out["finish_reason"] = reason = reason[:64]
                used += len(reason) + STR_HEADER if reason.isascii() else _sizeof(reason)
    if type(finish_reason) is not str:
        finish_reason = None
    else:
        if len(finish_reason) > 64:
            finish_reason = finish_reason[:64]
        used += DICT_PER_ITEM + (len(finish_reason) + STR_HEADER if finish_reason.isascii()
                                 else _sizeof(finish_reason))
    if type(response_id) is not str:
        response_id = None
    else:
        if len(response_id) > LABEL_CHARS:
            response_id = response_id[:LABEL_CHARS]
        used += DICT_PER_ITEM + (len(response_id) + STR_HEADER if response_id.isascii()
                                 else _sizeof(response_id))
    if type(response_model) is not str:
        response_model = None
    else:
        if len(response_model) > LABEL_CHARS:
            response_model = response_model[:LABEL_CHARS]
        used += DICT_PER_ITEM + (len(response_model) + STR_HEADER if response_model.isascii()
                                 else _sizeof(response_model))
    if cost is not None:
        used += DICT_PER_ITEM + SCALAR_SIZE
    if type(cache_hit) is not bool:
        cache_hit = None
    else:
        used += DICT_PER_ITEM
    unusual: dict[str, Any] | None = None
    if metadata is not None:
        used += DICT_PER_ITEM + DICT_OVERHEAD
        for k, v in metadata.items():
            # A credential's name keeps its value out (apply_fields redacts it); a long or
            # non-str value is free-form data: both go the scanning way.
            if type(v) is not str or len(v) > META_LABEL_CHARS or type(k) is not str or KEY_CACHE[k]:
                unusual = {"metadata": metadata}
                metadata = None
                used -= DICT_PER_ITEM + DICT_OVERHEAD
                break
            used += DICT_PER_ITEM + (len(v) + STR_HEADER if v.isascii() else _sizeof(v))
    rest = None
    # The usage's token counts (at most USAGE_FIELDS of them) are counted once set.
    if draft["size_bytes"] + used + (USAGE_BYTES if usage is not None else 0) > eff.record_limit:
        # apply_fields truncates to fit: let it
        first = outputs[0]
        given = {"outputs": outputs, "output_text": first if type(first) is str else first["content"],
                 "finish_reason": finish_reason, "response_id": response_id, "response_model": response_model,
                 "cost": cost, "cache_hit": cache_hit, "metadata": metadata}
        if usage is not None:
            usage_fields(usage, given)
        rest = {k: v for k, v in given.items() if v is not None}
        used = 0
    else:
        if content:
            draft["outputs"] = outputs
            first = outputs[0]
            draft["output_text"] = first if type(first) is str else first["content"]  # counted there
        if finish_reason is not None:
            draft["finish_reason"] = finish_reason
        if response_id is not None:
            draft["response_id"] = response_id
        if response_model is not None:
            draft["response_model"] = response_model
        if cost is not None:
            draft["cost"] = cost
        if cache_hit is not None:
            draft["cache_hit"] = cache_hit
        if metadata is not None:
            draft["metadata"] = metadata
        if usage is not None:
            n = len(draft)
            usage_fields(usage, draft)  # ints or None, in keys the draft did not have
            used += (len(draft) - n) * (DICT_PER_ITEM + SCALAR_SIZE)  # a slot each, and its int
    if unusual or fields:
        rest = {**(unusual or {}), **(fields or {}), **(rest or {})}
    if private:
        used += _put_private(draft, draft, private)
    draft["duration"] = duration
    draft["size_bytes"] += used + (table_growth(draft) if rest is None else 0)  # else finish() adds it
    return rest


# What `text_outcome` adds beside its strings' chars: the outputs list (its header, one slot) and a
# draft slot for it; the header of the text and of each of the three labels, and a draft slot for
# each label and for cache_hit (a bool is a shared object: nothing more). output_text's slot is the
# usual draft's, and its str is the output's, counted there.
TEXT_BYTES = LIST_OVERHEAD + LIST_PER_ITEM + 4 * STR_HEADER + 5 * DICT_PER_ITEM
COST_BYTES = DICT_PER_ITEM + SCALAR_SIZE


def text_outcome(draft: dict[str, Any], eff: Effective, duration: float, outputs: list[Any], finish_reason: Any,
                 response_id: Any, response_model: Any, cost: Any, cache_hit: Any,
                 private: dict[str, Any] | None = None) -> bool:
    """`chat_outcome` for the commonest outcome, in the fewest steps (a cache-hit DSPy call's): one
    output text (`outputs`: a list of it made for this record, kept) and all three labels, each a
    str within its bound (the text 1024 chars, past which `clip` may change it; finish_reason 64;
    the others LABEL_CHARS) and ASCII (a byte a char), `cost` a float or None, `cache_hit` a bool,
    content captured, the record within its limit. Sets what chat_outcome would set, size and
    `private` included (tests/test_dspy.py compares the two), and returns True; for any other
    outcome sets nothing and returns False: call chat_outcome. Nothing is scanned here, as there:
    `record.seal` scans every string of a record before anyone reads it."""
    text = outputs[0] if len(outputs) == 1 else None
    if (type(text) is not str or type(finish_reason) is not str or type(response_id) is not str
            or type(response_model) is not str or type(cache_hit) is not bool or not eff.content):
        return False
    chars = len(text)
    reason_chars = len(finish_reason)
    id_chars = len(response_id)
    model_chars = len(response_model)
    if (chars > 1024 or reason_chars > 64 or id_chars > LABEL_CHARS or model_chars > LABEL_CHARS
            or not (text.isascii() and finish_reason.isascii() and response_id.isascii()
                    and response_model.isascii())):
        return False
    used = TEXT_BYTES + chars + reason_chars + id_chars + model_chars
    if cost is not None:
        if type(cost) is not float:
            return False
        used += COST_BYTES
    if draft["size_bytes"] + used > eff.record_limit:  # chat_outcome hands it to apply_fields, which cuts
        return False
    if cost is not None:
        draft["cost"] = cost
    draft["outputs"] = outputs
    draft["output_text"] = text
    draft["finish_reason"] = finish_reason
    draft["response_id"] = response_id
    draft["response_model"] = response_model
    draft["cache_hit"] = cache_hit
    if private:
        used += _put_private(draft, draft, private)
    draft["duration"] = duration
    # A draft with this many keys or fewer fits the table RECORD_BASE_BYTES counts (see table_growth).
    draft["size_bytes"] += used if len(draft) <= 18 else used + table_growth(draft)
    return True
