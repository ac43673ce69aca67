"""A child forked while the parent writes to SQLite keeps every record it makes.

Eight threads record into a SQLite store while the main thread forks every 0.3 s (and, in the second
test, another thread calls configure() in a loop, so that pipelines, engines and export workers come
and go around the forks). Each child records its own calls, flushes, and exits; the parent then
checks that every child's calls are in the file, exactly once, and that the file is intact.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from typing import Any

import pytest

import historymw as hm

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")

THREADS = 8
FORK_EVERY_S = 0.3
DURATION_S = float(os.environ.get("HISTORYMW_FORK_STRESS_S", "10"))
MIN_FORKS = 20
CHILD_CALLS = 20
CHILD_DEADLINE_S = 40.0  # a child still running after this is stuck
MSGS = [{"role": "user", "content": "q"}]


@hm.recorded(provider="fork")
def ask(model: str, messages: list[dict[str, str]]) -> str:
    return "ok"


def _child_main(k: int) -> int:
    """The child's whole life; its exit status says what went wrong (0: nothing)."""
    before = hm.stats()  # the parent's counts, inherited: the child answers for its own only
    with hm.history(session=f"child-{k}"):
        for _ in range(CHILD_CALLS):
            ask("m", MSGS)
    flushed = hm.flush(timeout=CHILD_DEADLINE_S - 10)
    s = hm.stats()
    if not flushed:
        return 2
    if s.dropped > before.dropped or sum(s.errors.values()) > sum(before.errors.values()):
        return 3
    return 0


def _fork_child(k: int) -> int:
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            code = _child_main(k)
        finally:
            os._exit(code)
    return pid


def _stress(url: str, configure_loop: bool) -> dict[str, Any]:
    settings: dict[str, Any] = {"backends": ["sql"], "sql_url": url, "flush_interval": 0.01}
    hm.configure(**settings)
    stop = threading.Event()

    def record(i: int) -> None:
        with hm.history(session=f"parent-{i}"):
            while not stop.is_set():
                ask("m", MSGS)
                time.sleep(0.0005)

    def reconfigure() -> None:
        while not stop.is_set():
            hm.configure(**settings)
            time.sleep(0.05)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(THREADS)]
    if configure_loop:
        threads.append(threading.Thread(target=reconfigure))
    for t in threads:
        t.start()
    children: dict[int, tuple[int, float]] = {}  # pid -> (k, forked at)
    status: dict[int, int | None] = {}  # k -> exit status (None: stuck, killed)
    k = 0
    end = time.monotonic() + DURATION_S
    try:
        while time.monotonic() < end or k < MIN_FORKS:  # a slow machine forks less often, not fewer times
            children[_fork_child(k)] = (k, time.monotonic())
            k += 1
            time.sleep(FORK_EVERY_S)
            _reap(children, status, block=False)
    finally:
        stop.set()
        for t in threads:
            t.join()
        _reap(children, status, block=True)
    hm.flush(timeout=30)
    errors = hm.stats().errors
    hm.shutdown(timeout=10)
    return {"forks": k, "status": status, "parent_errors": errors}


def _reap(children: dict[int, tuple[int, float]], status: dict[int, int | None], block: bool) -> None:
    while children:
        for pid, (k, forked) in list(children.items()):
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status[k] = os.waitstatus_to_exitcode(code)
                del children[pid]
            elif time.monotonic() - forked > CHILD_DEADLINE_S:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status[k] = None
                del children[pid]
        if not block:
            return
        time.sleep(0.05)


def _check(url: str, result: dict[str, Any], figures: Any) -> None:
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        stored = dict(conn.execute("SELECT session, count(*) FROM historymw_calls "
                                   "WHERE session LIKE 'child-%' GROUP BY session").fetchall())
        dupes = conn.execute("SELECT count(*) - count(DISTINCT id) FROM historymw_calls").fetchone()[0]
    status: dict[int, int | None] = result["status"]
    failed = {k: code for k, code in status.items() if code != 0}
    lost = {k: stored.get(f"child-{k}", 0) for k in status if stored.get(f"child-{k}", 0) != CHILD_CALLS}
    figures(faults=f"{result['forks']} forks while {THREADS} threads record", failed_children=len(failed),
            children_missing_records=len(lost), parent_errors=result["parent_errors"])
    assert integrity == "ok"
    assert dupes == 0
    assert not failed, f"children that failed (k: exit status, None = stuck and killed): {failed}"
    assert not lost, f"children whose calls are not all stored (k: rows): {lost}"
    assert result["forks"] >= MIN_FORKS


def test_children_forked_while_eight_threads_write_keep_every_record(sqlite_url: str, figures: Any) -> None:
    _check(sqlite_url, _stress(sqlite_url, configure_loop=False), figures)


def test_children_forked_while_configure_runs_in_a_loop_keep_every_record(sqlite_url: str, figures: Any) -> None:
    _check(sqlite_url, _stress(sqlite_url, configure_loop=True), figures)
