"""history(...) scopes and recording policies."""

from __future__ import annotations

import asyncio
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _threads import run_in_threads

import historymw as hm

MSGS = [{"role": "user", "content": "hi"}]


@hm.recorded(provider="test")
def ask(model: str, messages: Any, fail: bool = False) -> str:
    if fail:
        raise RuntimeError("boom")
    return "ok"


def call_n(n: int, *, fail_every: int = 0) -> None:
    for i in range(n):
        try:
            ask("m", MSGS, fail=bool(fail_every) and i % fail_every == 0)
        except RuntimeError:
            pass


def test_disable_records_nothing_and_nests() -> None:
    with hm.history(disable=True):
        ask("m", MSGS)
        with hm.history(session="inner"):  # an inner scope without policy stays disabled
            ask("m", MSGS)
        with hm.history(policy="bounded"):  # naming a policy re-enables
            ask("m", MSGS)
    ask("m", MSGS)
    assert len(hm.ring()) == 2


def test_sessions_and_tags_nest_and_merge() -> None:
    with hm.history(session="u-1", tags={"feature": "search", "tier": "free"}):
        ask("m", MSGS)
        with hm.history(tags={"tier": "pro"}):
            ask("m", MSGS)
        with hm.history(session="u-2"):
            ask("m", MSGS)
    ask("m", MSGS)
    a, b, c, d = hm.recent(4)
    assert (a.session, a.tags) == ("u-1", {"feature": "search", "tier": "free"})
    assert (b.session, b.tags) == ("u-1", {"feature": "search", "tier": "pro"})
    assert (c.session, d.session, d.tags) == ("u-2", None, {})


def test_history_as_decorator_sync_and_async() -> None:
    @hm.history(session="decorated")
    def handler() -> None:
        ask("m", MSGS)

    @hm.history(disable=True)
    async def quiet() -> None:
        ask("m", MSGS)

    handler()
    asyncio.run(quiet())
    handler()
    assert [r.session for r in hm.recent(10)] == ["decorated", "decorated"]


def test_scopes_are_isolated_per_asyncio_task() -> None:
    async def worker(name: str, disable: bool) -> None:
        with hm.history(session=name, disable=disable):
            for _ in range(20):
                await asyncio.sleep(0)
                ask("m", MSGS)

    async def main() -> None:
        await asyncio.gather(*(worker(f"t{i}", disable=i % 2 == 1) for i in range(6)))

    asyncio.run(main())
    sessions = [r.session for r in hm.ring()]
    assert len(sessions) == 60
    assert set(sessions) == {"t0", "t2", "t4"}


def test_scopes_are_isolated_per_thread() -> None:
    barrier = threading.Barrier(4)

    def worker(i: int) -> None:
        with hm.history(session=f"th{i}", disable=i == 3):
            barrier.wait()
            for _ in range(50):
                ask("m", MSGS)

    run_in_threads(worker, 4)
    by_session: dict[str | None, int] = {}
    for r in hm.ring():
        by_session[r.session] = by_session.get(r.session, 0) + 1
    assert by_session == {"th0": 50, "th1": 50, "th2": 50}


def test_thread_pools_do_not_inherit_scope_unless_carried() -> None:
    with hm.history(session="req-7"):
        with ThreadPoolExecutor(2) as plain_pool:
            plain_pool.submit(ask, "m", MSGS).result()
        with ThreadPoolExecutor(2) as pool:
            pool.submit(hm.wrap(ask), "m", MSGS).result()
        with hm.ContextExecutor(2) as ctx_pool:
            list(ctx_pool.map(lambda _: ask("m", MSGS), range(3)))
    assert [r.session for r in hm.recent(10)] == [None, "req-7", "req-7", "req-7", "req-7"]


def test_configure_applies_to_scopes_opened_before_it() -> None:
    with hm.history(session="s"):
        ask("m", MSGS)
        hm.configure(policy="off")
        ask("m", MSGS)
        assert len(hm.ring()) == 0 and hm.stats().recorded == 0
        hm.configure(policy="bounded")
        ask("m", MSGS)
    [rec] = hm.recent(5)
    assert rec.session == "s"


