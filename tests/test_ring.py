"""The ring buffer: bounded by records and by bytes, list-like, thread-safe."""

from __future__ import annotations

import gc
import random
import string
import threading
import tracemalloc
from typing import Any

import pytest

import historymw as hm


@hm.recorded
def ask(model: str, messages: Any, **params: Any) -> str:
    return messages[-1]["content"][::-1][:200]


def prompt(n: int, *, seed: int, alphabet: str = string.ascii_letters + " ") -> list[dict[str, str]]:
    rnd = random.Random(seed)
    return [{"role": "user", "content": "".join(rnd.choice(alphabet) for _ in range(n))}]


def test_maxlen_keeps_the_newest_records() -> None:
    hm.configure(maxlen=5)
    for i in range(12):
        ask(f"m{i}", [{"role": "user", "content": str(i)}])
    assert [r.model for r in hm.ring()] == [f"m{i}" for i in range(7, 12)]
    s = hm.stats()
    assert (s.recorded, s.evicted, s.records_held) == (12, 7, 5)


def test_sequence_semantics_like_a_list() -> None:
    for i in range(10):
        ask(f"m{i}", [{"role": "user", "content": "x"}])
    ring = hm.ring()
    assert len(ring) == 10
    assert ring[0].model == "m0" and ring[-1].model == "m9"
    assert [r.model for r in ring[-3:]] == ["m7", "m8", "m9"]
    assert [r.model for r in ring[::4]] == ["m0", "m4", "m8"]
    assert [r.model for r in ring] == [f"m{i}" for i in range(10)]
    assert ring[-1].id == ring[9].id  # the same record each time it is read
    with pytest.raises(IndexError):
        ring[10]
    ring.clear()
    assert len(ring) == 0 and hm.stats().bytes_held == 0


def test_recent_filters_by_session_and_status() -> None:
    @hm.recorded
    def maybe_fail(model: str, messages: Any, fail: bool) -> str:
        if fail:
            raise ValueError
        return "ok"

    for i in range(6):
        with hm.history(session="a" if i % 2 else "b"):
            try:
                maybe_fail("m", [{"role": "user", "content": str(i)}], fail=i % 3 == 0)
            except ValueError:
                pass
    assert [r.messages[0]["content"] for r in hm.recent(10, session="a")] == ["1", "3", "5"]
    assert [r.messages[0]["content"] for r in hm.recent(10, status="error")] == ["0", "3"]
    assert [r.messages[0]["content"] for r in hm.recent(2)] == ["4", "5"]  # newest last
    assert hm.recent(0) == []


def test_byte_budget_holds_whatever_the_prompt_size() -> None:
    hm.configure(maxlen=100_000, max_bytes="256KiB")
    for i in range(400):
        ask("m", prompt(4000, seed=i))
        assert hm.stats().bytes_held <= 256 * 1024
    s = hm.stats()
    assert s.evicted > 0 and s.records_held < 100


@pytest.mark.parametrize("alphabet", [string.ascii_letters + " ", "日本語のテキスト", "😀🎉🚀✨"])
def test_size_bytes_tracks_real_memory_within_a_factor_of_two(alphabet: str) -> None:
    """size_bytes (what the budget counts) vs what tracemalloc sees the ring keep."""
    n = 300
    hm.configure(maxlen=n)
    ask("gpt-4o-mini", prompt(10, seed=0), temperature=0.1)  # warm caches outside the measurement
    hm.ring().clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            # the caller's prompt dies after the call: the ring keeps the only reference
            ask("gpt-4o-mini", prompt(2000, seed=i, alphabet=alphabet), temperature=0.1)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    accounted = hm.stats().bytes_held
    assert accounted / 2 <= held <= accounted * 2, (held, accounted)


def test_a_record_larger_than_the_budget_is_dropped_and_counted() -> None:
    hm.configure(max_bytes=4096, max_field_chars=100_000)
    ask("m", prompt(10_000, seed=1))
    s = hm.stats()
    assert s.records_held == 0 and s.dropped_by_reason == {"larger_than_ring": 1}


def test_concurrent_appends_are_exact() -> None:
    hm.configure(maxlen=500)
    per_thread, threads = 2000, 8

    def work() -> None:
        for _ in range(per_thread):
            ask("m", [{"role": "user", "content": "x"}])

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    s = hm.stats()
    assert s.recorded == per_thread * threads
    assert s.records_held == 500 and s.evicted == per_thread * threads - 500
    assert s.bytes_held == sum(r.size_bytes for r in hm.ring())
