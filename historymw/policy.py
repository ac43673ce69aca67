"""Recording policies: which calls become records.

A policy decides twice. The head decision (off, sample) is made before anything
is captured, so a "no" costs a branch. The tail decision (errors) is made once
the outcome is known; until then only references the call holds anyway are kept.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

POLICY_TERMS = ("off", "bounded", "sample", "errors")
_COMBINABLE = {"sample", "errors"}

# How a call is handled once the head decision is made.
SKIP = 0  # nothing is recorded
FULL = 1  # capture the request now, keep the record whatever the outcome
TAIL = 2  # keep only references now; build a record only if the call fails
# (scope.py adds SAMPLE and SAMPLE_ERRORS.) A scope's cached decision made under a configuration
# since replaced: decide again (the hot path reads only a decision's mode, no generation number).
STALE = -1

_TRACE_ID_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Policy:
    """A parsed policy: `off`, `bounded`, `sample`, `errors`, or `errors+sample`."""

    name: str
    sample: bool = False
    keep_errors: bool = False
    everything: bool = False

    @property
    def off(self) -> bool:
        return not (self.sample or self.keep_errors or self.everything)

    def __str__(self) -> str:
        return self.name


def parse_policy(value: object) -> Policy:
    """Parse `bounded`, `errors+sample`, ... ; raise ValueError saying what is allowed."""
    allowed = "expected one of off, bounded, sample, errors, or a '+' combination of sample and errors"
    if not isinstance(value, str):
        raise ValueError(allowed)
    terms = [t.strip().lower() for t in value.split("+")]
    if not terms or any(t not in POLICY_TERMS for t in terms) or len(set(terms)) != len(terms):
        raise ValueError(allowed)
    if len(terms) > 1 and not set(terms) <= _COMBINABLE:
        raise ValueError(allowed)
    name = "+".join(sorted(terms, key=POLICY_TERMS.index))
    return Policy(
        name=name,
        sample="sample" in terms,
        keep_errors="errors" in terms,
        everything="bounded" in terms,
    )


def trace_id_bound(rate: float) -> int:
    """The bound OpenTelemetry's TraceIdRatioBased sampler uses for `rate`."""
    return round(rate * (_TRACE_ID_MASK + 1))


def active_span_ids() -> tuple[int, int, int] | None:
    """(trace_id, span_id, trace_flags) of the active OpenTelemetry span, or None.

    Looks OpenTelemetry up in sys.modules instead of importing it: a process
    that never imported it pays one dict lookup.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    span = trace.get_current_span()
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    if span_observer is not None:
        span_observer(span)
    return ctx.trace_id, ctx.span_id, int(ctx.trace_flags)


# Set by the otel backend: sees the span active where a call starts (to notice another
# instrumentation's LLM span there). Must not raise.
span_observer: Callable[[Any], None] | None = None


def sampled_in(bound: int, rate: float, span_ids: tuple[int, int, int] | None) -> bool:
    """Sample by trace id when a span is active (so history agrees with traces
    sampled at the same rate), otherwise at random."""
    if span_ids is not None:
        return (span_ids[0] & _TRACE_ID_MASK) < bound
    return random.random() < rate
