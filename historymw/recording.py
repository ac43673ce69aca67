"""Recording: how an integration records a call it observes from outside.

An integration sees a call in pieces. Its start happens where the user called
(the caller's thread, or a copy of its context); its outcome may arrive later,
on a framework's own thread. `Recording.begin()` takes at the start everything
that depends on the caller's context: the scope's head decision (sampling by
trace id included) and the active OpenTelemetry span, so that a record keeps
its parent span and its scope whichever thread completes it. The integration
then hands over the request (`request()`) and the outcome (`succeed()` or
`fail()`) as the framework reports them; the core copies, bounds, redacts and
counts the bytes, and applies the errors-only tail decision.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from . import counters
from .capture import decide, finish, start
from .draft import CallSpec, chat_outcome, keep_private, parsed_outcome, text_outcome, usual_draft
from .extract import usage_fields
from .policy import FULL, SKIP, active_span_ids
from .scope import CURRENT

_perf = time.perf_counter
_now = time.time
_modules = sys.modules


class Recording:
    """One call an integration records: begun on the caller's context, finished on any thread.

    Every method is fail-open: an error inside historymw is counted, never raised.
    """

    __slots__ = ("spec", "eff", "mode", "span", "started", "t0", "draft", "where")

    def __init__(self, spec: CallSpec, eff: Any, mode: int, span: tuple[int, int, int] | None,
                 started: float | None, where: str, t0: float | None = None) -> None:
        self.spec = spec
        self.eff = eff
        self.mode = mode
        self.span = span
        self.started = _now() if started is None else started
        self.t0 = _perf() if t0 is None else t0
        self.draft: dict[str, Any] | None = None
        self.where = where  # the counter name errors are reported under

    @classmethod
    def begin(cls, spec: CallSpec, started: float | None = None, where: str = "integration",
              t0: float | None = None) -> Recording | None:
        """The head decision and the active span, on the caller's context; None when nothing is recorded.

        `started`, `t0`: the call's start (time.time(), time.perf_counter()) when it was taken earlier."""
        try:
            eff, mode = decide()
            if mode == SKIP:
                return None
            span = active_span_ids() if "opentelemetry.trace" in _modules else None
            return cls(spec, eff, mode, span, started, where, t0)
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error(where, exc)
            return None

    @property
    def keeps_success(self) -> bool:
        """False under errors-only: a success will not be kept, so its outcome need not be read."""
        return self.mode == FULL

    def request(self, model: Any, messages: Any, params: dict[str, Any] | None = None, *,
                system: Any = None) -> bool:
        """Capture the request. `params` becomes the record's (the dict is kept: hand over your own).
        `system`: a system prompt given beside the messages. The provider is the spec's.
        False when nothing will be recorded."""
        kwargs = params if params is not None else {}
        if system is not None:
            kwargs["system"] = system
        draft = start(self.eff, self.spec, self.mode, (model, messages), kwargs, self.started, self.span)
        if draft is None:
            return False
        self.draft = draft
        return True

    def note(self, name: str, value: Any) -> None:
        """Keep private data with the draft (never in the record: its name starts with "_"), counted in its size."""
        if self.draft is not None:
            keep_private(self.draft, name, value)

    def _ended(self, ended: float | None) -> float:
        return self.started + (_perf() - self.t0) if ended is None else ended

    def succeed(self, result: Any = None, *, ended: float | None = None, usage: Any = None,
                **fields: Any) -> None:
        """Finish with the result (read like a recorded function's) and/or LMCall fields, which win."""
        draft, self.draft = self.draft, None
        if draft is None:
            return
        try:
            given = {k: v for k, v in fields.items() if v is not None}
            if usage is not None:
                usage_fields(usage, given)
            finish(draft, self.spec, self.eff, result, None, self._ended(ended), given or None)
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error(self.where, exc)

    @classmethod
    def complete(cls, spec: CallSpec, started: float, t0: float, model: Any, messages: Any,
                 params: dict[str, Any], outputs: list[Any], fields: dict[str, Any],
                 private: dict[str, Any] | None = None, where: str = "integration") -> Recording | None:
        """Record a call observed once it is over, on the caller's context, in one step: the
        request, and an outcome the framework already parsed (`outputs` a list of str made for
        this record, fields of the types the record keeps: see `draft.parsed_outcome`), taken as
        they are; any other value is copied as `succeed()` copies it. `private`: `note()`'s data.

        None when that is done (or the scope records nothing). A scope that keeps only errors, or
        no content, gets a begun Recording back instead: go on with `request()` and `succeed()`.
        """
        try:
            eff, mode = decide()
            if mode == SKIP:
                return None
            span = active_span_ids() if "opentelemetry.trace" in _modules else None
            if mode != FULL or not eff.content:
                return cls(spec, eff, mode, span, started, where, t0)
            args = (model, messages)
            draft = usual_draft(spec, eff, args, params, started, span)
            if draft is None and (draft := start(eff, spec, FULL, args, params, started, span, False)) is None:
                return None
            duration = _perf() - t0
            rest = parsed_outcome(draft, eff, duration, outputs, fields, private)
            if rest:
                finish(draft, spec, eff, None, None, started + duration, rest)
            else:
                eff.commit(draft)
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error(where, exc)
        return None

    @classmethod
    def complete_chat(cls, spec: CallSpec, started: float, t0: float, model: Any, messages: Any,
                      params: dict[str, Any], outputs: list[str], finish_reason: str | None,
                      response_id: str | None, response_model: str | None, cost: float | None,
                      cache_hit: bool | None, private: dict[str, Any] | None,
                      where: str = "integration") -> Recording | None:
        """`complete()` for the usual chat response a framework parsed, its fields one by one
        (see `draft.chat_outcome`: each of the type named, or None); no usage. The cheapest way
        to record a call: a cache-hit DSPy call is recorded through this (its one ASCII text
        and labels through `draft.text_outcome`). `private`: note()'s data beyond the private
        keys of the spec's usual draft (CallSpec.draft: "_"-named keys an integration put there,
        which a draft made another way gets too)."""
        try:
            # decide(), inline: this is an integration's hot path. A cached decision is FULL only while
            # the configuration it was made under holds (configure() marks it stale), as in capture.recorded.
            eff = CURRENT.get().eff
            mode = eff.mode
            if mode != FULL:
                eff, mode = decide()
                if mode == SKIP:
                    return None
            span = active_span_ids() if "opentelemetry.trace" in _modules else None
            if mode != FULL or not eff.content:
                return cls(spec, eff, mode, span, started, where, t0)
            args = (model, messages)
            draft = usual_draft(spec, eff, args, params, started, span)
            if draft is None:
                if (draft := start(eff, spec, FULL, args, params, started, span, False)) is None:
                    return None
                for key, value in spec.draft.items():  # what the spec's usual drafts start with
                    if key[0] == "_" and key != "_pairs":
                        keep_private(draft, key[1:], value)
            duration = _perf() - t0
            if not text_outcome(draft, eff, duration, outputs, finish_reason, response_id, response_model, cost,
                                cache_hit, private):  # (the commonest outcome, set in the fewest steps)
                rest = chat_outcome(draft, eff, duration, outputs, finish_reason, response_id, response_model, cost,
                                    cache_hit, private)
                if rest:
                    finish(draft, spec, eff, None, None, started + duration, rest)
                    return None
            eff.commit(draft)
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error(where, exc)
        return None

    def fail(self, error: BaseException, *, ended: float | None = None, **fields: Any) -> None:
        """Finish with the call's error (kept under every policy that records anything)."""
        draft, self.draft = self.draft, None
        if draft is None:
            return
        try:
            given = {k: v for k, v in fields.items() if v is not None}
            finish(draft, self.spec, self.eff, None, error, self._ended(ended), given or None)
        except Exception as exc:  # noqa: BLE001 - fail open
            counters.COUNTERS.error(self.where, exc)
