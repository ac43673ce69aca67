"""Head sampling (policy="sample"): Bernoulli(sample_rate) per call, counted exactly.

The sampler draws how many calls to skip (a geometric draw) instead of a random
number per call; these tests check that what users see is still a coin toss
per call at the configured rate, and that `stats().sampled_out` is exact.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from _threads import run_in_threads

import historymw as hm
from historymw import counters
from historymw.policy import MAX_SAMPLERS, MAX_SKIP, Sampler

MSGS = [{"role": "user", "content": "hi"}]


@hm.recorded(provider="test")
def ask(model: str, messages: Any, **params: Any) -> str:
    return "ok"


def sampled_seeds(n: int) -> list[int]:
    """Make n calls numbered by their `seed` param; the numbers of those recorded."""
    for i in range(n):
        ask("m", MSGS, seed=i)
    return [r.params["seed"] for r in hm.ring()]


@pytest.fixture
def seeded() -> Iterator[None]:
    state = random.getstate()
    random.seed(20261129)
    yield
    random.setstate(state)


@pytest.mark.parametrize(("rate", "n"), [(0.002, 400_000), (0.05, 100_000), (0.3, 100_000), (0.9, 100_000)])
def test_sampler_decisions_are_independent_trials_at_the_rate(seeded: None, rate: float, n: int) -> None:
    s = Sampler(rate)
    decisions = [s.take() for _ in range(n)]
    kept = sum(decisions)
    assert abs(kept - n * rate) < 5 * math.sqrt(n * rate * (1 - rate)), (kept, n * rate)
    # Independent of the call before: after a sampled-in call, the next is sampled in at the same rate.
    after_kept = [b for a, b in itertools.pairwise(decisions) if a]
    m = len(after_kept)
    assert abs(sum(after_kept) - m * rate) < 5 * math.sqrt(m * rate * (1 - rate)) + 1, (sum(after_kept), m * rate)
    assert s.sampled_out == n - kept  # counted exactly, without a per-call counter


def test_long_skips_are_taken_in_runs_and_a_zero_rate_never_samples_in(seeded: None) -> None:
    never = Sampler(0.0)
    assert not any(never.take() for _ in range(10 * MAX_SKIP + 3))
    assert never.sampled_out == 10 * MAX_SKIP + 3
    always = Sampler(1.0)
    assert all(always.take() for _ in range(1000)) and always.sampled_out == 0


def test_sampling_repeats_under_the_same_seed() -> None:
    state = random.getstate()
    try:
        runs = []
        for _ in range(2):
            random.seed(5)
            hm.configure(policy="sample", sample_rate=0.3, maxlen=10_000)
            runs.append(sampled_seeds(2000))
        assert runs[0] == runs[1] and 450 < len(runs[0]) < 750
    finally:
        random.setstate(state)


def test_sampled_out_is_exact_across_threads_and_scopes(seeded: None) -> None:
    hm.configure(policy="sample", sample_rate=0.25, maxlen=100_000)
    per_thread = 5_000
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter lets them

    def work(i: int) -> None:
        if i % 2:  # a scope of its own, at the same rate: the same sampler
            with hm.history(session=f"s{i}", sample_rate=0.25):
                for _ in range(per_thread):
                    ask("m", MSGS)
        else:
            for _ in range(per_thread):
                ask("m", MSGS)
    try:
        run_in_threads(work, 8)
    finally:
        sys.setswitchinterval(interval)
    n = 8 * per_thread
    s = hm.stats()
    assert s.recorded == len(hm.ring())
    assert s.sampled_out == n - s.recorded
    assert abs(s.recorded - n / 4) < 5 * math.sqrt(n * 0.25 * 0.75)
    # What an OpenTelemetry metric reads (the counters themselves) agrees with stats().
    assert counters.COUNTERS.sampled_out.value == s.sampled_out


def test_errors_plus_sample_counts_the_calls_it_skips_as_filtered_not_sampled_out() -> None:
    hm.configure(policy="errors+sample", sample_rate=0.0)
    for _ in range(300):
        ask("m", MSGS)
    s = hm.stats()
    assert (s.recorded, s.sampled_out, s.filtered_out) == (0, 0, 300)


def test_configure_replaces_the_sampling_of_scopes_already_deciding(seeded: None) -> None:
    hm.configure(policy="sample", sample_rate=0.0)
    with hm.history(tags={"t": 1}):
        for _ in range(MAX_SKIP + 10):  # past the first run of skips
            ask("m", MSGS)
        hm.configure(policy="sample", sample_rate=0.999999)
        assert len(sampled_seeds(20)) == 20
    assert hm.stats().sampled_out == 0
    previous = hm.stats(previous=True)
    assert previous is not None and previous.sampled_out == MAX_SKIP + 10


def test_scopes_at_other_rates_sample_at_their_own(seeded: None) -> None:
    hm.configure(policy="sample", sample_rate=0.0, maxlen=100_000)
    with hm.history(sample_rate=0.5):
        half = len(sampled_seeds(4000))
    for _ in range(1000):
        ask("m", MSGS)
    assert abs(half - 2000) < 5 * math.sqrt(1000) and len(hm.ring()) == half
    assert hm.stats().sampled_out == 5000 - half


def test_a_draw_of_exactly_max_skip_is_a_whole_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    """A geometric draw g with MAX_SKIP <= g < MAX_SKIP + 1 is MAX_SKIP skips then a sampled-in call:
    were it taken as a longer draw, no run of MAX_SKIP skips would ever happen (the rate would be low
    by up to 1/257 for small rates)."""
    rate = 0.001
    for g, expected in ((MAX_SKIP - 0.5, (MAX_SKIP - 1, False)), (MAX_SKIP + 0.5, (MAX_SKIP, False)),
                        (MAX_SKIP + 1.5, (MAX_SKIP, True))):
        u = 1.0 - math.exp(g * math.log1p(-rate))  # the uniform draw that gives g
        monkeypatch.setattr("historymw.policy._random", lambda u=u: u)
        assert Sampler(rate).gap() == expected, g


def test_counts_stay_exact_and_sampling_goes_on_under_a_tracer_with_threads() -> None:
    """A Python-level trace function (a debugger, coverage's PyTracer) lets threads switch between
    any two lines of the wrapper: sampled-out calls must still be counted exactly, and the sampler
    must not get stuck (a countdown past zero once stopped all sampling until configure())."""
    hm.configure(policy="sample", sample_rate=0.05, maxlen=100_000)
    n, threads = 4_000, 8

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        return tracer

    def work(_: int) -> None:
        sys.settrace(tracer)
        try:
            for _ in range(n):
                ask("m", MSGS)
        finally:
            sys.settrace(None)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        run_in_threads(work, threads)
    finally:
        sys.setswitchinterval(interval)
    s = hm.stats()
    total = n * threads
    assert s.recorded + s.sampled_out == total
    assert abs(s.recorded - total * 0.05) < 6 * math.sqrt(total * 0.05 * 0.95), s.recorded


def test_scopes_at_many_rates_keep_a_bounded_number_of_samplers(seeded: None) -> None:
    hm.configure(policy="sample", sample_rate=0.0, maxlen=100_000)
    rates = [0.2 + i / 10_000 for i in range(MAX_SAMPLERS + 20)]  # each scope a rate of its own
    for rate in rates:
        with hm.history(sample_rate=rate):
            for _ in range(100):
                ask("m", MSGS)
    n = 100 * len(rates)
    s = hm.stats()
    assert s.sampled_out == n - s.recorded and s.recorded == len(hm.ring())
    assert abs(s.recorded - sum(rates) * 100) < 5 * math.sqrt(n * 0.25)
    assert len(counters.COUNTERS.sampled_out._samplers) == MAX_SAMPLERS  # type: ignore[attr-defined]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_workers_draw_their_own_samples() -> None:
    """Workers forked from one parent (gunicorn, multiprocessing) must not sample the same calls:
    each child draws its sampler's countdown afresh, as its random generator is reseeded."""
    hm.configure(policy="sample", sample_rate=0.01, maxlen=10_000)
    ask("m", MSGS)  # the parent's sampler exists and holds a countdown
    firsts = []
    for _ in range(4):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: the number of its first sampled-in call
            try:
                seeds = sampled_seeds(2_000)
                os.write(write, str(seeds[0] if seeds else -1).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            firsts.append(int(f.read() or -2))
        os.waitpid(pid, 0)
    assert -2 not in firsts
    assert len(set(firsts)) > 1, firsts  # the same first call in 4 children: the parent's draw, repeated
