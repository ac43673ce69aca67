"""Database faults: PostgreSQL unreachable at start, then cut mid-run and restored (a loopback TCP proxy
the test controls); a SQLite file locked by another process for seconds; a full disk. Calls keep their
speed, the ring keeps recording, stored + dropped = recorded, writing resumes by itself, and the
database is intact afterwards.

Speed is compared within each test (calls while the database is down against calls while it is up, in
the same process), with a generous factor: the claim is "no waiting on the database", not a budget.
"""

from __future__ import annotations

import gc
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

import historymw as hm
from historymw.sql import engine as sql_engine

from ._proxy import Proxy

# Per-call time with the database down may be at most this many times the time with it up. Down, the
# worker mostly sleeps in its backoff, so calls are usually about as fast; a call that waited on I/O even
# once per batch would be hundreds of times slower. The margin absorbs a stall of a few tens of ms from
# other threads of the test process (the worker's first failure, a leftover exporter of another test).
SPEED_FACTOR = 5.0
N = 5000


@hm.recorded(provider="faults")
def ask(model: str, messages: list[dict[str, str]]) -> str:
    return "ok"

def _phases(conn: sa.Connection) -> Counter[str]:
    """Stored calls by the first word of their first message, read through historymw_contents."""
    from historymw.sql.contents import stored_messages

    bodies = {bytes(h): b for h, b in conn.execute(sa.text("SELECT hash, body FROM historymw_contents")).all()}
    refs = conn.execute(sa.text("SELECT message_refs FROM historymw_calls")).scalars()
    return Counter(str(stored_messages(r, bodies)[0]["content"]).split(" ", 1)[0] for r in refs)


def _calls(n: int, tag: str, first: int = 0) -> float:
    """Make n calls; returns seconds per call. The garbage collector is paused while they run: a full
    collection of the test process (tens of ms) landing in one phase would say nothing about the database."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for i in range(first, first + n):
            assert ask("m", [{"role": "user", "content": f"{tag} {i}"}]) == "ok"
        return (time.perf_counter() - t0) / n
    finally:
        gc.enable()


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _settled(count: Callable[[], int]) -> bool:
    """Everything recorded is stored or counted as dropped, with no flush() call (writing resumed by itself)."""
    s = hm.stats()
    return s.queued == 0 and s.exported + s.dropped == s.recorded and count() == s.exported


def _pg_count(engine: sa.Engine) -> int:
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM historymw_calls")).scalar_one())
    except sa.exc.ProgrammingError:
        return 0  # the table is created by the first batch that gets through


def test_postgres_down_at_start_cut_mid_run_and_restored(pg: tuple[str, sa.Engine], figures: Any) -> None:
    url, check = pg
    proxy = Proxy.for_url(url)  # starts cut: the database is unreachable when the application starts
    try:
        hm.configure(backends=["ring", "sql"], sql_url=proxy.url(url), maxlen=100_000, max_bytes="256MiB",
                     queue_size=6000, batch_size=100, flush_interval=0.01)

        down_at_start = _calls(N, "start")
        assert len(hm.ring()) == N  # the ring records while the database is away
        s = hm.stats()
        assert s.exported == 0 and s.queued == N  # waiting, within the queue's bound

        proxy.restore()
        assert _wait(lambda: _settled(lambda: _pg_count(check)), 30), hm.stats()
        up = _calls(N, "up")  # the worker is busy writing these while they are made
        assert _wait(lambda: _settled(lambda: _pg_count(check)), 30), hm.stats()

        # Cut half-way through a run: batches in flight die with their connections, pooled ones go stale.
        _calls(N // 2, "mid")
        proxy.cut()
        cut_mid_run = _calls(N // 2, "mid", first=N // 2)
        still_down = _calls(N, "down")
        assert len(hm.ring()) == 4 * N
        time.sleep(0.3)
        proxy.restore()
        assert _wait(lambda: _settled(lambda: _pg_count(check)), 30), hm.stats()
    finally:
        proxy.close()

    s = hm.stats()
    stored = _pg_count(check)
    assert s.recorded == 4 * N and stored == s.exported and stored + s.dropped == 4 * N
    # The 7,500 calls made after the cut overflowed the queue (6,000): dropped and counted; the rest
    # were retried until the server came back, never given up on.
    assert set(s.dropped_by_reason) == {"queue_full"} and s.dropped > 0
    assert s.errors.get("export:sql", 0) > 0
    with check.connect() as conn:
        ids = conn.execute(sa.text("SELECT count(DISTINCT id) FROM historymw_calls")).scalar_one()
        by_phase = _phases(conn)
    assert ids == stored
    assert by_phase.get("up") == N  # the queue had room while the database was up: nothing dropped
    assert by_phase.get("mid", 0) >= N // 2  # the calls before the cut were all stored
    for name, per_call in (("down at start", down_at_start), ("cut mid-run", cut_mid_run),
                           ("still down", still_down)):
        assert per_call < SPEED_FACTOR * up, f"{name}: {per_call * 1e6:.1f} µs/call vs {up * 1e6:.1f} µs up"
    figures(made=4 * N, stored=stored, dropped=s.dropped, dropped_by_reason=s.dropped_by_reason,
            faults=f"{proxy.cuts} outages, {proxy.refused} connections refused, "
                   f"{s.errors['export:sql']} failed exports retried",
            us_per_call=f"up {up * 1e6:.1f}, down {still_down * 1e6:.1f}, cut mid-run {cut_mid_run * 1e6:.1f}")


LOCKER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")  # holds the write lock: every other writer gets SQLITE_BUSY
    print("locked", flush=True)
    began = time.monotonic()
    sys.stdin.readline()  # the test says when: the lock outlasts the calls however slow the machine is
    time.sleep(max(0.0, float(sys.argv[2]) - (time.monotonic() - began)))  # and is held at least this long
    conn.execute("COMMIT")
""")


