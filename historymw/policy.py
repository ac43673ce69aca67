"""Recording policies: which calls become records.

A policy decides twice. The head decision (off, sample) is made before anything
is captured, so a "no" costs a branch. The tail decision (errors) is made once
the outcome is known; until then only references the call holds anyway are kept.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import counters

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
# The longest run of skips drawn at once: counting down within the ints CPython caches (-5..256)
# costs no allocation per call. A longer geometric draw is taken in runs of this length, then
# drawn again (the law is memoryless: what is left of a long gap is a fresh draw).
MAX_SKIP = 256
_random = random.random  # the module's generator: `random.seed()` makes sampling repeatable


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


class Sampler:
    """Bernoulli(rate) head sampling by geometric skips: a random draw per sampled-in call, not per call.

    `skip` is how many of the next calls are sampled out before one is sampled in,
    drawn from the geometric law of the failures before a success: each call is
    still sampled in with probability `rate`, independently of the others. A
    sampled-out call only takes one from `skip` (the hot path reads it and writes
    it back with no call between: under the GIL no other thread runs between the
    read and the write, so no skip is lost or taken twice). What it sampled out
    is `drawn - skip`: no per-call counter.

    A draw longer than MAX_SKIP is taken MAX_SKIP at a time (`more`: the call at
    the end of the run is sampled out too, and the rest drawn afresh), so a zero
    rate never samples a call in, and never calls random().

    One sampler serves every scope of a configuration that samples at its rate
    (`SampledOut.sampler`): the calls of one scope are a subsequence of its trials
    chosen without looking at them, hence Bernoulli trials too.
    """

    __slots__ = ("rate", "counted", "skip", "more", "drawn", "_log_miss", "_lock")

    def __init__(self, rate: float, counted: bool = True) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self.counted = counted  # its skips count as sampled out (errors+sample: they are tail decisions)
        self._log_miss = math.log1p(-rate) if 0.0 < rate < 1.0 else 0.0
        self.skip, self.more = self.gap()
        self.drawn = self.skip

    def gap(self) -> tuple[int, bool]:
        """A fresh geometric draw of the calls to sample out next: (at most MAX_SKIP of them, whether
        the draw was longer: then the call after them is sampled out too, and the rest drawn again)."""
        if self.rate >= 1.0:
            return 0, False
        if self.rate <= 0.0:
            return MAX_SKIP, True
        # P(gap >= k) = P(u <= (1 - rate)**k) = (1 - rate)**k, u uniform on (0, 1].
        g = math.log(1.0 - _random()) / self._log_miss
        return (int(g), False) if g < MAX_SKIP + 1 else (MAX_SKIP, True)  # int(g) == MAX_SKIP is a whole draw

    def take(self) -> bool:
        """One call's head decision: True when it is sampled in."""
        # `self.skip -= 1` is one line: a trace function (a debugger, coverage) lets threads switch
        # between lines, never inside one, so no decrement is lost; two calls that both saw the
        # last skip take the countdown below zero, and `drawn - skip` still counts both.
        if self.skip > 0:
            self.skip -= 1
            return False
        with self._lock:  # one draw at a time
            if self.skip > 0:  # another call drew first: this one comes after it, the first of its skips
                self.skip -= 1
                return False
            gap, more = self.gap()
            sampled_in = not self.more  # the end of a whole draw; else of a run of a longer one
            self.more = more
            self.skip += gap  # += : a countdown that a race took past zero (skip < 0) keeps its calls
            self.drawn += gap if sampled_in else gap + 1  # this call too, when it is sampled out
            return sampled_in

    @property
    def sampled_out(self) -> int:
        return self.drawn - self.skip  # two reads with no call between: a consistent pair


class TossSampler(Sampler):
    """A coin toss per call, each sampled-out call counted when it happens: the sampler of a rate
    past the MAX_SAMPLERS a configuration keeps (not kept: it lives as long as its scopes)."""

    __slots__ = ("_tally",)

    def __init__(self, rate: float, counted: bool, tally: Callable[[], object]) -> None:
        super().__init__(rate, counted)
        self.skip, self.more, self.drawn = 0, False, 0  # no skips: every call comes to take()
        self._tally = tally

    def take(self) -> bool:
        if _random() < self.rate:
            return True
        if self.counted:
            self._tally()
        return False


MAX_SAMPLERS = 64  # rates a configuration keeps a sampler for (scopes that set their own sample_rate)


class SampledOut(counters.Counter):
    """The sampled-out counter of a configuration (a Runtime puts it in its counters): the calls
    counted one by one (`count`: a trace id's decision) and those its samplers skipped."""

    __slots__ = ("_samplers", "_lock")

    def __init__(self, start: int = 0) -> None:
        super().__init__()
        self.count = itertools.count(start)  # (what a plain Counter counted before it was replaced)
        self.add = self.count.__next__
        self._samplers: dict[tuple[float, bool], Sampler] = {}
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        return super().value + sum(s.sampled_out for s in list(self._samplers.values()) if s.counted)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # another thread of the parent may have held it at the fork
        for s in self._samplers.values():  # the parent's countdown would repeat its trials in every child
            s._lock = threading.Lock()
            old = s.skip
            s.skip, s.more = s.gap()
            s.drawn += s.skip - old

    def sampler(self, rate: float, counted: bool) -> Sampler:
        """The sampler of the scopes that sample at `rate` (`counted`: not errors+sample)."""
        key = (rate, counted)
        s = self._samplers.get(key)
        if s is None:
            with self._lock:
                s = self._samplers.get(key)
                if s is None:
                    if len(self._samplers) >= MAX_SAMPLERS:  # kept for the configuration's life: bounded
                        return TossSampler(rate, counted, self.add)
                    s = self._samplers[key] = Sampler(rate, counted)
        return s


def sampled_in(bound: int, rate: float, span_ids: tuple[int, int, int] | None) -> bool:
    """Sample by trace id when a span is active (so history agrees with traces
    sampled at the same rate), otherwise at random."""
    if span_ids is not None:
        return (span_ids[0] & _TRACE_ID_MASK) < bound
    return random.random() < rate
