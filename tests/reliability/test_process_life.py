"""Process life: fork (multiprocessing's fork start method) without reconfiguring, and exit while the
database is down, refusing, hung or locked.

Normal exit without flush() writing everything queued is proven by
tests/test_sql_backend.py::test_exit_flushes_records_without_any_flush_call (and os.fork() with an
explicit flush in the child by ::test_forked_child_records_without_reconfiguring_and_nothing_is_written_twice).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import historymw as hm

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")

MSGS = [{"role": "user", "content": "q"}]
CHILDREN, CHILD_CALLS, PARENT_CALLS = 4, 250, 300


@hm.recorded(provider="life")
def ask(model: str, messages: list[dict[str, str]]) -> str:
    return "ok"


def _child(k: int) -> None:
    # A child as people write them: record and return. No configure(), no flush().
    with hm.history(session=f"child-{k}"):
        for _ in range(CHILD_CALLS):
            ask("m", MSGS)


def _sessions(url: str) -> dict[str | None, int]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        rows = conn.execute("SELECT session, count(*), count(DISTINCT id) FROM historymw_calls GROUP BY session")
        out = {}
        for session, n, distinct in rows:
            assert n == distinct
            out[session] = n
        return out


def test_multiprocessing_fork_children_records_land_and_nothing_is_written_twice(sqlite_url: str,
                                                                                  figures: Any) -> None:
    hm.configure(backends=["sql"], sql_url=sqlite_url, flush_interval=3600, batch_size=100_000)
    with hm.history(session="parent"):
        for _ in range(PARENT_CALLS):
            ask("m", MSGS)
    assert hm.stats().queued == PARENT_CALLS  # still queued in the parent when the children are forked

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_child, args=(k,)) for k in range(CHILDREN)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert hm.flush(timeout=30)
    expected = {"parent": PARENT_CALLS, **{f"child-{k}": CHILD_CALLS for k in range(CHILDREN)}}
    assert _sessions(sqlite_url) == expected
    figures(made=PARENT_CALLS + CHILDREN * CHILD_CALLS, stored=sum(expected.values()), dropped=0,
            faults=f"{CHILDREN} forked children")


def _pool_task(k: int) -> int:
    with hm.history(session=f"task-{k}"):
        for _ in range(10):
            ask("m", MSGS)
    return k


def test_fork_pool_while_the_parent_is_writing(sqlite_url: str, figures: Any) -> None:
    # The parent's worker is busy writing when the pool forks: the children must not inherit a held
    # lock or a connection in use, nor write the parent's queued records.
    hm.configure(backends=["sql"], sql_url=sqlite_url, flush_interval=0.005, batch_size=20)
    stop = threading.Event()
    made = 0

    def parent_load() -> None:
        nonlocal made
        with hm.history(session="parent"):
            while not stop.is_set():
                for _ in range(20):
                    ask("m", MSGS)
                made += 20
                time.sleep(0.001)  # a steady stream the worker keeps writing, not a flood

    loader = threading.Thread(target=parent_load)
    loader.start()
    try:
        ctx = multiprocessing.get_context("fork")
        pool = ctx.Pool(4, maxtasksperchild=5)  # workers exit (and are forked again) every 5 tasks
        try:
            assert sorted(pool.map(_pool_task, range(40), chunksize=1)) == list(range(40))
        finally:
            pool.close()  # let the workers finish and exit normally (terminate() would kill them)
            pool.join()
    finally:
        stop.set()
        loader.join()
    assert hm.flush(timeout=30)
    sessions = _sessions(sqlite_url)
    s = hm.stats()
    assert s.dropped == 0 and s.recorded == made and sessions.pop("parent") == made
    assert sessions == {f"task-{k}": 10 for k in range(40)}
    figures(made=made + 400, stored=made + 400, dropped=0, faults="forks of 4+ pool workers while writing")


def _one_call() -> None:
    ask("m", MSGS)


def test_a_child_forked_while_another_thread_records_is_never_stuck(figures: Any) -> None:
    # The default configuration (ring only): any lock the hot path takes may be held by the recording
    # thread at the moment of fork(); the child must not inherit it held.
    stop = threading.Event()

    def record() -> None:
        while not stop.is_set():
            ask("m", MSGS)

    recorder = threading.Thread(target=record)
    recorder.start()
    ctx = multiprocessing.get_context("fork")
    forks, stuck = 0, 0
    try:
        for _ in range(60):
            p = ctx.Process(target=_one_call)
            p.start()
            forks += 1
            p.join(3)
            if p.exitcode is None:
                p.kill()
                p.join()
                stuck += 1
                break
            assert p.exitcode == 0
    finally:
        stop.set()
        recorder.join()
    figures(faults=f"{forks} forks while another thread records", stuck=stuck)
    assert stuck == 0, f"a child forked while another thread recorded hung on its first call (fork {forks})"


# -- exit while the database is down ------------------------------------------------------------------

EXIT_SCRIPT = textwrap.dedent("""
    import atexit, json, sys, time

    def report():  # registered before historymw's exit hook, so it runs after it
        s = hm.stats()
        print(json.dumps({"hook_done": time.monotonic(), "recorded": s.recorded, "exported": s.exported,
                          "dropped": s.dropped_by_reason, "queued": s.queued}), flush=True)

    atexit.register(report)
    import historymw as hm

    hm.configure(backends=["sql"], sql_url=sys.argv[1], shutdown_timeout=float(sys.argv[2]), flush_interval=0.01)
    ask = hm.recorded(provider="life")(lambda model, messages: "ok")
    for i in range(500):
        ask("m", [{"role": "user", "content": f"q{i}"}])
    time.sleep(0.3)  # the worker is failing and retrying now
    print(json.dumps({"exiting": time.monotonic()}), flush=True)
