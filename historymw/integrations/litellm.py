"""LiteLLM integration: every `litellm.completion/acompletion/embedding` call becomes one record.

    from historymw.integrations import litellm as hm_litellm
    hm_litellm.install()

`install()` registers one LiteLLM `CustomLogger`. The scope decision is taken in
LiteLLM's pre-call hook, which runs where the user called LiteLLM (or in a copy
of its context), and the started call is parked under LiteLLM's call id. The
outcome arrives later, sometimes on a LiteLLM logging thread that does not see
the caller's context (sync streams, mid-stream failures): it finds the parked
call by id, so the record still honours the caller's `history(...)` scope.

Records are built from an allow-list of LiteLLM's data (model parameters,
the response, `standard_logging_object` fields), never from the keyword
arguments LiteLLM hands its callbacks wholesale: those hold the API key,
headers and cloud credentials.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import counters
from ..capture import decide, finish, start
from ..draft import (
    CHOICE_BYTES,
    COMMON_PARAMS,
    LABEL_CHARS,
    MESSAGE_BYTES,
    META_LABEL_CHARS,
    PARAM_BYTES,
    SCALARS,
    STR_HEADER,
    USAGE_BYTES,
    CallSpec,
    chat_outcome,
    message_pairs,
    over_limits,
    table_growth,
    usual_draft,
)
from ..errors import require
from ..extract import usage_fields
from ..plain import DICT_OVERHEAD, DICT_PER_ITEM, LIST_OVERHEAD, SCALAR_SIZE
from ..policy import FULL, SKIP, active_span_ids
from ..recording import Recording
from ._common import IN_DSPY_CALL, MODEL_PARAMS, model_params

if TYPE_CHECKING:
    from ..scope import Effective

__all__ = ["aflush", "flush", "install", "installed", "pending", "uninstall"]

# LiteLLM call types recorded, and the operation name each record gets.
_OPERATIONS = {
    "completion": "chat", "acompletion": "chat",
    "text_completion": "text_completion", "atext_completion": "text_completion",
    "embedding": "embeddings", "aembedding": "embeddings",
}

# Every list LiteLLM keeps callbacks in, and copies them into at call time.
_CALLBACK_LISTS = (
    "callbacks", "input_callback", "success_callback", "failure_callback", "service_callback",
    "audit_log_callbacks", "_async_input_callback", "_async_success_callback", "_async_failure_callback",
)

# A call whose outcome never arrives (a stream nobody finished reading, an event
# LiteLLM dropped under load) must not be held forever.
PENDING_MAX_ITEMS = 10_000
PENDING_MAX_AGE_S = 900.0

_lock = threading.Lock()
_logger: Any = None
_monotonic = time.monotonic
_modules = sys.modules
_sizeof = sys.getsizeof


class _Pending:
    """The calls LiteLLM has started and not yet reported, by LiteLLM call id, and the ids of
    those it reported (LiteLLM may report one call twice: its sync handler on a thread and its
    async one on the loop; the second report must not become a record).

    Two kinds of started call. A sync call that is not a stream is only noted (`note`, lock-free:
    it is every plain `completion()`), and decided where its outcome is reported. Any other is
    parked (`put`) with its scope's decision: a `_Parked` call, or None for a call that must not
    be recorded (a disabled scope, or a call DSPy's integration records), so that a late outcome
    on another thread does not record it under the wrong scope. A parked call expires after
    `max_age` seconds; both kinds are bounded by `max_items`.
    """

    def __init__(self, max_items: int = PENDING_MAX_ITEMS, max_age: float = PENDING_MAX_AGE_S) -> None:
        self.max_items = max_items
        self.max_age = max_age
        self._items: dict[str, tuple[float, object | None]] = {}
        # No parked call expires before this (monotonic) time: the oldest one's deadline, or a
        # bound below it. Until then a put() need not look at the oldest.
        self._expires = time.monotonic() + max_age
        # Noted calls: id -> True. Setting and popping a key are atomic: no lock.
        self._noted: dict[str, bool] = {}
        # Reports being turned into records, one entry each (deque.append and .pop are atomic):
        # `waiting()` counts them, so that flush() does not return before their records exist.
        self._building: deque[None] = deque()
        # Ids whose outcome was taken (id -> None, oldest first); trimmed by half when full.
        self._taken: dict[str, None] = {}
        self._lock = threading.Lock()

    def note(self, key: str) -> None:
        noted = self._noted
        noted[key] = True
        if len(noted) > self.max_items:
            self._trim(noted, "integration_timeout")

    def _trim(self, ids: dict[str, Any], reason: str | None) -> None:
        """Forget the older half of a full set of ids (amortised: once per max_items / 2 calls)."""
        with self._lock:
            old = list(itertools.islice(ids, max(len(ids) - self.max_items // 2, 0)))
            for key in old:
                ids.pop(key, None)
            if ids is not self._taken:
                self._given_up(old)
        if reason is not None and old:
            counters.COUNTERS.drop(reason, len(old))

    def claim(self, key: str) -> bool:
        """Take a noted call's outcome: True for the first report of a noted call."""
        if self._noted.pop(key, False):
            taken = self._taken
            taken[key] = None
            if len(taken) > self.max_items:
                self._trim(taken, None)
            return True
        return False

    def put(self, key: str, value: object | None) -> None:
        now = _monotonic()
        items = self._items
        with self._lock:
            if key in items:  # LiteLLM ran the hook twice for one call: keep the first
                return
            items[key] = (now + self.max_age, value)
            if len(items) <= self.max_items and now < self._expires:
                return
            expired = self._expire(now)
        if expired:
            counters.COUNTERS.drop("integration_timeout", expired)

    def _expire(self, now: float) -> int:
        """Drop the oldest calls past their deadline or over `max_items` (under the lock); how many
        of them would have become records."""
        items = self._items
        expired = 0
        while items:
            oldest = next(iter(items))
            deadline, parked = items[oldest]
            if len(items) <= self.max_items and deadline > now:
                self._expires = deadline
                return expired
            del items[oldest]
            self._given_up((oldest,))
            if parked is not None:
                expired += 1
        self._expires = now + self.max_age  # every call parked from now on expires later
        return expired

    def parked(self, key: str) -> bool:
        """Is a call that will become a record parked under this id?"""
        item = self._items.get(key)
        return item is not None and item[1] is not None

    def take(self, key: str) -> object | None:
        """The call parked under this id (see the class), `_MISSING` when none is, `_REPEAT` when
        its outcome was reported already. (A noted call is taken by `claim`.)"""
        with self._lock:
            item = self._items.pop(key, None)
            taken = self._taken
            if item is None and key in taken:
                return _REPEAT
            taken[key] = None
        if len(taken) > self.max_items:
            self._trim(taken, None)
        return _MISSING if item is None else item[1]

    def waiting(self) -> int:
        """Calls that will become records once LiteLLM reports their outcome (or that are being built)."""
        with self._lock:
            return (len(self._building) + len(self._noted)
                    + sum(1 for _, value in self._items.values() if value is not None))

    def clear(self) -> int:
        with self._lock:
            n = len(self._noted) + sum(1 for _, value in self._items.values() if value is not None)
            self._given_up(self._items)
            self._given_up(self._noted)
            self._items.clear()
            self._noted.clear()
        return n

    def _given_up(self, keys: Iterable[str]) -> None:
        """Calls dropped before their outcome came (counted as dropped by the caller), under the lock:
        remembered as taken, so that a late report (LiteLLM carries a closed loop's logging task
        onto the next loop) is not recorded as a call no pre-call hook saw, under whatever scope
        is current then."""
        taken = self._taken
        for key in keys:
            taken[key] = None
        while len(taken) > self.max_items:  # the oldest first; a late report of those is counted nowhere
            del taken[next(iter(taken))]


# `_Pending.take()`'s answers beside a parked value.
_MISSING = object()  # nothing parked: no pre-call hook ran (embeddings, a failure before the request)
_REPEAT = object()  # the outcome of this call was reported already

_PENDING = _Pending()
# Its parts every plain completion() touches, looked up once (the objects never change).
_NOTED = _PENDING._noted
_TAKEN = _PENDING._taken
_BUILDING = _PENDING._building


def _litellm() -> Any:
    return require("litellm", what="historymw.integrations.litellm", extra="litellm")


class _Orphans:
    """Async outcomes LiteLLM has in hand but reports from a task on the caller's event loop.

    `asyncio.run(litellm.acompletion(...))` returns, and closes its loop, before that task
    runs: the outcome would be lost. Each one is noted here when LiteLLM schedules its
    report (in the caller's await), dropped when the report arrives, and recorded from
    what was noted when `flush()` (or the exit) finds its loop closed. Either way once:
    the parked call is popped by whichever comes first.
    """

    def __init__(self) -> None:
        self._items: dict[str, tuple[Any, Any, Any]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, loop: Any, details: Any, result: Any) -> None:
        with self._lock:
            if len(self._items) < PENDING_MAX_ITEMS:
                self._items[key] = (loop, details, result)

    def discard(self, key: Any) -> None:
        if self._items:
            with self._lock:
                self._items.pop(key, None)

    def deliver(self) -> None:
        with self._lock:
            closed = [(k, v) for k, v in self._items.items() if v[0].is_closed()]
            for key, _ in closed:
                del self._items[key]
        for _, (_, details, result) in closed:
            _on_end(details, result)


_ORPHANS = _Orphans()


def _wrap_schedule(orig: Any) -> Any:
    """LiteLLM's `_schedule_async_success_logging`, noting the outcome of a parked call."""
    import functools

    @functools.wraps(orig)
    def schedule(*args: Any, **kwargs: Any) -> Any:
        done = orig(*args, **kwargs)
        try:
            details = getattr(kwargs.get("logging_obj"), "model_call_details", None)
            key = details.get("litellm_call_id") if isinstance(details, dict) else None
            if (isinstance(key, str) and isinstance(details, dict) and _PENDING.parked(key)
                    and details.get("stream") is not True):
                _ORPHANS.put(key, asyncio.get_running_loop(), details, kwargs.get("result"))
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error("litellm_integration", exc)
        return done
    schedule.historymw_wrapped = orig  # type: ignore[attr-defined]
    return schedule


def _deliver_orphans() -> None:
    _ORPHANS.deliver()


def install() -> None:
    """Record every LiteLLM completion, acompletion and embedding call. Idempotent."""
    global _logger
    litellm = _litellm()
    with _lock:
        if _logger is None:
            _logger = _make_logger_class(litellm)()
            _install_orphan_watch()
        if any(cb is _logger for cb in litellm.callbacks):
            return
        manager = getattr(litellm, "logging_callback_manager", None)
        add = getattr(manager, "add_litellm_callback", None)
        if callable(add):
            add(_logger)
        if not any(cb is _logger for cb in litellm.callbacks):
            litellm.callbacks.append(_logger)


def _install_orphan_watch() -> None:
    import atexit
    import sys

    from ..api import BEFORE_FLUSH

    utils = sys.modules.get("litellm.utils")
    schedule = getattr(utils, "_schedule_async_success_logging", None)
    if callable(schedule) and not hasattr(schedule, "historymw_wrapped"):
        utils._schedule_async_success_logging = _wrap_schedule(schedule)  # type: ignore[union-attr]
    if _deliver_orphans not in BEFORE_FLUSH:
        BEFORE_FLUSH.append(_deliver_orphans)
        # Registered after historymw's own exit flush, so run before it (atexit is LIFO).
        atexit.register(_deliver_orphans)


def uninstall() -> None:
    """Remove the logger from every list LiteLLM copied it into; calls still in flight are not recorded."""
    global _logger
    import sys

    with _lock:
        logger, _logger = _logger, None
        if logger is None:
            return
        litellm = sys.modules.get("litellm")
        if litellm is not None:
            # Looked up now and changed in place: LiteLLM rebinds some lists, and
            # other modules may hold a reference to the list objects themselves.
            holders = [litellm, sys.modules.get("litellm.utils")]
            for holder in holders:
                for name in (*_CALLBACK_LISTS, "callback_list"):
                    lst = getattr(holder, name, None) if holder is not None else None
                    if isinstance(lst, list):
                        lst[:] = [cb for cb in lst if cb is not logger]
        lost = _PENDING.clear()
        if lost:
            counters.COUNTERS.drop("integration_uninstalled", lost)


def installed() -> bool:
    """Is the logger registered with LiteLLM right now?"""
    import sys

    litellm = sys.modules.get("litellm")
    logger = _logger
    return logger is not None and litellm is not None and any(cb is logger for cb in litellm.callbacks)


def pending() -> int:
    """Calls LiteLLM has started whose success or failure has not been reported yet."""
    return _PENDING.waiting()


def flush(timeout: float = 5.0) -> bool:
    """Wait (up to `timeout`) until LiteLLM has reported every started call, then `hm.flush()`.

    LiteLLM reports outcomes on its own logging threads, after the call has
    returned. Do not call this from inside a running event loop: async outcomes
    are delivered by a task on that loop; use `await aflush()` there.
    """
    from ..api import flush as hm_flush

    deadline = time.monotonic() + timeout
    _ORPHANS.deliver()
    while _PENDING.waiting() and time.monotonic() < deadline:
        time.sleep(0.005)
        _ORPHANS.deliver()
    done = not _PENDING.waiting()
    return bool(hm_flush(max(deadline - time.monotonic(), 0.0))) and done


async def aflush(timeout: float = 5.0) -> bool:
    """`flush()` for async code: lets LiteLLM's logging tasks on this loop run while waiting."""
    from ..api import flush as hm_flush

    deadline = time.monotonic() + timeout
    while _PENDING.waiting() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    done = not _PENDING.waiting()
    rest = max(deadline - time.monotonic(), 0.0)
    return bool(await asyncio.to_thread(hm_flush, rest)) and done


# -- building records --------------------------------------------------------------


_DEFAULT_PORTS = {"https": 443, "http": 80}


# api_base -> _server(api_base), for the few base URLs a program calls; never one that carries
# credentials (user:password@), which is parsed each time and not kept.
_SERVERS: dict[str, tuple[str | None, int | None]] = {}


def _server(api_base: str) -> tuple[str | None, int | None]:
    """(host, port) of an API base URL: the host only, as a URL may carry credentials; the
    scheme's default port when none is written (the conventions want a port beside an address)."""
    server = _SERVERS.get(api_base)
    if server is None:
        server = _parse_server(api_base)
        if len(_SERVERS) < 256 and "@" not in api_base:
            _SERVERS[api_base] = server
    return server


def _parse_server(api_base: str) -> tuple[str | None, int | None]:
    try:
        parts = urlsplit(api_base)
        host = parts.hostname
        port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:  # a malformed port
        return None, None
    return (host, port) if host else (None, None)


def _epoch(value: Any) -> float | None:
    if type(value) is float:  # LiteLLM's standard logging payload's times
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    timestamp = getattr(value, "timestamp", None)  # datetime (LiteLLM's are naive local time)
    if callable(timestamp):
        try:
            return float(timestamp())
        except (TypeError, ValueError, OverflowError, OSError):
            return None
    return None


def _lm_call(model: Any, messages: Any, **params: Any) -> None:
    """The shape records are captured from: model and messages by position, parameters by name."""


_SPECS = {op: CallSpec(_lm_call, None, op, "litellm", None) for op in set(_OPERATIONS.values())}
_PROVIDER_SPECS: dict[tuple[str, str], CallSpec] = {}  # (operation, provider): the provider is the spec's


# provider -> (its chat spec, the template `_fill_chat` copies into a draft: every key of LiteLLM's
# usual chat draft but its size, in order, the constant ones filled in, and the bytes every such
# draft counts: see `_chat`), for `_record_chat`: one lookup, no key to build.
_CHATS: dict[Any, tuple[CallSpec, dict[str, Any], int]] = {}
_CHAT_KEYS = ("started", "duration", "provider", "model", "operation", "source", "_pairs", "params", "output_text",
              "stream", "outputs", "finish_reason", "response_id", "response_model", "cost", "cache_hit", "metadata",
              "input_tokens", "output_tokens", "total_tokens")


def _chat(provider: Any) -> tuple[CallSpec, dict[str, Any], int]:
    spec = _spec("chat", provider if type(provider) is str else None)
    template = dict.fromkeys(_CHAT_KEYS)
    template.update(provider=spec.provider, operation="chat", source="litellm", stream=False)
    # What every usual chat draft counts beside its strings, params and messages: the draft's base
    # (its provider), `_CHAT_BYTES`, and its table's growth past RECORD_BASE_BYTES' 21 keys
    # (`table_growth`), the same for all: the template's 20 keys and size_bytes, and at most ten
    # more (server 2, labels 2, span 3, usage details 3), or one fewer (no cost).
    chat = (spec, template, spec.base_bytes + _CHAT_BYTES + table_growth(template))
    if len(_CHATS) < 1024 and _cacheable(provider):
        _CHATS[provider] = chat
    return chat


def _spec(operation: str, provider: str | None) -> CallSpec:
    if provider is None:
        return _SPECS[operation]
    spec = _PROVIDER_SPECS.get((operation, provider))
    if spec is None:
        spec = CallSpec(_lm_call, provider, operation, "litellm", None)
        if len(_PROVIDER_SPECS) < 1024 and _cacheable(provider):
            _PROVIDER_SPECS[(operation, provider)] = spec
    return spec


def _cacheable(provider: Any) -> bool:
    """A provider name the caches may keep as a key: 1,024 of them hold at most 256 KB. A longer
    one (a custom provider string) gets its spec made for each call, as the record clips it."""
    return provider is None or (type(provider) is str and len(provider) <= LABEL_CHARS)


class _Parked:
    """A call the pre-call hook kept: its recording (scope decision and span, taken on the
    caller's context) and references to what LiteLLM holds anyway.

    The request is copied when the outcome arrives (for sync calls on LiteLLM's logging
    thread, off the caller's); this object, and with it every reference to the caller's
    data, goes as soon as the record is built.
    """

    __slots__ = ("recording", "operation", "model", "messages", "kwargs", "start_time")

    def __init__(self, recording: Recording, operation: str, model: Any, messages: Any,
                 kwargs: Mapping[str, Any]) -> None:
        self.recording = recording
        self.operation = operation
        self.model = model
        # A chat loop appends the reply to its list right after the call returns, maybe
        # before LiteLLM's logging thread gets here. LiteLLM 1.x hands the hook a copy of
        # the caller's list already; this shallow copy (~0.1 µs) keeps that true whatever it does.
        self.messages = messages[:] if type(messages) is list else messages
        self.kwargs = kwargs
        self.start_time = kwargs.get("start_time")


def _capture_request(recording: Recording, operation: str, model: Any, messages: Any,
                     kwargs: Mapping[str, Any]) -> bool:
    """Hand the request to the recording (the core copies it, bounded and redacted)."""
    litellm_params = kwargs.get("litellm_params")
    provider = kwargs.get("custom_llm_provider")
    if not isinstance(provider, str) and isinstance(litellm_params, Mapping):
        provider = litellm_params.get("custom_llm_provider")
    if operation == "embeddings":
        messages = kwargs.get("input")
        if isinstance(messages, str):
            messages = [messages]
    params = model_params(kwargs.get("optional_params"))
    if kwargs.get("stream") is True:
        params["stream"] = True
    system = kwargs.get("system")  # Anthropic-style: beside the messages
    if isinstance(provider, str):
        recording.spec = _spec(operation, provider)
    return recording.request(model if isinstance(model, str) else None, messages, params,
                             system=system if isinstance(system, (str, list)) else None)


def _on_start(model: Any, messages: Any, kwargs: Mapping[str, Any]) -> None:
    """LiteLLM's pre-call hook (the logger's `log_pre_api_call` itself): on the caller's thread, or
    in a copy of its context.

    A sync call that is not a stream is only noted here (so that `flush()` waits for it): LiteLLM
    reports its outcome in the caller's context (its success handler runs in a copy of it, its
    failure handler on the caller's thread), and the record is built there in one step. Any
    other call (async, streams, text completions) is decided here, where the scope and the
    active span are the caller's, and parked with references, copied when its outcome arrives,
    maybe on a LiteLLM thread without the caller's context."""
    try:
        call_type = kwargs.get("call_type")
        key = kwargs.get("litellm_call_id")
        if type(key) is not str:
            return
        if call_type == "completion" and kwargs.get("stream") is not True:
            noted = _NOTED  # _PENDING.note(key), inline: every plain completion() runs this
            noted[key] = True
            if len(noted) > _PENDING.max_items:
                _PENDING.note(key)
            return
        operation = _OPERATIONS.get(call_type)  # type: ignore[arg-type]
        if operation is None:
            return
        if IN_DSPY_CALL.get() is not None:
            _PENDING.put(key, None)
            return
        recording = Recording.begin(_SPECS[operation], where="litellm_integration")
        if recording is None:
            _PENDING.put(key, None)
            return
        _PENDING.put(key, _Parked(recording, operation, model if model else kwargs.get("model"), messages, kwargs))
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("litellm_integration", exc)


def _error_of(kwargs: Mapping[str, Any], slo: Mapping[str, Any]) -> BaseException:
    exc = kwargs.get("exception")
    if isinstance(exc, BaseException):
        return exc
    info = slo.get("error_information")
    info = info if isinstance(info, Mapping) else {}
    name = info.get("error_class") or "LiteLLMError"
    message = slo.get("error_str") or info.get("error_message") or "LiteLLM reported a failure"
    error: BaseException = type(str(name), (Exception,), {})(str(message))
    return error


def _on_end(kwargs: Mapping[str, Any], response_obj: Any, start_time: Any = None, end_time: Any = None,
            failed: bool = False) -> None:
    """LiteLLM's success or failure event, on whatever thread LiteLLM reports it. It is the logger's
    `log_success_event` itself (LiteLLM's arguments, by keyword: no call in between)."""
    key = kwargs.get("litellm_call_id")
    if _ORPHANS._items:  # the usual case: none, and no call to make
        _ORPHANS.discard(key)
    if type(key) is not str:
        _record_here(kwargs, response_obj, failed, key)
        return
    building = _BUILDING
    building.append(None)  # waiting (for flush) from before the call leaves the started ones
    try:
        if _NOTED.pop(key, False):  # a sync call that is not a stream, noted by the pre-call hook
            taken = _TAKEN  # `_PENDING.claim(key)`, inline: every plain completion() runs this
            taken[key] = None
            if len(taken) > _PENDING.max_items:
                _PENDING._trim(taken, None)
            if failed or not _record_chat(kwargs, key):
                _record_here(kwargs, response_obj, failed, key)
            return
        value = _PENDING.take(key)
        if value is None or value is _REPEAT:  # not recorded, or recorded already
            return
        if isinstance(value, _Parked):
            _record_parked(kwargs, response_obj, failed, key, value)
        else:
            _record_here(kwargs, response_obj, failed, key)
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("litellm_integration", exc)
    finally:
        building.pop()


def _record_parked(kwargs: Mapping[str, Any], response: Any, failed: bool, key: Any, parked: _Parked) -> None:
    """The outcome of a call decided (and parked) in the pre-call hook."""
    try:
        slo = kwargs.get("standard_logging_object")
        slo = slo if type(slo) is dict or isinstance(slo, Mapping) else {}
        recording = parked.recording
        started = _epoch(slo.get("startTime")) or _epoch(parked.start_time)
        if started is not None:
            recording.started = started
        if _capture_request(recording, parked.operation, parked.model, parked.messages, parked.kwargs):
            _finish(recording, kwargs, slo, response, failed, key)
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("litellm_integration", exc)


def _record_here(kwargs: Mapping[str, Any], response: Any, failed: bool, key: Any) -> None:
    """The outcome of a call decided where it is reported: a sync call that is not a stream
    (LiteLLM reports it in a copy of the caller's context), or one no pre-call hook saw
    (embeddings, errors raised before the request), reported on the caller's thread or in a
    copy of its context."""
    try:
        operation = _OPERATIONS.get(kwargs.get("call_type"))  # type: ignore[arg-type]
        if operation is None or IN_DSPY_CALL.get() is not None:
            return
        slo = kwargs.get("standard_logging_object")
        slo = slo if type(slo) is dict or isinstance(slo, Mapping) else {}
        started = _epoch(slo.get("startTime")) or _epoch(kwargs.get("start_time"))
        begun = Recording.begin(_SPECS[operation], started, where="litellm_integration")
        if begun is not None and _capture_request(begun, operation, kwargs.get("model"), kwargs.get("messages"),
                                                  kwargs):
            _finish(begun, kwargs, slo, response, failed, key)
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("litellm_integration", exc)


_NO_PRIVATE: dict[str, Any] = {}


def _record_chat(kwargs: Mapping[str, Any], key: str) -> bool:
    """Record a sync chat completion's success in one step, from the plain dicts of LiteLLM's
    standard logging payload, in a copy of the caller's context (where LiteLLM reports it): the
    scope's decision, then the whole draft of the usual call (`_chat_draft`), else the draft's two
    steps (`_chat_steps`), as `Recording.request()` and `succeed()` would record it. False, before
    anything is decided, for any other shape (tool calls, several choices, no payload): the general
    way takes it. Every line here runs for every call."""
    try:  # the usual payload read by subscripts; any other shape raises
        slo = kwargs["standard_logging_object"]
        payload = slo["response"]
        started = slo["startTime"]
        ended = slo["endTime"]
        (choice,) = payload["choices"]
        message = choice["message"]
        text = message["content"]
        role = message["role"]
        reason = choice["finish_reason"]
        if (message["tool_calls"] or type(text) is not str or type(role) is not str or type(started) is not float
                or type(ended) is not float or (reason is not None and type(reason) is not str)
                or kwargs.get("system") is not None):
            return False
    except (KeyError, TypeError, ValueError, IndexError):
        return False
    if IN_DSPY_CALL.get() is not None:
        return True
    provider = kwargs.get("custom_llm_provider")
    spec, template, base = _CHATS.get(provider) or _chat(provider)
    eff, mode = decide()  # the one decision for this call
    if mode == SKIP:
        return True
    span = active_span_ids() if "opentelemetry.trace" in _modules else None
    if mode != FULL or not eff.content:  # errors only, or no content: the general way, decided
        recording = Recording(spec, eff, mode, span, started, "litellm_integration")
        if _capture_request(recording, "chat", kwargs.get("model"), kwargs.get("messages"), kwargs):
            _finish(recording, kwargs, slo, None, False, key)
        return True
    draft = _chat_draft(base, template, eff, kwargs, slo, payload, text, role, reason, started, ended, span, key)
    if draft is not None:
        eff.commit(draft)
    else:
        _chat_steps(spec, eff, kwargs, slo, payload, text, role, reason, started, ended, span, key)
    return True


# What `usual_draft` and `chat_outcome` count for the usual LiteLLM chat completion beside its
# strings' chars, its params and its messages: the draft itself (`spec.base_bytes`, where the
# provider is counted), the outputs list and its slot, the one choice and the headers of its role,
# content and finish reason, finish_reason, response_id and response_model (a slot and a header
# each; the model's header is in the base), cache_hit, metadata {"litellm_call_id": id} (its slot,
# dict, item and header), and the usage's three token counts (a slot and an int each).
_TOKEN_BYTES = DICT_PER_ITEM + SCALAR_SIZE
_CHAT_BYTES = (LIST_OVERHEAD + DICT_PER_ITEM + CHOICE_BYTES + 3 * STR_HEADER
               + 3 * (DICT_PER_ITEM + STR_HEADER) + DICT_PER_ITEM
               + 2 * DICT_PER_ITEM + DICT_OVERHEAD + STR_HEADER + 3 * _TOKEN_BYTES)
_USAGE_SLACK = USAGE_BYTES - 3 * _TOKEN_BYTES  # what `chat_outcome` keeps free for a usage's other counts


def _chat_draft(base: int, template: dict[str, Any], eff: Effective, kwargs: Mapping[str, Any],
                slo: Mapping[str, Any],
                payload: Mapping[str, Any], text: str, role: str, reason: str | None, started: float,
                ended: float, span: Any, key: str) -> dict[str, Any] | None:
    """The whole draft of LiteLLM's usual chat completion in one dict: the draft `usual_draft` and
    `chat_outcome` build together (the same fields, the same size), without their general steps.

    None for any other call. The usual one: `model` a str and `messages` a list of {"role": str,
    "content": str} each within the field limit; model parameters all scalars named in
    COMMON_PARAMS; a response whose id, model, role and finish reason are short ASCII str and
    whose text is at most 1024 chars (`chat_outcome` clips longer ones); three token counts; the
    record within its limit. No string is scanned here: `record.seal` scans every string of a
    record before anyone reads or exports it. When only the ring holds the draft, its fields are set
    when it is sealed (`_fill_chat`): the hot path builds a dict of two keys, not of twenty-odd."""
    try:
        model = kwargs["model"]
        messages = kwargs["messages"]
        optional = kwargs["optional_params"]
        response_id = payload["id"]
        response_model = payload["model"]
        usage = payload["usage"]
        cost = slo["response_cost"]
        cache_hit = slo["cache_hit"] is True  # LiteLLM reports None for a miss
        api_base = slo["api_base"]
        if (type(model) is not str or type(messages) is not list or type(optional) is not dict
                or type(response_id) is not str or type(response_model) is not str or type(reason) is not str
                or type(usage) is not dict or len(text) > 1024):
            return None
        # The three token counts, read here when they are all the usage holds (maybe beside both
        # details as None: `extract.usage_fields`' shortcut), else by `usage_fields` below.
        input_tokens = usage["prompt_tokens"]
        output_tokens = usage["completion_tokens"]
        total_tokens = usage["total_tokens"]
        n = len(usage)
        counts_only = (type(input_tokens) is int and type(output_tokens) is int and type(total_tokens) is int
                       and (n == 3 or (n == 5 and usage["prompt_tokens_details"] is None
                                       and usage["completion_tokens_details"] is None)))
        # Each label within what `usual_draft` and `chat_outcome` keep (role and finish reason: 64
        # chars, the call id: 128, the others: 256), all ASCII: a byte a char and a header each.
        labels = "".join((model, role, reason, response_id, response_model, key))
        if len(role) + len(reason) > 64 or len(key) > META_LABEL_CHARS or len(labels) > LABEL_CHARS:
            return None
        if not labels.isascii():
            return None
        # The request: the allow-listed model parameters (`model_params`), each a usual one.
        params = {}
        for k, v in optional.items():
            if v is not None and k in MODEL_PARAMS:
                if k not in COMMON_PARAMS or type(v) not in SCALARS:
                    return None
                params[k] = v
        size = (base + len(labels) + len(reason) + len(params) * PARAM_BYTES
                + len(messages) * MESSAGE_BYTES + (len(text) if text.isascii() else _sizeof(text) - STR_HEADER))
    except KeyError:
        return None
    read = message_pairs(messages)  # as `usual_draft` reads and counts them
    if read is None:
        return None
    pairs, chars = read
    size += chars
    # A content the field limit truncates (`usual_draft`'s check: the size bounds each content's length).
    if size > eff.draft_limit and over_limits(size, pairs, eff):  # as `usual_draft` checks it
        return None
    if type(cost) is float or type(cost) is int:
        cost = float(cost)
        size += DICT_PER_ITEM + SCALAR_SIZE
    else:  # no cost known: no field, as `chat_outcome` leaves it
        cost = None
    server = None
    if api_base and type(api_base) is str:
        server = _server(api_base)
        address = server[0]
        if not address:
            server = None
        else:  # as `apply_fields` keeps and counts them
            if not address.isascii() or len(address) > eff.max_chars:
                return None
            size += 2 * DICT_PER_ITEM + len(address) + STR_HEADER + SCALAR_SIZE
    scope_labels = eff.labels  # session and tags of the enclosing history(...) scopes
    if scope_labels is not None:
        size += eff.labels_bytes
    if size + _USAGE_SLACK > eff.record_limit:  # near the limit: `chat_outcome` truncates what does not fit
        return None
    fields = (template, started, ended - started, model, pairs, params, text, role, reason, response_id,
              response_model, cache_hit, key, input_tokens, output_tokens, total_tokens, cost, server, span)
    rt = eff.runtime
    if counts_only and scope_labels is None and rt is not None and rt._ring_only:
        # Only the ring holds the draft, and reads nothing in it but its size before it is sealed
        # (when first read): its fields are set then, by `_fill_chat` (`record.seal` calls it).
        return {"size_bytes": size, "_fill": (_fill_chat, fields)}
    draft = {"size_bytes": size}  # read before sealing (by export pipelines, the session table): set now
    _fill_chat(draft, fields)
    if not counts_only:  # details (cached, reasoning tokens): the draft's fields past the three counted
        n = len(draft)
        usage_fields(usage, draft)
        size += (len(draft) - n) * _TOKEN_BYTES
        if size + _USAGE_SLACK > eff.record_limit:
            return None
        draft["size_bytes"] = size
    if scope_labels is not None:
        draft.update(scope_labels)
    return draft


def _fill_chat(draft: dict[str, Any], fields: tuple[Any, ...]) -> None:
    """Set the fields of a `_chat_draft` draft (which holds its size): the template's (its keys in
    order, the constant ones filled in), the request's, the outcome's, the server's and the span's."""
    (template, started, duration, model, pairs, params, text, role, reason, response_id, response_model, cache_hit,
     key, input_tokens, output_tokens, total_tokens, cost, server, span) = fields
    draft.update(template)
    draft["started"] = started
    draft["duration"] = duration
    draft["model"] = model
    draft["_pairs"] = pairs
    draft["params"] = params
    draft["output_text"] = text
    draft["outputs"] = [{"index": 0, "role": role, "content": text, "finish_reason": reason}]
    draft["finish_reason"] = reason
    draft["response_id"] = response_id
    draft["response_model"] = response_model
    draft["cache_hit"] = cache_hit
    draft["metadata"] = {"litellm_call_id": key}
    draft["input_tokens"] = input_tokens
    draft["output_tokens"] = output_tokens
    draft["total_tokens"] = total_tokens
    if cost is None:
        del draft["cost"]
    else:
        draft["cost"] = cost
    if server is not None:
        draft["server_address"], draft["server_port"] = server
    if span is not None:
        draft["trace_id"], draft["span_id"], draft["trace_flags"] = span


def _chat_steps(spec: CallSpec, eff: Effective, kwargs: Mapping[str, Any], slo: Mapping[str, Any],
                payload: Mapping[str, Any], text: str, role: str, reason: str | None, started: float,
                ended: float, span: Any, key: str) -> None:
    """A chat completion `_chat_draft` does not take, recorded in the draft's two steps, which
    handle every shape: `usual_draft` (or `start`) for the request, `chat_outcome` for the outcome."""
    model = kwargs.get("model")
    if type(model) is not str and not isinstance(model, str):  # as `_capture_request` hands it over
        model = None
    args = (model, kwargs.get("messages"))
    params = model_params(kwargs.get("optional_params"))  # a dict made here: the record keeps it
    draft = usual_draft(spec, eff, args, params, started, span)
    if draft is None and (draft := start(eff, spec, FULL, args, params, started, span, False)) is None:
        return
    cost = slo.get("response_cost")
    api_base = slo.get("api_base")
    server = None
    if api_base and type(api_base) is str:
        address, port = _server(api_base)
        if address:
            server = {"server_address": address, "server_port": port}
    rest = chat_outcome(
        draft, eff, ended - started, [{"index": 0, "role": role, "content": text, "finish_reason": reason}],
        reason, payload.get("id"), payload.get("model"),
        cost if type(cost) is float else float(cost) if type(cost) is int else None,
        slo.get("cache_hit") is True,  # LiteLLM reports None for a miss
        _NO_PRIVATE, payload.get("usage"), {"litellm_call_id": key}, server)
    if rest:
        finish(draft, spec, eff, None, None, ended, rest)
    else:
        eff.commit(draft)


def _finish(recording: Recording, kwargs: Mapping[str, Any], slo: Mapping[str, Any], response: Any, failed: bool,
            key: Any) -> None:
    """Hand a captured call's outcome to its recording."""
    ended = _epoch(slo.get("endTime")) or _epoch(kwargs.get("end_time")) or time.time()
    metadata = {"litellm_call_id": key}
    if failed:
        recording.fail(_error_of(kwargs, slo), ended=ended, metadata=metadata)
        return
    if not recording.keeps_success:  # errors-only: nothing of a success is read
        recording.succeed(ended=ended)
        return
    cost = slo.get("response_cost", kwargs.get("response_cost"))
    server_address, server_port = None, None
    api_base = slo.get("api_base")
    if isinstance(api_base, str) and api_base:
        server_address, server_port = _server(api_base)
    stream = bool(slo.get("stream") or kwargs.get("stream") is True)
    ttft = None
    if stream:
        first, begun_at = _epoch(slo.get("completionStartTime")), _epoch(slo.get("startTime"))
        if first is not None and begun_at is not None and first >= begun_at:
            ttft = first - begun_at
    recording.succeed(
        _response_of(slo, response), ended=ended, metadata=metadata,
        cost=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
        cache_hit=bool(slo.get("cache_hit", kwargs.get("cache_hit"))),  # LiteLLM reports None for a miss
        server_address=server_address or None, server_port=server_port,
        stream=True if stream else None, time_to_first_token_s=ttft)


def _response_of(slo: Mapping[str, Any], response: Any) -> Any:
    """What a chat completion's outcome is read from: the response as plain dicts in LiteLLM's
    standard logging payload (LiteLLM builds it for every call, whatever its callbacks), else the
    response object. The core reads both alike; a dict costs lookups where a `ModelResponse`
    costs pydantic attribute lookups (each field the object lacks raises and formats an
    AttributeError inside pydantic: about five per response, as many microseconds)."""
    payload = slo.get("response")
    if type(payload) is dict and type(payload.get("choices")) is list:
        return payload
    return response


def _make_logger_class(litellm: Any) -> type:
    from litellm.integrations.custom_logger import CustomLogger

    class HistorymwLogger(CustomLogger):  # type: ignore[misc]
        """Hands LiteLLM's events to historymw. LiteLLM passes every argument by keyword."""

        def __init__(self) -> None:
            super().__init__()
            # LiteLLM de-duplicates loggers by class name and public attributes.
            self.historymw_instance = uuid.uuid4().hex

        # The hooks every plain completion() runs are the module's functions themselves, which
        # take LiteLLM's arguments by the same names: no method call in between.
        log_pre_api_call = staticmethod(_on_start)
        log_success_event = staticmethod(_on_end)

        def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
            _on_end(kwargs, None, failed=True)

        async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                          end_time: Any) -> None:
            _on_end(kwargs, response_obj)

        async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                          end_time: Any) -> None:
            _on_end(kwargs, None, failed=True)

    return HistorymwLogger
