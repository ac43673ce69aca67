"""Many processes, one store: 8 processes write one PostgreSQL database (and one SQLite file) at
the same moment, sharing a system prompt, demos and a set of questions they all ask: every call
is stored once, every distinct message is one content row, and every call reads back whole."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from historymw.store import Store

PROCESSES = 8
CALLS = 300
SHARED_QUESTIONS = 40  # asked by every process: new contents that several transactions insert at once

WRITER = textwrap.dedent("""
    import sys, time, historymw as hm
    url, name, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    hm.configure(backends=["sql"], sql_url=url, batch_size=16, flush_interval=0.005)
    ask = hm.recorded(provider="fake")(lambda model, messages: "ok")
    system = {"role": "system", "content": "You answer in one line. " * 150}
    demos = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    ask("warm-up", [system])  # connected and the schema in place before the race starts
    assert hm.flush(timeout=60), hm.stats()
    time.sleep(max(0.0, start - time.time()))
    for i in range(%(calls)d):
        if i %% 2:  # a follow-up to a shared question: a prefix (a list and its new messages) all write
            shared = {"role": "user", "content": f"shared question {i // 2 %% %(shared)d}"}
            follow_up = [shared, {"role": "assistant", "content": "ok"},
                         {"role": "user", "content": f"{name} follows up {i}"}]
        else:
            follow_up = [{"role": "user", "content": f"{name} asks question {i}"}]
        with hm.history(session=f"s{i %% 5}"):
            ask("m", [system, *demos, *follow_up])
    assert hm.flush(timeout=120), hm.stats()
    s = hm.stats()
    assert s.exported == %(calls)d + 1 and s.dropped == 0 and not s.errors, s
""") % {"calls": CALLS, "shared": SHARED_QUESTIONS}


def _run_writers(url: str, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    start = time.time() + 8  # every process imported, configured and connected by then
    procs = [subprocess.Popen([sys.executable, str(script), url, f"p{i}", str(start)], stderr=subprocess.PIPE,
                              text=True) for i in range(PROCESSES)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err


def _check(url: str, engine: sa.Engine) -> None:
    with engine.connect() as conn:
        n_calls, n_ids = conn.execute(sa.text("SELECT count(*), count(DISTINCT id) FROM historymw_calls")).one()
        n_contents, n_hashes = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT hash) FROM historymw_contents")).one()
    assert n_calls == n_ids == PROCESSES * (CALLS + 1)
    # Once each, however many processes wrote them at the same moment: the system prompt, 2 demos and
    # the list of the three; the shared questions, the answer "ok" and a list per shared question (each
    # process's own questions are inline in its rows).
    assert n_contents == n_hashes == 1 + 2 + 1 + SHARED_QUESTIONS + 1 + SHARED_QUESTIONS
    with Store(url) as store:
        calls = [c for c in store.calls() if c.model == "m"]
    assert len(calls) == PROCESSES * CALLS
    assert all(c.messages[0]["content"] == "You answer in one line. " * 150 for c in calls)
    assert sorted(len(c.messages) for c in calls) == [4] * (PROCESSES * CALLS // 2) + [6] * (PROCESSES * CALLS // 2)
    per_question = collections.Counter(c.messages[3]["content"] for c in calls)
    asked = collections.Counter(j % SHARED_QUESTIONS for j in range(CALLS // 2))  # by one process
    assert all(per_question[f"shared question {k}"] == PROCESSES * asked[k] for k in range(SHARED_QUESTIONS))
    assert per_question["p3 asks question 0"] == 1
    assert collections.Counter(c.messages[-1]["content"] for c in calls)["p5 follows up 7"] == 1
    sessions = collections.Counter(c.session for c in calls)
    assert sessions == {f"s{k}": PROCESSES * CALLS // 5 for k in range(5)}
    with engine.connect() as conn:  # the writers' session aggregates, summed under the same race
        aggregated = dict(conn.execute(sa.text("SELECT session, calls FROM historymw_sessions")).all())
    assert aggregated == sessions


def test_eight_processes_write_one_postgresql_store(pg: tuple[str, Any], tmp_path: Path) -> None:
    url, check = pg
    _run_writers(url, tmp_path)
    _check(url, check)


def test_eight_processes_write_one_sqlite_file(sqlite_url: str, tmp_path: Path) -> None:
    _run_writers(sqlite_url, tmp_path)
    engine = sa.create_engine(sqlite_url)
    _check(sqlite_url, engine)
    engine.dispose()