def _sqlite_count(url: str) -> int:
    with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM historymw_calls").fetchone()[0])


def _integrity(url: str) -> str:
    with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


@pytest.mark.parametrize("busy_timeout", [sql_engine.SQLITE_BUSY_TIMEOUT_S, 0.2], ids=["waits", "gives-up"])
def test_sqlite_locked_by_another_process(sqlite_url: str, busy_timeout: float, monkeypatch: pytest.MonkeyPatch,
                                          figures: Any) -> None:
    # With the default busy timeout (10 s) the writer waits the lock out; with a short one it fails,
    # counts the failure and retries. Either way the caller never waits and nothing is lost.
    monkeypatch.setattr(sql_engine, "SQLITE_BUSY_TIMEOUT_S", busy_timeout)
    hm.configure(backends=["ring", "sql"], sql_url=sqlite_url, queue_size=100_000, batch_size=100,
                 flush_interval=0.01)
    up = _calls(N, "up")
    assert hm.flush(timeout=30)
    held = 2.0
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, sqlite_url.removeprefix("sqlite:///"), str(held)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        locked = _calls(N, "locked")  # all made while the file is locked: the locker waits for our word
        assert not hm.flush(timeout=0.2)  # and flush says they are not delivered yet
        assert _sqlite_count(sqlite_url) == N
        assert locker.stdin is not None
        locker.stdin.write("release\n")
        locker.stdin.flush()
        assert locker.wait(timeout=30) == 0
    finally:
        locker.kill()
    assert _wait(lambda: _settled(lambda: _sqlite_count(sqlite_url)), 30), hm.stats()
    s = hm.stats()
    assert (s.recorded, s.exported, s.dropped, _sqlite_count(sqlite_url)) == (2 * N, 2 * N, 0, 2 * N)
    assert len(hm.ring()) == 1000 and hm.ring()[-1].messages[0]["content"] == f"locked {N - 1}"
    failures = s.errors.get("export:sql", 0)
    if busy_timeout < held:
        assert failures > 0  # "database is locked", counted and retried
    else:
        assert failures == 0
    assert _integrity(sqlite_url) == "ok"
    assert locked < SPEED_FACTOR * up, f"{locked * 1e6:.1f} µs/call locked vs {up * 1e6:.1f} µs unlocked"
    figures(made=2 * N, stored=2 * N, dropped=0, faults=f"file locked {held:.0f} s, {failures} failed exports retried",
            us_per_call=f"unlocked {up * 1e6:.1f}, locked {locked * 1e6:.1f}")


# A process whose files may not grow past a limit (RLIMIT_FSIZE): what a full disk looks like to SQLite
# (writes fail with EFBIG; the signal that would kill the process is ignored, as servers do).
DISK_FULL = textwrap.dedent("""
    import gc, json, os, resource, signal, sys, time
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    import historymw as hm

    url, mode = sys.argv[1], sys.argv[2]
    path = url.removeprefix("sqlite:///")
    hm.configure(backends=["ring", "sql"], sql_url=url, queue_size=100_000, batch_size=50, flush_interval=0.01)

    @hm.recorded(provider="faults")
    def ask(model, messages):
        return "ok"

    def calls(n, tag):
        gc.collect()
        gc.disable()  # a collection landing in one phase would say nothing about the disk
        t0 = time.perf_counter()
        for i in range(n):
            assert ask("m", [{"role": "user", "content": f"{tag} {i} " + "x" * 1000}]) == "ok"
        elapsed = time.perf_counter() - t0
        gc.enable()
        return elapsed / n

    room = calls(2000, "room")
    assert hm.flush(30)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    biggest = max(os.path.getsize(path + s) for s in ("", "-wal", "-shm") if os.path.exists(path + s))
    resource.setrlimit(resource.RLIMIT_FSIZE, (biggest, hard))  # the disk is full from now on
    full = calls(2000, "full")
    deadline = time.monotonic() + 20
    while hm.stats().errors.get("export:sql", 0) < 3 and time.monotonic() < deadline:  # a few retries fail
        time.sleep(0.02)
    during = hm.stats()
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space is back
    deadline = time.monotonic() + 30
    while hm.stats().queued and time.monotonic() < deadline:  # no flush(): the worker resumes by itself
        time.sleep(0.02)
    s = hm.stats()
    print(json.dumps({"room": room, "full": full, "failures_while_full": during.errors.get("export:sql", 0),
                      "stored_while_full": during.exported, "stats": s.model_dump()}))
""")


def test_sqlite_disk_full_then_space_returns(sqlite_url: str, figures: Any) -> None:
    p = subprocess.run([sys.executable, "-c", DISK_FULL, sqlite_url, "recover"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.splitlines()[-1])  # after the (rate-limited) warning structlog printed
    s = r["stats"]
    assert r["failures_while_full"] >= 3  # "disk I/O error", counted, retried with backoff
    assert r["stored_while_full"] < 4000
    assert s["recorded"] == 4000 and s["queued"] == 0
    stored = _sqlite_count(sqlite_url)
    assert stored == s["exported"] and stored + s["dropped"] == 4000
    assert s["dropped"] == 0  # retried until the space came back
    assert _integrity(sqlite_url) == "ok"
    assert r["full"] < SPEED_FACTOR * r["room"], r
    assert "Traceback" not in p.stderr
    figures(made=4000, stored=stored, dropped=s["dropped"],
            faults=f"disk full (RLIMIT_FSIZE), {s['errors'].get('export:sql', 0)} failed exports retried",
            us_per_call=f"room {r['room'] * 1e6:.1f}, full {r['full'] * 1e6:.1f}")

