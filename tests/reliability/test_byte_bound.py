"""The byte bound holds for every field and for sealed records (issue 15, items 8 and 9).

`max_bytes` bounds what the ring actually holds, as tracemalloc measures it: session, tags,
model and provider are truncated and counted like every other string, and a record counts
what it takes once sealed (read through `hm.recent()`, `hm.ring()`, or an export backend),
not only the lighter draft it starts as.
"""

from __future__ import annotations

import gc
import sqlite3
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import historymw as hm
from historymw.backends.log import LogBackend

# What the ring holds beyond the records it counts: its deque's blocks and the list a
# read returns while it is read (docs/guarantees.md quotes this constant).
SLACK = 64 * 1024


@hm.recorded(provider="openai")
def ask(model: str, messages: Any, **params: Any) -> str:
    return "a short answer"


@hm.recorded(provider="openai")
def ask_openai(model: str, messages: Any, **params: Any) -> dict[str, Any]:
    return {"id": "r-1", "model": model, "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
            "choices": [{"message": {"role": "assistant", "content": "an answer"}, "finish_reason": "stop"}]}


def traced(work: Callable[[], None]) -> int:
    """Bytes still allocated after `work()`, as tracemalloc counts them."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


# -- item 8: session, tags, model, provider ------------------------------------------------------


def test_a_50_mb_session_is_truncated_at_max_field_chars_and_counted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    hm.configure(backends=["ring", "sql"], sql_url=url)
    session = "s" * (50 * 2**20)
    with hm.history(session=session):
        ask("m", [{"role": "user", "content": "hi"}])
    with hm.history(session="short"):
        ask("m", [{"role": "user", "content": "hi"}])
    assert hm.flush(10.0)
    big, small = hm.recent(2)
    max_chars = hm.settings().max_field_chars
    assert big.session is not None and len(big.session) <= max_chars + 100
    assert big.size_bytes - small.size_bytes >= max_chars  # the kept part is counted
    hm.shutdown()
    with sqlite3.connect(tmp_path / "h.db") as db:
        longest = db.execute("SELECT max(length(session)) FROM historymw_calls").fetchone()[0]
    assert longest <= max_chars + 100


def test_200_calls_with_1_mb_sessions_stay_within_a_16_mib_budget() -> None:
    hm.configure(max_bytes="16MiB", maxlen=100_000)
    ask("m", [{"role": "user", "content": "warm"}])

    def work() -> None:
        for i in range(200):
            with hm.history(session=f"{i:04d}" + "x" * 2**20, tags={"user": "y" * 2**20}):
                ask("m", [{"role": "user", "content": f"question {i}"}])

    held = traced(work)
    assert hm.stats().bytes_held <= 16 * 2**20
    assert held <= 16 * 2**20 + SLACK, f"{held / 2**20:.1f} MiB held against a 16 MiB budget"


@pytest.mark.parametrize("field", ["session", "model", "provider", "tags"])
def test_labels_set_on_the_call_are_bounded_and_counted(field: str) -> None:
    huge = "z" * 2**20
    value: Any = {"k": huge} if field == "tags" else huge
    with hm.call(provider="p", model="m", messages=[{"role": "user", "content": "q"}]) as c:
        c.set(**{field: value})
        c.output("a")
    with hm.call(provider="p", model="m", messages=[{"role": "user", "content": "q"}]) as c:
        c.output("a")
    big, plain = hm.recent(2)
    kept = getattr(big, field)
    kept_text = kept["k"] if field == "tags" else kept
    assert len(kept_text) <= hm.settings().max_field_chars + 100
    assert big.size_bytes - plain.size_bytes >= min(len(kept_text), 256)


def test_a_long_provider_given_to_recorded_is_bounded_and_counted() -> None:
    @hm.recorded(provider="p" * 100_000)
    def f(model: str, messages: Any) -> str:
        return "a short answer"

    f("m", [{"role": "user", "content": "q"}])
    ask("m", [{"role": "user", "content": "q"}])
    long, short = hm.recent(2)
    assert long.provider is not None and len(long.provider) <= 256
    assert long.size_bytes - short.size_bytes >= 256 - len("openai")


# -- item 9: sealed records ------------------------------------------------------------------------


def _calls(per_call: int, shape: str, n: int) -> None:
    for i in range(n):
        # A fresh conversation each call, dropped by the caller after it: the ring holds the only copy.
        msgs = [{"role": "user" if j % 2 else "assistant", "content": f"turn {j} of call {i}"}
                for j in range(per_call)]
        if shape == "str":
            ask("gpt-4o-mini", msgs)
        elif shape == "openai":
            with hm.history(session=f"s{i % 7}", tags={"feature": "bound"}):
                ask_openai("gpt-4o-mini", msgs, temperature=0.1)
        else:  # params that take the slow path
            ask("gpt-4o-mini", msgs, tools=[{"name": "t", "args": [1, 2]}])


@pytest.mark.parametrize("per_call", [1, 10, 100])
@pytest.mark.parametrize("shape", ["str", "openai", "slow"])
@pytest.mark.parametrize("sealed_by", ["recent", "ring", "log"])
def test_max_bytes_bounds_what_sealed_records_hold(per_call: int, shape: str, sealed_by: str) -> None:
    max_bytes = 256 * 1024
    backends: list[Any] = ["ring"]
    if sealed_by == "log":
        class Quiet:
            def info(self, *a: Any, **k: Any) -> None: ...
            def warning(self, *a: Any, **k: Any) -> None: ...
        backends.append(LogBackend(Quiet()))
    hm.configure(maxlen=10**7, max_bytes=max_bytes, backends=backends)
    _calls(per_call, shape, 3)  # warm caches outside the measurement
    hm.flush(5.0)
    hm.ring().clear()
    n = 3 * max_bytes // (per_call * 60 + 400)  # well past the budget whatever the shape

    def work() -> None:
        _calls(per_call, shape, n)
        if sealed_by == "recent":
            hm.recent(10**7)
        elif sealed_by == "ring":
            list(hm.ring())
        else:  # shutdown joins the worker: nothing of its last batch is still on its stack
            assert hm.shutdown(30.0)

    held = traced(work)
    s = hm.stats()
    assert s.bytes_held <= max_bytes and s.evicted > 0  # the budget, not maxlen, was the bound
    assert held <= max_bytes + SLACK, f"sealed records hold {held / max_bytes:.2f}x max_bytes"
    assert held >= max_bytes * 0.3  # the measurement saw the records