""")

SHUTDOWN_TIMEOUT = 1.0
# Interpreter start-up is not in the measure; tear-down after the hook is (a few hundred ms).
SLACK = 2.0


@pytest.fixture
def hung_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers: a hung database server."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def refusing_port() -> int:
    s = socket.create_server(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nothing listens there now: connections are refused
    return port


@pytest.fixture
def locked_sqlite(sqlite_url: str) -> Iterator[str]:
    """A history file another process holds the write lock of, for longer than the test runs."""
    from historymw.store import Store

    Store(sqlite_url, create=True).close()  # the schema exists
    path = sqlite_url.removeprefix("sqlite:///")
    locker = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sqlite3, sys, time
        conn = sqlite3.connect(sys.argv[1], isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        print("locked", flush=True)
        time.sleep(60)
    """), path], stdout=subprocess.PIPE, text=True)
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    yield sqlite_url
    locker.kill()
    locker.wait()


@pytest.mark.parametrize("down", ["refused", "hung", "locked"])
def test_exit_while_the_database_is_down_is_bounded_by_shutdown_timeout(
        down: str, request: pytest.FixtureRequest, figures: Any) -> None:
    if down == "refused":
        url = f"postgresql+psycopg://postgres@127.0.0.1:{request.getfixturevalue('refusing_port')}/test"
    elif down == "hung":  # connect_timeout (5 s) is longer than shutdown_timeout: the hook must not wait it out
        url = f"postgresql+psycopg://postgres@127.0.0.1:{request.getfixturevalue('hung_server')}/test"
    else:  # the busy timeout (10 s) is longer than shutdown_timeout too
        url = request.getfixturevalue("locked_sqlite")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTORYMW_")}
    proc = subprocess.Popen([sys.executable, "-c", EXIT_SCRIPT, url, str(SHUTDOWN_TIMEOUT)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = proc.communicate(timeout=60)
    exited = time.monotonic()  # CLOCK_MONOTONIC: the same clock in both processes
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    exiting, report = lines[0]["exiting"], lines[-1]
    assert exited - exiting < SHUTDOWN_TIMEOUT + SLACK, f"exit took {exited - exiting:.2f} s"
    assert report["hook_done"] - exiting < SHUTDOWN_TIMEOUT + 0.5
    # Nothing stored, and every record counted as dropped (given up at exit), none silently lost.
    assert report["recorded"] == 500 and report["exported"] == 0 and report["queued"] == 0
    assert sum(report["dropped"].values()) == 500
    assert set(report["dropped"]) <= {"shutdown", "export_failed"}
    assert "Traceback" not in err
    if down == "locked":
        path = Path(url.removeprefix("sqlite:///"))
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM historymw_calls").fetchone() == (0,)
    figures(made=500, stored=0, dropped=500, dropped_by_reason=report["dropped"],
            faults=f"database {down} at exit", exit_s=f"{exited - exiting:.2f}")
