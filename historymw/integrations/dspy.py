"""DSPy integration: historymw replaces DSPy's global history.

    from historymw.integrations import dspy as hm_dspy
    hm_dspy.install()

From then on every DSPy LM call becomes one historymw record (bounded, scoped,
redacted) instead of an entry appended to `dspy.clients.base_lm.GLOBAL_HISTORY`,
`lm.history` and the history of every calling module. Those lists stay as they
were; `dspy.inspect_history(n)`, `lm.inspect_history(n)` and
`module.inspect_history(n)` print historymw's records in DSPy's own format.

How: DSPy builds one history entry per LM call in `dspy.clients.execution.finalize` and
hands it to `BaseLM.update_history` / `base_lm.record_history`; `finalize` is rerouted to
read the record from the call and result DSPy already built (the entry is not built), and
`update_history`/`record_history` to historymw for every other way an entry arrives.
`execute`/`aexecute` are wrapped to take the call's start time and to record failures
(which DSPy never puts in its history); DSPy's per-attempt functions, which run only when
the cache does not answer, mark the call so that LiteLLM's integration does not record it a
second time. Nothing on a cache hit sets a context variable. DSPy's thread pools
(`dspy.Parallel`, `Evaluate`) are taught to carry the caller's `history(...)` scope into
their workers. `uninstall()` puts every original back.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any, TextIO

from .. import counters
from ..draft import (
    COMMON_PARAMS,
    COST_BYTES,
    LABEL_CHARS,
    MESSAGE_BYTES,
    PARAM_BYTES,
    SCALARS,
    TEXT_BYTES,
    CallSpec,
    held_bytes,
    message_pairs,
    over_limits,
    table_growth,
)
from ..errors import require
from ..extract import usage_fields
from ..policy import FULL, active_span_ids
from ..record import LMCall
from ..recording import Recording
from ..scope import CURRENT
from . import dspy_history
from ._common import IN_DSPY_CALL, MODEL_PARAMS, model_params, split_model

__all__ = ["install", "installed", "uninstall"]



def _lm_call(model: Any, messages: Any, **params: Any) -> None:
    """The shape records are captured from: model and messages by position, parameters by name."""


_MISSING = object()
_perf = time.perf_counter
_now = time.time
_imported = sys.modules

_lock = threading.Lock()
# (owner, attribute, what owner.__dict__ held before) for every patch in place.
_patches: list[tuple[Any, str, Any]] = []
_settings: Any = None  # dspy.settings, bound at install()
# What dspy.settings reads a name from, bound at install() when DSPy keeps them as this
# integration knows (else None): its per-context overrides (a ContextVar of a dict), then its config.
_overrides: Any = None
_config: dict[str, Any] | None = None
_in_dspy_call = IN_DSPY_CALL.get
# DSPy keeps its settings in `dotdict`s, whose Python __getattr__ makes every method lookup on
# them slow (`config.get` costs more than the call): dict.get is called as such instead.
_dict_get = dict.get
# Bound once: a classmethod looked up on its class makes a bound method at every call.
_complete_chat = Recording.complete_chat


# One DSPy LM call: a list [started, t0, cache_hit, done] (time.time() and time.perf_counter()
# at the call's start, whether DSPy's cache answered, whether the call is recorded already).
# The execute wrapper keeps it on DSPy's PreparedCall as `_historymw_call` (named in the code:
# faster than setattr()/getattr() with the name in a variable), where finalize finds it;
# IN_DSPY_CALL holds it only where DSPy's own finalize runs for historymw's `_route` (and,
# for a DSPy without the execution module, for the whole call). A list, not an object,
# because every LM call makes one: a list display costs no __init__ frame.
_STARTED, _T0, _CACHE_HIT, _DONE = range(4)
# IN_DSPY_CALL's value while DSPy's attempts run (cache misses): LiteLLM's integration skips
# calls under it; not a state list, so `_route` does not take it for one.
_ATTEMPT = "dspy_attempt"


def _dspy() -> Any:
    return require("dspy", what="historymw.integrations.dspy", extra="dspy")


def installed() -> bool:
    return bool(_patches)


def install() -> None:
    """Route DSPy's LM history to historymw. Idempotent; `uninstall()` undoes it."""
    global _settings
    dspy = _dspy()
    with _lock:
        if _patches:
            return
        base_lm = importlib.import_module("dspy.clients.base_lm")
        BaseLM = base_lm.BaseLM  # noqa: N806 - DSPy's class
        try:
            from dspy.dsp.utils.settings import settings
        except ImportError:
            settings = dspy.settings
        _settings = settings
        _bind_settings(sys.modules.get(type(settings).__module__))

        execution = _optional("dspy.clients.execution")
        if _hookable(execution):
            # BaseLM.__call__/acall (and LM.forward) import these from the module at every
            # call, so what is patched here is what they run.
            _patch(execution, "execute", _wrap_execute(execution.execute))
            _patch(execution, "aexecute", _wrap_aexecute(execution.aexecute))
            _patch(execution, "_attempt", _wrap_attempt(execution._attempt))
            _patch(execution, "_aattempt", _wrap_aattempt(execution._aattempt))
        else:  # a DSPy that runs calls otherwise: time and mark them around BaseLM.__call__/acall
            _patch(BaseLM, "__call__", _wrap_call(BaseLM.__call__))
            _patch(BaseLM, "acall", _wrap_acall(BaseLM.acall))
        # update_history is the method every LM uses. DSPy >= 3.4's update_history calls
        # record_history, which its TypeSafe LM module also imports by name: patch both.
        _patch(BaseLM, "update_history", _route)
        if hasattr(base_lm, "record_history"):
            _patch(base_lm, "record_history", _route)
        typesafe = _optional("dspy.clients.typesafe")
        if typesafe is not None and hasattr(typesafe, "record_history"):
            _patch(typesafe, "record_history", _route)
        if execution is not None and callable(getattr(execution, "finalize", None)):
            kinds = (getattr(execution, "PreparedCall", None), getattr(execution, "CallResult", None))
            _patch(execution, "finalize", _wrap_finalize(
                execution.finalize, kinds if all(isinstance(k, type) for k in kinds) else None))
        parallelizer = _optional("dspy.utils.parallelizer")
        executor = getattr(parallelizer, "ParallelExecutor", None)
        if executor is not None and callable(getattr(executor, "execute", None)):
            _patch(executor, "execute", _wrap_parallel(executor.execute))

        for module in (dspy, _optional("dspy.clients"), base_lm):
            if module is not None and hasattr(module, "inspect_history"):
                _patch(module, "inspect_history", inspect_history)
        _patch(BaseLM, "inspect_history", _inspect_lm)
        module_cls = getattr(dspy, "Module", None)
        if module_cls is not None:
            _patch(module_cls, "inspect_history", _inspect_module)
    dspy_history.install()  # GLOBAL_HISTORY, lm.history, module.history: views of the records


