"""The export pipeline: bounded, never blocking the caller, exact accounting, retries, flush, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from _threads import run_in_threads

import historymw as hm
from historymw.pipeline import ExportPipeline
from historymw.record import LMCall, seal

MSGS = [{"role": "user", "content": "What is six times seven?"}]


class Collect:
    """A third-party backend: only the LMCall protocol (export, flush, shutdown)."""

    def __init__(self) -> None:
        self.records: list[LMCall] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_times = 0
        self.calls = 0

    def export(self, records: Sequence[LMCall]) -> None:
        self.calls += 1
        self.gate.wait()
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionError("backend unavailable")
        self.records.extend(records)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self) -> None:
        pass


class CollectDrafts(Collect):
    """A backend with the fast path: receives drafts, seals them, refuses some."""

    def __init__(self, refuse_model: str | None = None) -> None:
        super().__init__()
        self.drafts: list[dict[str, Any]] = []
        self.refuse_model = refuse_model

    def prepare_drafts(self, drafts: Sequence[dict[str, Any]], scan_content: bool,
                       invalid: Callable[[BaseException], None]) -> list[dict[str, Any]]:
        out = []
        for d in drafts:
            try:
                out.append(seal(d, None, scan_content))
            except Exception as exc:  # noqa: BLE001 - as the SQL backend does: the record alone is dropped
                invalid(exc)
        return out

    def export_prepared(self, drafts: Sequence[dict[str, Any]]) -> int:
        keep = [d for d in drafts if d.get("model") != self.refuse_model]
        self.drafts.extend(keep)
        return len(drafts) - len(keep)


@hm.recorded(provider="fake")
def ask(model: str, messages: list[dict[str, str]], **params: Any) -> str:
    return f"answer from {model}"


def _accounted(stats: hm.Stats) -> int:
    return stats.exported + stats.dropped + stats.queued


def test_every_record_from_many_threads_is_exported_once() -> None:
    backend = Collect()
    hm.configure(backends=[backend], batch_size=64, flush_interval=0.05)

    def work(t: int) -> None:
        with hm.history(session=f"thread-{t}"):
            for _ in range(300):
                ask("m", MSGS)

    run_in_threads(work, 6)
    assert hm.flush(timeout=10)
    assert len(backend.records) == 1800
    assert len({r.id for r in backend.records}) == 1800
    assert {r.session for r in backend.records} == {f"thread-{t}" for t in range(6)}
    assert all(isinstance(r, LMCall) and r.output_text == "answer from m" for r in backend.records)
    s = hm.stats()
    assert (s.recorded, s.exported, s.dropped, s.queued) == (1800, 1800, 0, 0)


def test_full_queue_drops_and_counts_without_blocking_the_caller() -> None:
    backend = Collect()
    backend.gate.clear()  # the backend hangs: the worker is stuck inside export()
    hm.configure(backends=[backend], queue_size=50, batch_size=10, flush_interval=0.01)
    for _ in range(500):  # would hang here if a full queue blocked the caller
        ask("m", MSGS)
    s = hm.stats()
    assert s.recorded == 500
    assert s.dropped_by_reason["queue_full"] >= 440
    assert _accounted(s) == 500  # the stuck batch counts as queued
    not_yet = hm.flush(timeout=0.2)
    assert not not_yet and not_yet.pending > 0 and "not delivered" in not_yet.detail
    backend.gate.set()
    assert hm.flush(timeout=10)
    s = hm.stats()
    assert s.queued == 0
    assert s.exported == len(backend.records) == 500 - s.dropped_by_reason["queue_full"]


def test_queue_is_bounded_by_bytes_too() -> None:
    backend = Collect()
    backend.gate.clear()
    hm.configure(backends=[backend], queue_size=100000, queue_bytes="64KiB", batch_size=100000,
                 flush_interval=60)
    for _ in range(200):
        ask("m", [{"role": "user", "content": "x" * 2000}])
    s = hm.stats()
    assert 0 < s.queued < 64 * 1024 // 2000
    assert s.dropped_by_reason["queue_full"] == 200 - s.queued
    backend.gate.set()


def test_failed_exports_are_retried_and_delivered_once() -> None:
    backend = Collect()
    backend.fail_times = 3
    hm.configure(backends=[backend], batch_size=1000, flush_interval=0.01)
    for _ in range(100):
        ask("m", MSGS)
    assert hm.flush(timeout=10)
    assert len(backend.records) == 100 and len({r.id for r in backend.records}) == 100
    assert backend.calls >= 4
    s = hm.stats()
    assert s.exported == 100 and s.dropped == 0
    assert s.errors["export:Collect"] == 3


def test_a_batch_that_keeps_failing_is_dropped_with_its_reason() -> None:
    backend = Collect()
    backend.fail_times = 10**9
    pipe = ExportPipeline(backend, "down", batch_size=10, interval=0.01, retry_timeout=0.3)
    draft = {"started": time.time(), "duration": 0.1, "size_bytes": 100, "model": "m"}
    for _ in range(25):
        pipe.submit(dict(draft))
    result = pipe.flush(timeout=10)
    assert result  # nothing pending: every record was dealt with (here: dropped)
    assert pipe.exported == 0 and pipe.dropped == 25 and pipe.queued() == 0
    pipe.shutdown(timeout=1)


def test_fast_path_gets_sealed_drafts_and_refused_records_are_counted() -> None:
    backend = CollectDrafts(refuse_model="bad")
    hm.configure(backends=[backend], flush_interval=0.01)
    for i in range(30):
        ask("bad" if i % 3 == 0 else "good", [{"role": "user", "content": "key sk-abcdefghijklmnopqrstuvwx"}])
    assert hm.flush(timeout=10)
    assert len(backend.drafts) == 20
    assert all(d["_sealed"] and d["id"] for d in backend.drafts)
    assert all("sk-abc" not in d["messages"][0]["content"] for d in backend.drafts)
    s = hm.stats()
    assert s.exported == 20 and s.dropped_by_reason == {"rejected": 10}


def test_with_a_redactor_the_backend_gets_validated_records() -> None:
    backend = CollectDrafts()

    def redactor(record: dict[str, Any]) -> dict[str, Any]:
        record["output_text"] = "hidden"
        return record

    hm.configure(backends=[backend], redactor=redactor, flush_interval=0.01)
    ask("m", MSGS)
    assert hm.flush(timeout=10)
    assert backend.drafts == [] and [r.output_text for r in backend.records] == ["hidden"]


async def test_records_from_asyncio_tasks() -> None:
    backend = Collect()
    hm.configure(backends=[backend], flush_interval=0.01)

    @hm.recorded(provider="fake")
    async def aask(model: str, messages: list[dict[str, str]]) -> str:
        await asyncio.sleep(0)
        return "async answer"

    async def session(i: int) -> None:
        with hm.history(session=f"task-{i}"):
            for _ in range(20):
                await aask("m", MSGS)

    await asyncio.gather(*(session(i) for i in range(10)))
    assert hm.flush(timeout=10)  # flush from inside a running loop: no loop binding
    assert len(backend.records) == 200
    assert {r.session for r in backend.records} == {f"task-{i}" for i in range(10)}


def test_shutdown_is_bounded_when_the_backend_hangs() -> None:
    backend = Collect()
    backend.gate.clear()
    hm.configure(backends=[backend], batch_size=5, flush_interval=0.01)
    for _ in range(20):
        ask("m", MSGS)
    t0 = time.monotonic()
    result = hm.shutdown(timeout=0.5)
    elapsed = time.monotonic() - t0
    backend.gate.set()
    assert not result and result.pending > 0
    assert elapsed < 5  # bounded: a hung backend must not hang exit
    s = hm.stats()
    assert s.dropped_by_reason.get("shutdown", 0) > 0
    ask("m", MSGS)  # after shutdown a record is dropped and counted, not queued
    assert hm.stats().dropped_by_reason.get("shut_down") == 1