def test_configure_in_one_thread_reaches_the_scopes_of_calls_running_in_others() -> None:
    # Threads keep calling in scopes of their own while another thread switches recording off and
    # on: once configure() has returned, every scope's next call follows it, whatever it decided before.
    stop = threading.Event()
    after = threading.Event()
    calls_after = 30

    def worker(i: int) -> None:
        with hm.history(session=f"w{i}"):
            while not stop.is_set():
                ask("before", MSGS)
            after.wait()
            for _ in range(calls_after):
                ask("after", MSGS)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for _ in range(30):
        hm.configure(policy="off")
        hm.configure(policy="bounded", maxlen=100_000)
    stop.set()
    after.set()
    for t in threads:
        t.join()
    by_session: dict[str | None, int] = {}
    for r in hm.ring():
        if r.model == "after":
            by_session[r.session] = by_session.get(r.session, 0) + 1
    assert by_session == {f"w{i}": calls_after for i in range(4)}


def test_policy_off_records_nothing() -> None:
    hm.configure(policy="off")
    call_n(100)
    assert len(hm.ring()) == 0 and hm.stats().recorded == 0


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_sampling_rate_is_respected_within_statistical_bounds(rate: float) -> None:
    n = 20_000
    hm.configure(policy="sample", sample_rate=rate, maxlen=n)
    call_n(n)
    s = hm.stats()
    assert s.recorded + s.sampled_out == n
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(s.recorded - n * rate) < 5 * sigma, (s.recorded, n * rate)


def test_sampling_scope_override_and_zero_rate() -> None:
    with hm.history(policy="sample", sample_rate=0.0):
        call_n(500)
    s = hm.stats()
    assert (s.recorded, s.sampled_out) == (0, 500)


def test_errors_policy_keeps_only_failures_with_their_request() -> None:
    hm.configure(policy="errors")
    call_n(100, fail_every=10)
    s = hm.stats()
    assert s.recorded == 10 and s.filtered_out == 90
    assert all(r.status == "error" and r.messages == MSGS and r.params == {"fail": True} for r in hm.ring())


def test_errors_plus_sample_keeps_every_error_and_a_sample_of_the_rest() -> None:
    hm.configure(policy="errors+sample", sample_rate=0.2, maxlen=10_000)
    call_n(5_000, fail_every=5)  # 1000 failures, 4000 successes
    errors = [r for r in hm.ring() if r.status == "error"]
    oks = [r for r in hm.ring() if r.status == "ok"]
    assert len(errors) == 1000
    assert 4000 * 0.2 - 5 * math.sqrt(4000 * 0.16) < len(oks) < 4000 * 0.2 + 5 * math.sqrt(4000 * 0.16)
    assert hm.settings().policy.name == "sample+errors"


def test_errors_policy_does_not_copy_the_request_of_successful_calls() -> None:
    hm.configure(policy="errors")

    class Exploding:
        """An argument whose copy would be visible: it counts how often it is read."""

        reads = 0

        def model_dump(self) -> dict[str, Any]:
            Exploding.reads += 1
            return {}

    @hm.recorded
    def call(model: str, messages: Any, thing: Any = None) -> str:
        return "ok"

    for _ in range(10):
        call("m", MSGS, thing=Exploding())
    assert Exploding.reads == 0 and len(hm.ring()) == 0


def test_sampling_follows_the_active_opentelemetry_trace_id() -> None:
    """With a span active, history samples by trace id, exactly like OTel's TraceIdRatioBased."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    rate = 0.3
    sampler = TraceIdRatioBased(rate)
    tracer = TracerProvider().get_tracer("t")
    hm.configure(policy="sample", sample_rate=rate, maxlen=5000)
    agree = 0
    for _ in range(2000):
        with tracer.start_as_current_span("request") as span:
            trace_id = span.get_span_context().trace_id
            before = len(hm.ring())
            ask("m", MSGS)
            recorded = len(hm.ring()) > before
            otel_decision = sampler.should_sample(None, trace_id, "x").decision.is_sampled()
            agree += recorded == otel_decision
            if recorded:
                assert hm.ring()[-1].trace_id == f"{trace_id:032x}"
    assert agree == 2000
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_bad_scope_arguments_are_clear_errors() -> None:
    with pytest.raises(hm.ConfigError, match="policy='sometimes'"):
        hm.history(policy="sometimes")
    with pytest.raises(hm.ConfigError, match="sample_rate=2"):
        hm.history(sample_rate=2)
    with pytest.raises(hm.ConfigError, match="disable='yes'"):
        hm.history(disable="yes")  # type: ignore[arg-type]
