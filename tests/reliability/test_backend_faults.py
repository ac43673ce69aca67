"""Backends that fail, hang or crawl: the caller never sees it, flush() keeps its timeout
and says what it did not deliver, and the other backends keep working."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import historymw as hm


class Collecting:
    def __init__(self) -> None:
        self.records: list[hm.LMCall] = []
        self.lock = threading.Lock()

    def export(self, records: Sequence[hm.LMCall]) -> None:
        with self.lock:
            self.records.extend(records)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self) -> None:
        pass


class Raising(Collecting):
    def export(self, records: Sequence[hm.LMCall]) -> None:
        raise ConnectionError("the collector is down")


class Hanging(Collecting):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def export(self, records: Sequence[hm.LMCall]) -> None:
        self.entered.set()
        self.release.wait(60)

    def shutdown(self) -> None:
        self.release.wait(60)  # even its shutdown hangs


class Slow(Collecting):
    def export(self, records: Sequence[hm.LMCall]) -> None:
        time.sleep(0.05)
        super().export(records)


@hm.recorded(provider="p")
def ask(model: str, messages: Any) -> str:
    return "ok"


MSGS = [{"role": "user", "content": "q"}]


def wait_for(check: Callable[[], bool], limit_s: float = 60.0) -> bool:
    """Poll until `check()` holds: a bound generous for a loaded machine, never a speed claim."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_faulty_backends_never_reach_the_caller_and_do_not_stop_the_others() -> None:
    good, raising, hanging, slow = Collecting(), Raising(), Hanging(), Slow()
    hm.configure(backends=["ring", good, raising, hanging, slow], batch_size=50, flush_interval=0.05,
                 queue_size=10_000)
    try:
        assert ask("m", MSGS) == "ok"
        # The hanging backend's worker is now stuck inside export() for as long as the test runs:
        # every later call returning at all proves that no caller waits on a backend.
        assert wait_for(lambda: hanging.entered.is_set())
        for _ in range(2999):
            assert ask("m", MSGS) == "ok"
        start = time.monotonic()
        result = hm.flush(timeout=1.0)
        assert time.monotonic() - start < 30  # flush kept its own timeout: the hung export lasts 60 s
        assert not result and result.pending > 0
        assert "Hanging" in result.detail or "Raising" in result.detail
        # The healthy backend gets everything; under load its worker may need longer than flush's 1 s.
        assert wait_for(lambda: len(good.records) == 3000), len(good.records)
        s = hm.stats()
        assert s.errors.get("export:Raising", 0) >= 1
        assert len(hm.ring()) == 1000
    finally:
        hanging.release.set()


def test_shutdown_gives_up_on_a_hung_backend_within_its_timeout_and_counts_the_rest() -> None:
    hanging = Hanging()
    hm.configure(backends=[hanging], batch_size=10, flush_interval=0.01, queue_size=100)
    try:
        for _ in range(250):
            ask("m", MSGS)
        start = time.monotonic()
        result = hm.shutdown(timeout=1.0)
        assert time.monotonic() - start < 30  # its own timeout (1 s), not the 60 s the backend hangs
        assert not result
        s = hm.stats()
        # every call is accounted for: queued, in flight or dropped with a reason
        assert s.recorded == 250
        assert s.dropped_by_reason.get("queue_full", 0) + s.dropped_by_reason.get("shutdown", 0) > 0
    finally:
        hanging.release.set()


def test_a_full_queue_drops_and_counts_exactly() -> None:
    hanging = Hanging()
    hm.configure(backends=[hanging], queue_size=100, batch_size=10_000, flush_interval=60)
    try:
        for _ in range(1000):
            ask("m", MSGS)
        s = hm.stats()
        assert s.recorded == 1000
        assert s.dropped_by_reason == {"queue_full": 1000 - s.queued}
        assert s.queued == 100
    finally:
        hanging.release.set()


def test_a_failing_backend_is_retried_with_backoff_then_dropped_and_counted() -> None:
    class FlakyThenOk(Collecting):
        def __init__(self) -> None:
            super().__init__()
            self.failures = 3

        def export(self, records: Sequence[hm.LMCall]) -> None:
            if self.failures:
                self.failures -= 1
                raise TimeoutError("try again")
            super().export(records)

    flaky = FlakyThenOk()
    hm.configure(backends=[flaky], batch_size=100, flush_interval=0.01)
    for _ in range(20):
        ask("m", MSGS)
    assert hm.flush(10)
    assert len(flaky.records) == 20  # delivered once, after three failed attempts
    assert len({r.id for r in flaky.records}) == 20
    assert hm.stats().errors == {"export:FlakyThenOk": 3}