def uninstall() -> None:
    """Put DSPy's own history functions back. Records already made stay in historymw."""
    dspy_history.uninstall()
    with _lock:
        while _patches:
            owner, name, before = _patches.pop()
            if before is _MISSING:
                try:
                    delattr(owner, name)
                except AttributeError:
                    pass
            else:
                setattr(owner, name, before)


def _bind_settings(module: Any) -> None:
    """Read DSPy's settings where `Settings.__getattr__` reads them, when DSPy keeps them as
    this integration knows: a ContextVar of overrides, then a config dict."""
    global _overrides, _config
    overrides = getattr(module, "thread_local_overrides", None)
    config = getattr(module, "main_thread_config", None)
    ok = isinstance(overrides, contextvars.ContextVar) and isinstance(config, dict)
    _overrides, _config = (overrides, config) if ok else (None, None)


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _hookable(execution: Any) -> bool:
    """True when DSPy runs every LM call through `dspy.clients.execution` as this integration
    knows (DSPy >= 3.4): prepare, execute (its attempts only when the cache does not answer),
    finalize, with these signatures."""
    if execution is None:
        return False
    shapes = {"execute": ["lm", "call"], "aexecute": ["lm", "call"], "finalize": ["lm", "call", "result"],
              "_attempt": None, "_aattempt": None}
    for name, params in shapes.items():
        fn = getattr(execution, name, None)
        if not isinstance(fn, types.FunctionType):
            return False
        if params is not None and list(inspect.signature(fn).parameters) != params:
            return False
    return True


def _patch(owner: Any, name: str, value: Any) -> None:
    _patches.append((owner, name, vars(owner).get(name, _MISSING)))
    setattr(owner, name, value)


# -- the call ------------------------------------------------------------------------


