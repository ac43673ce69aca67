"""The session and rollup aggregates the writer keeps beside the calls, on SQLite and PostgreSQL:
incremental per batch, idempotent under retries, correct with concurrent writers, backfilled by
the migration from schema 3, consistent after retention."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import sqlalchemy as sa
from _threads import run_in_threads

import historymw as hm
from historymw.backends.sql import SQLBackend
from historymw.record import seal
from historymw.sql.engine import make_engine
from historymw.sql.schema import HIST, SCHEMA_VERSION
from historymw.store import Store

MSGS = [{"role": "user", "content": "hello"}]
SESSION_COLS = "session, first_at, last_at, calls, errors, input_tokens, output_tokens, total_tokens, cost"
# The same aggregates computed from the calls (what the table must always equal).
FROM_CALLS = """
SELECT session, min(started_at), max(started_at), count(*), sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END),
       sum(input_tokens), sum(output_tokens),
       sum(coalesce(total_tokens, coalesce(input_tokens, 0) + coalesce(output_tokens, 0))), sum(cost)
FROM historymw_calls WHERE session IS NOT NULL GROUP BY session ORDER BY session"""
ROLLUP_FROM_CALLS = """
SELECT coalesce(model, ''), status, count(*), sum(cost), sum(duration_s)
FROM historymw_calls GROUP BY coalesce(model, ''), status ORDER BY 1, 2"""
ROLLUP = f"""
SELECT model, status, sum(calls), sum(cost), sum(duration_s), sum({' + '.join(HIST)})
FROM historymw_rollup GROUP BY model, status ORDER BY 1, 2"""


def _export(backend: SQLBackend, drafts: list[dict[str, Any]]) -> int:
    """The export worker's fast path: prepare the drafts, then export them."""
    def fail(exc: BaseException) -> None:
        raise exc

    return backend.export_prepared(backend.prepare_drafts(drafts, True, fail))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("pg")[0])


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = make_engine(url, create=False)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def _norm(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Floats (cost, latency sums) to 9 digits: the table adds them in another order than the query."""
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows]


def _record(n: int, *, base: float, sessions: int = 3, model: str = "m") -> None:
    """n calls: every 4th fails, every 3rd has no usage, every 5th no cost; one in 7 has no session."""
    for i in range(n):
        with hm.history(session=None if i % 7 == 6 else f"s{i % sessions}"):
            with hm.call(provider="p", model=model, messages=MSGS, started_at=base + i) as c:
                if i % 3:
                    c.output(text="ok", usage={"prompt_tokens": 10 + i, "completion_tokens": 5},
                             cost=None if i % 5 == 0 else 0.001 * i)
                else:
                    c.output(text="ok")
                c.end(error=RuntimeError("boom") if i % 4 == 0 else None, ended_at=base + i + 0.05 * (i % 9 + 1))


def _check_consistent(url: str) -> list[tuple[Any, ...]]:
    stored = _rows(url, f"SELECT {SESSION_COLS} FROM historymw_sessions ORDER BY session")
    assert _norm(stored) == _norm(_rows(url, FROM_CALLS))
    assert _norm(_rows(url, ROLLUP)) == [(*r, r[2]) for r in _norm(_rows(url, ROLLUP_FROM_CALLS))]
    return stored


def test_sessions_are_aggregated_incrementally_batch_by_batch(url: str) -> None:
    hm.configure(backends=["sql"], sql_url=url, batch_size=7, flush_interval=0.01)
    base = time.time() - 1000
    _record(40, base=base)
    assert hm.flush(timeout=30)
    first = _check_consistent(url)
    _record(30, base=base + 100, model="other")  # later batches add to the same sessions
    assert hm.flush(timeout=30)
    stored = _check_consistent(url)
    by_id = {r[0]: r for r in stored}
    assert set(by_id) == {"s0", "s1", "s2"}
    # s0 holds calls 0, 3, ... of both runs: first/last activity, counts, errors, tokens and cost add up.
    s0 = [i for i in range(40) if i % 3 == 0 and i % 7 != 6] + [i for i in range(30) if i % 3 == 0 and i % 7 != 6]
    assert by_id["s0"][3] == len(s0) and by_id["s0"][3] > {r[0]: r for r in first}["s0"][3]
    assert by_id["s0"][4] == sum(1 for i in s0 if i % 4 == 0)
    assert by_id["s0"][5] is None and by_id["s0"][8] is None  # no usage, no cost: unknown, not 0
    s1 = [i for i in range(40) if i % 3 == 1 and i % 7 != 6]
    s1b = [i for i in range(30) if i % 3 == 1 and i % 7 != 6]
    assert by_id["s1"][5] == sum(10 + i for i in s1 + s1b) and by_id["s1"][7] == sum(15 + i for i in s1 + s1b)
    assert by_id["s1"][8] == pytest.approx(sum(0.001 * i for i in s1 + s1b if i % 5))


def test_a_retried_batch_is_counted_once(url: str) -> None:
    backend = SQLBackend(url)
    now = time.time()
    drafts = [seal({"started": now + i, "duration": 0.5, "model": "m", "messages": MSGS, "session": f"r{i % 2}",
                    "status": "error" if i == 3 else "ok", "input_tokens": 3, "cost": 0.5}) for i in range(10)]
    _export(backend, drafts)
    _export(backend, drafts)  # the worker retries after a commit it did not see succeed
    late = seal({"started": now + 20, "duration": 1.0, "model": "m", "messages": MSGS, "session": "r0",
                 "input_tokens": 1})
    _export(backend, [*drafts[:4], late])
    backend.shutdown()
    stored = _check_consistent(url)
    assert [(r[0], r[3], r[4], r[5], r[8]) for r in stored] == [("r0", 6, 0, 16, 2.5), ("r1", 5, 1, 15, 2.5)]


def test_concurrent_writers_aggregate_the_same_sessions_exactly(url: str) -> None:
    """Four backends (four engines, as four processes would have) write the same sessions at once."""
    now = time.time()

    def work(t: int) -> None:
        backend = SQLBackend(url)
        for b in range(10):
            _export(backend, [seal({"started": now + b + i / 100, "duration": 0.1 * t, "model": f"m{t}",
                                         "messages": MSGS, "session": f"c{i % 5}", "total_tokens": t,
                                         "cost": 0.25}) for i in range(20)])
        backend.shutdown()

    _export(SQLBackend(url), [])  # the schema, once, before the race
    run_in_threads(work, 4)
    stored = _check_consistent(url)
    assert [(r[0], r[3], r[7], r[8]) for r in stored] == [(f"c{i}", 160, 240, 40.0) for i in range(5)]


def test_the_migration_from_schema_3_backfills_the_aggregates(url: str) -> None:
    hm.configure(backends=["sql"], sql_url=url, batch_size=50)
    _record(120, base=time.time() - 5000, sessions=11)
    assert hm.flush(timeout=30)
    hm.shutdown()
    want = _check_consistent(url)
    engine = make_engine(url, create=False)
    with engine.begin() as conn:  # back to what schema 3 had: the calls and the version
        conn.execute(sa.text("DROP TABLE historymw_sessions"))
        conn.execute(sa.text("DROP TABLE historymw_rollup"))
        conn.execute(sa.text("DROP TABLE historymw_contents"))  # (schema 5: messages in the row again)
        conn.execute(sa.text("ALTER TABLE historymw_calls DROP COLUMN message_refs"))
        conn.execute(sa.text("UPDATE historymw_calls SET messages = :m"), {"m": json.dumps(MSGS)})
        conn.execute(sa.text("UPDATE historymw_schema SET version = 3"))
    engine.dispose()
    hm.configure(backends=["sql"], sql_url=url)
    with hm.history(session="s0"):
        hm.call(provider="p", model="m", messages=MSGS).__enter__().end()
    assert hm.flush(timeout=30)
    assert _rows(url, "SELECT version FROM historymw_schema") == [(SCHEMA_VERSION,)]
    stored = _check_consistent(url)
    assert len(stored) == 11 and stored[0][3] == want[0][3] + 1 and _norm(stored[1:]) == _norm(want[1:])


def test_retention_keeps_the_aggregates_consistent(url: str) -> None:
    hm.configure(backends=["sql"], sql_url=url, batch_size=25)
    now = time.time()
    with hm.history(session="old-only"):
        for i in range(5):
            with hm.call(provider="p", model="m", messages=MSGS, started_at=now - 90_000 - i) as c:
                c.output(text="x", usage={"prompt_tokens": 1, "completion_tokens": 1}, cost=1.0)
    _record(60, base=now - 100_000)  # s0..s2 span old and new calls
    _record(60, base=now - 600)
    assert hm.flush(timeout=30)
    hm.shutdown()
    from historymw.sql import write

    engine = make_engine(url, create=False)
    try:
        assert write.prune(engine, older_than=3600) == 65
        stored = _check_consistent(url)
        assert "old-only" not in {r[0] for r in stored} and {r[0] for r in stored} == {"s0", "s1", "s2"}
        assert write.prune(engine, keep=10) == 50
        _check_consistent(url)
        assert _rows(url, "SELECT count(*) FROM historymw_rollup WHERE calls <= 0") == [(0,)]
        assert write.prune(engine, keep=0) == 10
        assert _rows(url, "SELECT count(*) FROM historymw_sessions") == [(0,)]
        assert _rows(url, "SELECT count(*) FROM historymw_rollup") == [(0,)]
    finally:
        engine.dispose()


# -- reading sessions back -----------------------------------------------------------------------


def _drop_to_schema_3(url: str) -> None:
    engine = make_engine(url, create=False)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE historymw_sessions"))
        conn.execute(sa.text("DROP TABLE historymw_rollup"))
        conn.execute(sa.text("DROP TABLE historymw_contents"))  # (schema 5: messages in the row again)
        conn.execute(sa.text("ALTER TABLE historymw_calls DROP COLUMN message_refs"))
        conn.execute(sa.text("UPDATE historymw_schema SET version = 3"))
    engine.dispose()


@pytest.mark.parametrize("schema", ["current", "3 (read as it is)"])
def test_store_lists_sessions_newest_activity_first_page_by_page(url: str, schema: str) -> None:
    hm.configure(backends=["sql"], sql_url=url, batch_size=50)
    base = time.time() - 10_000
    for i in range(23):  # session k's last call starts at base + 100 * k; k = 5 also fails once
        with hm.history(session=f"k{i:02d}"):
            for j in range(3):
                with hm.call(provider="p", model="m", messages=MSGS, started_at=base + 100 * i - 10 * j) as c:
                    c.output(text="x", usage={"prompt_tokens": 2, "completion_tokens": 1}, cost=0.5)
                    c.end(error=RuntimeError("boom") if (i, j) == (5, 1) else None,
                          ended_at=base + 100 * i - 10 * j + 1)
    assert hm.flush(timeout=30)
    hm.shutdown()
    if schema != "current":
        _drop_to_schema_3(url)
    with Store(url) as store:
        seen: list[Any] = []
        before = None
        while True:
            page = store.sessions(10, before=before)
            seen += page
            if len(page) < 10:
                break
            before = page[-1].cursor
        assert [s.id for s in seen] == [f"k{i:02d}" for i in reversed(range(23))]
        k5 = store.session_summary("k05")
        assert k5 is not None
        assert (k5.calls, k5.errors, k5.input_tokens, k5.total_tokens, k5.cost) == (3, 1, 6, 9, 1.5)
        assert k5.first_at.timestamp() == pytest.approx(base + 480)
        assert k5.last_at.timestamp() == pytest.approx(base + 500)
        assert [s.model_dump(exclude={"cursor"}) for s in seen if s.id == "k05"] == [k5.model_dump(exclude={"cursor"})]
        assert store.session_summary("nobody") is None and store.session("nobody") == []
        assert store.sessions(5, before=seen[-1].cursor) == []
    if schema != "current":  # a reader never migrates
        assert _rows(url, "SELECT version FROM historymw_schema") == [(3,)]


def test_a_session_is_read_whole_across_restarts(url: str) -> None:
    """Memory holds a session's newest calls; with a SQL backend the rest, and whatever an earlier
    process wrote, come from the store, merged in time order."""
    hm.configure(backends=["ring", "sql"], sql_url=url, maxlen=5)
    base = time.time() - 1000
    with hm.history(session="chat-1"):
        for i in range(8):
            with hm.call(provider="p", model="m", messages=[{"role": "user", "content": f"turn {i}"}],
                         started_at=base + i) as c:
                c.output(text=f"reply {i}")
    with hm.history(session="other"):
        hm.call(provider="p", model="m", messages=MSGS).__enter__().end()
    assert hm.flush(timeout=30)
    assert [c.output_text for c in hm.recent(20, session="chat-1")] == [f"reply {i}" for i in range(8)]
    hm.configure(backends=["ring", "sql"], sql_url=url, maxlen=5)  # a restart: memory is empty
    with hm.history(session="chat-1"):
        with hm.call(provider="p", model="m", messages=MSGS, started_at=base + 100) as c:
            c.output(text="after the restart")
    # Not flushed yet: the newest call is only in memory, the others only in the store.
    got = hm.recent(4, session="chat-1")
    assert [c.output_text for c in got] == ["reply 5", "reply 6", "reply 7", "after the restart"]
    assert hm.flush(timeout=30)
    with Store(url) as store:
        whole = store.session("chat-1")
    assert [c.messages[0]["content"] for c in whole[:8]] == [f"turn {i}" for i in range(8)]
    assert whole[-1].output_text == "after the restart" and len(whole) == 9
    hm.configure(backends=["ring"], sql_url=url)  # no SQL backend: memory only
    assert hm.recent(5, session="chat-1") == []