def _as_dspy_frame(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` run in a copy of this module's namespace named under "dspy.". DSPy attributes its
    deprecation warnings to the first calling frame outside modules named "dspy" or "dspy.*"
    (dspy/clients/_deprecation.py): a wrapper of BaseLM.__call__ would take the warning (and
    Python's default filters, which show a DeprecationWarning only where __main__ triggers
    it, would then hide it). So named, the wrapper is skipped and the warning points at the
    user's line, as without historymw."""
    namespace = {**globals(), "__name__": "dspy.historymw_integration"}
    return types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)


def _wrap_call(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    @_as_dspy_frame
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        state = [_now(), _perf(), None, False]
        token = IN_DSPY_CALL.set(state)
        try:
            return orig(self, *args, **kwargs)
        except BaseException as exc:
            if not state[_DONE]:
                _record_failure(self, args, kwargs, state, exc)
            raise
        finally:
            IN_DSPY_CALL.reset(token)
    return call


def _wrap_acall(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    @_as_dspy_frame
    async def acall(self: Any, *args: Any, **kwargs: Any) -> Any:
        state = [_now(), _perf(), None, False]
        token = IN_DSPY_CALL.set(state)
        try:
            return await orig(self, *args, **kwargs)
        except BaseException as exc:
            if not state[_DONE]:
                _record_failure(self, args, kwargs, state, exc)
            raise
        finally:
            IN_DSPY_CALL.reset(token)
    return acall


def _wrap_execute(orig: Callable[..., Any]) -> Callable[..., Any]:
    # The call's start, and its failure: DSPy's execute runs the cache lookup and the attempts.
    # No context variable is set here: a cache hit never needs one (see _wrap_attempt).
    @functools.wraps(orig)
    @_as_dspy_frame
    def execute(lm: Any, call: Any) -> Any:
        state = [_now(), _perf(), None, False]
        try:
            result = orig(lm, call)
        except BaseException as exc:
            _record_call_failure(lm, call, state, exc)
            raise
        try:
            call._historymw_call = state  # for finalize, which gets this PreparedCall next
        except Exception:  # noqa: BLE001 - a PreparedCall that takes no attribute: timed at finalize
            pass
        return result
    return execute


def _wrap_aexecute(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    @_as_dspy_frame
    async def aexecute(lm: Any, call: Any) -> Any:
        state = [_now(), _perf(), None, False]
        try:
            result = await orig(lm, call)
        except BaseException as exc:
            _record_call_failure(lm, call, state, exc)
            raise
        try:
            call._historymw_call = state
        except Exception:  # noqa: BLE001
            pass
        return result
    return aexecute


def _wrap_attempt(orig: Callable[..., Any]) -> Callable[..., Any]:
    # One attempt at the provider: DSPy's cache did not answer. LiteLLM runs its hooks in the
    # caller's context or a copy of it, so they see the mark and leave the call to this record.
    @functools.wraps(orig)
    @_as_dspy_frame
    def attempt(*args: Any, **kwargs: Any) -> Any:
        token = IN_DSPY_CALL.set(_ATTEMPT)
        try:
            return orig(*args, **kwargs)
        finally:
            IN_DSPY_CALL.reset(token)
    return attempt


def _wrap_aattempt(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    @_as_dspy_frame
    async def aattempt(*args: Any, **kwargs: Any) -> Any:
        token = IN_DSPY_CALL.set(_ATTEMPT)
        try:
            return await orig(*args, **kwargs)
        finally:
            IN_DSPY_CALL.reset(token)
    return aattempt


def _wrap_finalize(orig: Callable[..., Any], kinds: tuple[Any, Any] | None) -> Callable[..., Any]:
    # DSPy's finalize builds a history entry (uuid4, an isoformat timestamp, a kwargs copy,
    # a display copy of the messages) only to hand it to update_history, which is
    # historymw's _route: for DSPy's usual call that entry is skipped and the record is
    # read from DSPy's call and result themselves. Everything else, and every unusual
    # case (an explicit lm15 Request, an LM overriding update_history, an unknown result
    # type, a DSPy whose settings are kept otherwise), goes through DSPy's own finalize.
    prepared, parsed = kinds if kinds is not None and _config is not None else (None, None)
    overrides: Any = _overrides.get if _overrides is not None else None
    config = _config if _config is not None else {}

    @functools.wraps(orig)
    def finalize(lm: Any, call: Any, result: Any) -> Any:
        try:
            state: Any = call._historymw_call  # set by the execute wrapper
        except AttributeError:
            state = None
        outside = state is None
        if outside:  # a DSPy without the execution hooks: the __call__ wrapper's state
            state = _in_dspy_call()
            if type(state) is not list:
                return orig(lm, call, result)
        if (type(call) is not prepared or type(result) is not parsed or call.request is not None
                or type(lm).update_history is not _route):  # (prepared is None: DSPy's settings unbound)
            state[_CACHE_HIT] = bool(getattr(result, "cache_hit", False))
            if outside:  # _route finds the state in the context already
                return orig(lm, call, result)
            token = IN_DSPY_CALL.set(state)  # for _route, under DSPy's own finalize
            try:
                return orig(lm, call, result)
            finally:
                IN_DSPY_CALL.reset(token)
        # DSPy's settings, read as Settings.__getattr__ reads them (its overrides, then its
        # config) without the AttributeError every `settings.name` raises first.
        ov = overrides()
        if ov:  # a dspy.context(...) in force (as for every call from a module)
            history_off, mods, limit = _in_context(ov, config)
        else:  # DSPy's config alone (on its dotdicts, `in` costs as much as the read: not asked)
            history_off = _dict_get(config, "disable_history")
            mods = _dict_get(config, "caller_modules")
            limit = _dict_get(config, "max_history_size", 10000)
        if not result.cache_hit:
            tracker = ov["usage_tracker"] if "usage_tracker" in ov else _dict_get(config, "usage_tracker")
            if tracker:
                tracker.add_usage(lm.model, result.usage)
        outputs = result.outputs
        if history_off:
            return outputs
        try:
            # The usual cache hit of an LM called directly: one str output, no usage, messages
            # given, no module, DSPy's default bound. Recorded from what DSPy built, in the
            # fewest steps; every other call takes _record_result.
            model = lm.model
            legacy = call.legacy
            messages = call.messages
            prompt = not messages and type(legacy) is dict and type(call.prompt) is str
            if prompt:  # lm("..."): DSPy rendered the prompt as one user message
                messages = legacy.get("messages")
            if (type(outputs) is list and len(outputs) == 1 and type(outputs[0]) is str and not result.usage
                    and messages and type(legacy) is dict and type(model) is str and not mods and limit == 10000
                    and "system" not in call.kwargs and type(cost := result.cost) is not int):
                hit = _LM_SPECS.get(id(lm))
                if hit is None or hit[3] is not model:
                    hit = _lm_spec(id(lm), model)
                params = {}  # model_params(legacy), inline: DSPy merged the LM's and the call's
                usual = True  # each a scalar `usual_draft` takes as it is
                for name, value in legacy.items():  # (a few keys: cheaper than a set intersection)
                    if value is not None and name in MODEL_PARAMS:
                        params[name] = value
                        if name not in _USUAL_PARAMS or type(value) not in SCALARS:
                            usual = False
                response = result.raw
                if response is None:  # lm15 Responses
                    response = result.responses
                    response = response[0] if len(response) == 1 else None
                try:  # a LiteLLM ModelResponse
                    reason = response.choices[0].finish_reason
                    rid = response.id
                except Exception:  # noqa: BLE001 - an lm15 Response, or none
                    reason = rid = None
                    if response is not None:
                        choices = getattr(response, "choices", None)
                        reason = (getattr(choices[0], "finish_reason", None) if choices
                                  else getattr(response, "finish_reason", None))
                        rid = getattr(response, "id", None)
                state[_DONE] = True
                # The LM's id (and the mark of a prompt call): in its spec's drafts already.
                spec = hit[4] if prompt else hit[0]
                if usual and (eff := _current().eff).mode == FULL:  # the scope's decision, made and in force
                    draft = _text_draft(spec, eff, hit[1], messages, params, state, outputs[0], reason, rid,
                                        result.response_model, cost, result.cache_hit)
                    if draft is not None:
                        eff.commit(draft)
                        return outputs
                recording = _complete_chat(spec, state[_STARTED], state[_T0], hit[1], messages, params,
                                           [outputs[0]], reason, rid, result.response_model, cost, result.cache_hit,
                                           None, "dspy_integration")
                # Else a scope that keeps only errors, or no content: begun, its request to capture.
                if recording is not None and recording.request(hit[1], messages, params):
                    recording.note("dspy", hit[2])
                    if prompt:
                        recording.note("dspy_prompt", True)
                    if recording.keeps_success:
                        _succeed(recording, outputs, None, cost, response, result.response_model, result.cache_hit,
                                 None)
                    else:  # errors-only: nothing of a success is read
                        recording.succeed()
                return outputs
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error("dspy_integration", exc)
            return outputs
        _record_result(lm, call, result, state, mods, limit)
        return outputs
    return finalize


_USUAL_PARAMS = COMMON_PARAMS - {"stream"}  # a "stream" param goes the general way (usual_draft reads it)
# draft.table_growth by the draft's number of keys, looked up rather than called (a frame a call):
# `_text_draft`'s drafts have at most 29 (the spec's 13, 11 fields, a session, tags, a span's 3).
_GROWTH = tuple(table_growth(dict.fromkeys(map(str, range(n)))) for n in range(48))
_current = CURRENT.get


def _text_draft(spec: CallSpec, eff: Any, model: Any, messages: Any, params: dict[str, Any], state: list[Any],
                text: Any, reason: Any, rid: Any, response_model: Any, cost: Any,
                cache_hit: Any) -> dict[str, Any] | None:
    """The whole draft of DSPy's usual cache hit in one dict: the draft `usual_draft` and
    `text_outcome` build together (the same fields, the same size: tests/test_dspy.py compares
    them), without their general steps; None for any other call, which `Recording.complete_chat`
    takes. `params`: scalars named in COMMON_PARAMS but "stream" (the caller checked); `eff`: a
    scope whose decision is FULL. The usual call: `model` a str within LABEL_CHARS, the usual
    messages (`message_pairs`) within the field limit, one output text of at most 1024 chars and
    all three labels (finish_reason within 64 chars, the others LABEL_CHARS), all ASCII, `cost` a
    float or None, `cache_hit` a bool, content captured, the record within its limit. No string
    is scanned here: `record.seal` scans every string of a record before anyone reads it."""
    if (not eff.content or type(model) is not str or type(text) is not str or type(reason) is not str
            or type(rid) is not str or type(response_model) is not str or type(cache_hit) is not bool):
        return None
    chars = len(text)
    model_chars = len(model)
    reason_chars = len(reason)
    id_chars = len(rid)
    label_chars = len(response_model)
    if (chars > 1024 or reason_chars > 64 or model_chars > LABEL_CHARS or id_chars > LABEL_CHARS
            or label_chars > LABEL_CHARS or not (text.isascii() and reason.isascii() and rid.isascii()
                                                 and response_model.isascii())):
        return None
    read = message_pairs(messages)
    if read is None:
        return None
    pairs, size = read
    size += model_chars + len(params) * PARAM_BYTES + len(messages) * MESSAGE_BYTES + spec.base_bytes
    if size > eff.draft_limit and over_limits(size, pairs, eff):  # `usual_draft`'s check
        return None
    size += TEXT_BYTES + chars + reason_chars + id_chars + label_chars  # what `text_outcome` counts
    draft = spec.draft.copy()  # a copy of a dict is cheaper than a dict display of the same keys
    if cost is not None:
        if type(cost) is not float:
            return None
        size += COST_BYTES
        draft["cost"] = cost
    if eff.labels is not None:  # session and tags of the enclosing history(...) scopes
        draft.update(eff.labels)
        size += eff.labels_bytes
    if size > eff.record_limit:  # `text_outcome` leaves it to chat_outcome, which cuts
        return None
    if "opentelemetry.trace" in _imported and (span := active_span_ids()) is not None:
        draft["trace_id"], draft["span_id"], draft["trace_flags"] = span
    draft["started"] = state[_STARTED]
    draft["model"] = model
    draft["_pairs"] = pairs
    draft["params"] = params
    draft["outputs"] = [text]
    draft["output_text"] = text
    draft["finish_reason"] = reason
    draft["response_id"] = rid
    draft["response_model"] = response_model
    draft["cache_hit"] = cache_hit
    draft["duration"] = _perf() - state[_T0]
    draft["size_bytes"] = size + _GROWTH[len(draft)]
    return draft


def _in_context(ov: dict[str, Any], config: dict[str, Any]) -> tuple[Any, Any, Any]:
    """DSPy's disable_history, caller_modules and max_history_size under dspy.context(...)
    overrides `ov`: each from them when set there, else from DSPy's config."""
    return (ov["disable_history"] if "disable_history" in ov else _dict_get(config, "disable_history"),
            ov["caller_modules"] if "caller_modules" in ov else _dict_get(config, "caller_modules"),
            ov["max_history_size"] if "max_history_size" in ov else _dict_get(config, "max_history_size", 10000))


def _wrap_parallel(orig: Callable[..., Any]) -> Callable[..., Any]:
    # DSPy's ParallelExecutor copies only its own settings into its worker threads.
    @functools.wraps(orig)
    def execute(self: Any, function: Callable[[Any], Any], data: Any) -> Any:
        frame = CURRENT.get()

        def in_callers_scope(item: Any) -> Any:
            token = CURRENT.set(frame)
            try:
                return function(item)
            finally:
                CURRENT.reset(token)
        return orig(self, in_callers_scope, data)
    return execute


def _modules() -> Any:
    """The DSPy modules the call came through, outermost first (DSPy sets them per call)."""
    try:
        return _settings.caller_modules or ()
    except Exception:  # noqa: BLE001
        return ()


# Per model string: the spec of its provider and the model's name (DSPy's "openai/gpt-4o-mini").
_MODELS: dict[str, tuple[CallSpec, str | None]] = {}
_SPECS: dict[str | None, CallSpec] = {}


def _spec_of(model: Any) -> tuple[CallSpec, str | None]:
    hit = _MODELS.get(model) if type(model) is str else None
    if hit is None:
        provider, name = split_model(model)
        spec = _SPECS.get(provider)
        if spec is None:
            spec = _SPECS.setdefault(provider, CallSpec(_lm_call, provider, "chat", "dspy", None))
        hit = (spec, name)
        if type(model) is str and len(_MODELS) < 1024:
            _MODELS[model] = hit
    return hit


# Per id(lm): the spec, the model's name and the private data of a record of that LM (its id,
# for lm.history and lm.inspect_history), the model str they were made for (an LM whose model
# is set anew gets a new entry), and the spec of that LM's calls made as lm("..."). The ids are
# compared by value only, so an LM made where a collected one lived, with the same model, gets
# the same entry, rightly.
_LM_SPECS: dict[int, tuple[CallSpec, str | None, tuple[int], str, CallSpec]] = {}


def _lm_spec(lm_id: int, model: str) -> tuple[CallSpec, str | None, tuple[int], str, CallSpec]:
    provider, name = split_model(model)
    ids = (lm_id,)
    hit = (_private_spec(provider, dspy=ids), name, ids, model,
           _private_spec(provider, dspy=ids, dspy_prompt=True))
    if len(_LM_SPECS) >= 1024:  # LMs copied per call (optimizers): start over rather than grow
        _LM_SPECS.clear()
    _LM_SPECS[lm_id] = hit
    return hit


def _private_spec(provider: str | None, **private: Any) -> CallSpec:
    """A spec of one LM's own: its usual drafts start with `private` in them (the LM's id, and
    for its calls made as lm("...") the mark that DSPy's entry has the prompt, no messages),
    counted in the spec's base size as note() counts them, so a record costs no per-call step
    for them. Recording.complete_chat gives a draft made another way the same keys. The values
    are immutable, so every record of this LM holds the same ones."""
    spec = CallSpec(_lm_call, provider, "chat", "dspy", None)
    for key, value in private.items():
        spec.draft["_" + key] = value
        spec.base_bytes += held_bytes(value)
    return spec


def _begin(lm: Any, model: Any, messages: Any, params: dict[str, Any], system: Any,
           state: list[Any] | None, mods: Any) -> Recording | None:
    """A recording of the call with its request captured, or None when nothing is recorded.

    `params`: a dict made for the record (it is kept)."""
    spec, name = _spec_of(model)
    if state is None:
        recording = Recording.begin(spec, where="dspy_integration")
    else:
        recording = Recording.begin(spec, state[_STARTED], "dspy_integration", state[_T0])
    if recording is None or not recording.request(name, messages, params, system=system):
        return None
    # For lm.inspect_history and module.inspect_history: never part of a record.
    recording.note("dspy", (id(lm), *[id(m) for m in mods]) if mods else (id(lm),))
    limit = getattr(_settings, "max_history_size", 10000)  # DSPy's bound at this call, for the views
    if limit != 10000:
        recording.note("dspy_max", limit)
    return recording


# The metadata's module path per tuple of module classes: built and scanned once.
_MODULE_NAMES: dict[tuple[type, ...], str] = {}


def _module_name(mods: Any) -> dict[str, Any] | None:
    if not mods:
        return None
    kinds = tuple(type(m) for m in mods)
    name = _MODULE_NAMES.get(kinds)
    if name is None:
        name = ".".join(k.__name__ for k in kinds)
        if len(_MODULE_NAMES) < 1024:
            _MODULE_NAMES[kinds] = name
    return {"dspy_module": name}


def _route(lm: Any, entry: Any) -> None:
    """Takes the place of DSPy's record_history/update_history: one record, DSPy's lists untouched."""
    try:
        state = IN_DSPY_CALL.get()
        if type(state) is not list:
            state = None
        else:
            state[_DONE] = True
        if not isinstance(entry, dict):
            return
        messages = entry.get("messages")
        if not messages and entry.get("prompt") is not None:
            messages = entry.get("prompt")
        call_kwargs = entry.get("kwargs")
        params = model_params(getattr(lm, "kwargs", None), call_kwargs)
        system = call_kwargs.get("system") if isinstance(call_kwargs, dict) else None
        mods = _modules()
        recording = _begin(lm, entry.get("model") or getattr(lm, "model", None), messages, params, system, state,
                           mods)
        if recording is None:
            return
        if not entry.get("messages") and entry.get("prompt") is not None:
            recording.note("dspy_prompt", True)  # lm("..."): DSPy's entry has the prompt, no messages
        if not recording.keeps_success:  # errors-only: nothing of a success is read
            recording.succeed()
            return
        cache_hit = state[_CACHE_HIT] if state is not None else entry.get("cache_hit")
        _succeed(recording, entry.get("outputs"), entry.get("usage"), entry.get("cost"), entry.get("response"),
                 entry.get("response_model"), cache_hit, mods)
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("dspy_integration", exc)


def _record_result(lm: Any, call: Any, result: Any, state: list[Any], mods: Any, limit: Any) -> None:
    """The record of a DSPy call that went through `finalize`, read from what DSPy built for it:
    the request it sent (`call.legacy`: the LM's and the call's parameters merged, the messages
    rendered) and the outputs, usage and cost it parsed (`result`). `mods`, `limit`: DSPy's
    caller_modules and max_history_size at this call (see `finalize`)."""
    try:
        state[_DONE] = True
        messages = call.messages
        legacy = call.legacy
        if type(legacy) is dict:
            params = {}  # model_params(legacy), inline
            for key, value in legacy.items():
                if value is not None and key in MODEL_PARAMS:
                    params[key] = value
            if not messages:  # lm("..."): DSPy rendered the prompt as one user message
                messages = legacy.get("messages")
        else:
            params = model_params(getattr(lm, "kwargs", None), call.kwargs)
            if not messages:
                prompt = call.prompt
                messages = [{"role": "user", "content": prompt}] if type(prompt) is str else prompt
        model = lm.model
        hit = _MODELS.get(model) if type(model) is str else None
        spec, name = hit if hit is not None else _spec_of(model)
        # The DSPy modules the call came through, and DSPy's bound at this call: for
        # lm.inspect_history, module.inspect_history and DSPy's history views, never in a record.
        private: dict[str, Any] = {"dspy": (id(lm), *map(id, mods)) if mods else (id(lm),)}
        if limit != 10000:
            private["dspy_max"] = limit
        if not call.messages and type(call.prompt) is str:
            private["dspy_prompt"] = True  # lm("..."): DSPy's entry has the prompt, no messages
        outputs = result.outputs
        system = call.kwargs.get("system")
        raw = result.raw
        response = raw if raw is not None else result.responses
        recording: Recording | None
        if (system is None and type(outputs) is list and outputs
                and (type(outputs[0]) is str if len(outputs) == 1 else all(type(o) is str for o in outputs))):
            # DSPy's usual outputs: str. The caller gets DSPy's list back from the call, so the
            # record keeps a list of its own holding the same (immutable) str objects.
            usage = result.usage
            cost = result.cost
            if usage or mods or (cost is not None and type(cost) is not float):  # with usage or a module
                fields = _outcome_fields(response, cost, result.response_model, result.cache_hit, mods)
                if usage:
                    usage_fields(usage, fields)
                recording = Recording.complete(spec, state[_STARTED], state[_T0], name, messages, params,
                                               [*outputs], fields, private, "dspy_integration")
            else:  # an LM called directly, a cache hit (no usage): the response's fields one by one
                reason = rid = None
                if response is not None:  # a LiteLLM ModelResponse, or a tuple of lm15 Responses
                    if type(response) is tuple and len(response) == 1:
                        response = response[0]
                    choices = getattr(response, "choices", None)
                    reason = (getattr(choices[0], "finish_reason", None) if choices
                              else getattr(response, "finish_reason", None))
                    rid = getattr(response, "id", None)
                recording = Recording.complete_chat(spec, state[_STARTED], state[_T0], name, messages, params,
                                                    [*outputs], reason, rid, result.response_model, cost,
                                                    result.cache_hit, private, "dspy_integration")
        else:
            recording = Recording.begin(spec, state[_STARTED], "dspy_integration", state[_T0])
        if recording is None or not recording.request(name, messages, params, system=system):
            return
        for key, value in private.items():
            recording.note(key, value)
        if not recording.keeps_success:  # errors-only: nothing of a success is read
            recording.succeed()
            return
        _succeed(recording, outputs, result.usage, result.cost, response, result.response_model, result.cache_hit,
                 mods)
    except Exception as exc:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("dspy_integration", exc)


def _outcome_fields(response: Any, cost: Any, response_model: Any, cache_hit: Any, mods: Any) -> dict[str, Any]:
    """LMCall fields from what DSPy parsed: its cost and response model, the provider's response ids."""
    reason = rid = None
    if response is not None:  # a LiteLLM ModelResponse, or an lm15 Response (a tuple of them from finalize)
        if type(response) is tuple and len(response) == 1:
            response = response[0]
        choices = getattr(response, "choices", None)
        reason = getattr(choices[0], "finish_reason", None) if choices else getattr(response, "finish_reason", None)
        rid = getattr(response, "id", None)
    return {"cost": float(cost) if type(cost) is int else cost,
            "finish_reason": reason[:64] if type(reason) is str else None,
            "response_id": rid[:256] if type(rid) is str else None,
            "response_model": response_model[:256] if type(response_model) is str else None,
            "cache_hit": cache_hit, "metadata": _module_name(mods) if mods else None}


def _succeed(recording: Recording, outputs: Any, usage: Any, cost: Any, response: Any, response_model: Any,
             cache_hit: Any, mods: Any) -> None:
    """Finish with what DSPy already parsed: its outputs, usage, cost and response."""
    text = None
    if type(outputs) is list and outputs:
        first = outputs[0]
        head = first.get("text") if type(first) is dict else first
        text = head if type(head) is str else None
    else:
        outputs = None
    fields = _outcome_fields(response, cost, response_model, cache_hit, mods)
    recording.succeed(outputs=outputs, output_text=text, usage=usage or None, **fields)


def _record_failure(lm: Any, args: tuple[Any, ...], kwargs: dict[str, Any], state: list[Any],
                    exc: BaseException) -> None:
    """DSPy keeps no history of failed calls; historymw records them (unless DSPy's history is off)."""
    try:
        state[_DONE] = True
        if getattr(_settings, "disable_history", False):
            return
        messages = kwargs.get("messages")
        if messages is None:
            messages = args[0] if args and isinstance(args[0], (str, list)) else kwargs.get("prompt")
        call_kwargs = {k: v for k, v in kwargs.items() if k not in ("messages", "prompt")}
        mods = _modules()
        recording = _begin(lm, getattr(lm, "model", None), messages, model_params(getattr(lm, "kwargs", None),
                           call_kwargs), call_kwargs.get("system"), state, mods)
        if recording is not None:
            recording.fail(exc, metadata=_module_name(mods))
    except Exception as err:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("dspy_integration", err)


def _record_call_failure(lm: Any, call: Any, state: list[Any], exc: BaseException) -> None:
    """A failed execute: recorded from DSPy's PreparedCall (unless DSPy's history is off).
    Once per failure: an LM whose forward calls DSPy's LM.forward runs execute inside execute,
    and the outer one sees the same error (or one raised from it)."""
    try:
        state[_DONE] = True
        seen: BaseException | None = exc
        for _ in range(8):
            if seen is None:
                break
            if getattr(seen, "_historymw_recorded", False):
                return
            seen = seen.__cause__ or seen.__context__
        if getattr(_settings, "disable_history", False):
            return
        messages = getattr(call, "messages", None)
        legacy = getattr(call, "legacy", None)
        request = getattr(call, "request", None)
        if request is not None:
            from dspy.clients.lm15_boundary import history_messages

            messages = history_messages(request)
        elif not messages and isinstance(legacy, dict):
            messages = legacy.get("messages")  # lm("..."): DSPy rendered the prompt as one user message
        call_kwargs = getattr(call, "kwargs", None)
        params = model_params(legacy) if isinstance(legacy, dict) else model_params(getattr(lm, "kwargs", None),
                                                                                      call_kwargs)
        system = call_kwargs.get("system") if isinstance(call_kwargs, dict) else None
        mods = _modules()
        recording = _begin(lm, getattr(lm, "model", None), messages, params, system, state, mods)
        if recording is not None:
            recording.fail(exc, metadata=_module_name(mods))
        try:
            exc._historymw_recorded = True  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - an exception without a __dict__
            pass
    except Exception as err:  # noqa: BLE001 - fail open
        counters.COUNTERS.error("dspy_integration", err)


# -- inspect_history -----------------------------------------------------------------


def _records(owner: int | None, n: int) -> list[LMCall]:
    """The newest `n` DSPy records (oldest first), of one LM or module when `owner` is its id."""
    from ..api import ring

    r = ring()
    picked: list[dict[str, Any]] = []
    if n <= 0:
        return []
    for draft in reversed(r.drafts()):
        ids = draft.get("_dspy")
        if ids is None or (owner is not None and owner not in ids):
            continue
        picked.append(draft)
        if len(picked) >= n:
            break
    picked.reverse()
    return [r.record(d) for d in picked]


def _as_dspy_entry(record: LMCall) -> dict[str, Any]:
    """A record in the shape DSPy's printer reads (messages, prompt, outputs, timestamp)."""
    messages = []
    for m in record.messages:
        if isinstance(m, dict) and isinstance(m.get("role"), str):
            messages.append(m)
        else:
            messages.append({"role": "user", "content": m if isinstance(m, str) else str(m)})
    if record.status == "error":
        outputs: list[Any] = [f"[historymw] the call failed: {record.error_type}: {record.error_message}"]
    elif record.outputs:
        outputs = list(record.outputs)
    elif record.output_text is not None:
        outputs = [record.output_text]
    else:
        outputs = ["[historymw] output not captured (capture_content is off)"]
    when = record.started_at.astimezone().replace(tzinfo=None).isoformat()
    return {"messages": messages, "prompt": None, "outputs": outputs, "timestamp": when}


def _print(records: list[LMCall], file: TextIO | None) -> None:
    out = sys.stdout if file is None else file
    if not records:
        out.write("historymw: no DSPy calls recorded yet (is a 'ring' backend configured and the policy on?)\n")
        return
    from dspy.utils.inspect_history import pretty_print_history

    pretty_print_history([_as_dspy_entry(r) for r in records], len(records), file=file)


def inspect_history(n: int = 1, file: TextIO | None = None) -> None:
    """`dspy.inspect_history(n)`: the last n DSPy LM calls historymw recorded, in DSPy's format."""
    _print(_records(None, n), file)


def _inspect_lm(self: Any, n: int = 1, file: TextIO | None = None) -> None:
    _print(_records(id(self), n), file)


def _inspect_module(self: Any, n: int = 1, file: TextIO | None = None) -> None:
    _print(_records(id(self), n), file)

