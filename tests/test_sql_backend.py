"""The SQL backend on a real SQLite file: persistence, idempotence, exit and fork, retention,
migrations, and the read API."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from _threads import run_in_threads

import historymw as hm
from historymw.backends.sql import SQLBackend
from historymw.record import seal
from historymw.sql import StoreError
from historymw.sql.schema import SCHEMA_VERSION
from historymw.store import Store

MSGS = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is six times seven?"}]


def _export(backend: SQLBackend, drafts: list[dict[str, Any]]) -> int:
    """The export worker's fast path: prepare the drafts, then export them."""
    def fail(exc: BaseException) -> None:
        raise exc

    return backend.export_prepared(backend.prepare_drafts(drafts, True, fail))


@hm.recorded(provider="fake")
def ask(model: str, messages: list[dict[str, str]], **params: Any) -> str:
    return f"42 says {model}"


def _path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def _rows(url: str, sql: str = "SELECT count(*) FROM historymw_calls") -> Any:
    with sqlite3.connect(_path(url)) as conn:
        return conn.execute(sql).fetchall()


def test_records_from_many_threads_are_all_persisted(sqlite_url: str) -> None:
    hm.configure(backends=["sql"], sql_url=sqlite_url, batch_size=100, flush_interval=0.05)

    def work(t: int) -> None:
        with hm.history(session=f"s{t}", tags={"thread": t}):
            for i in range(250):
                ask(f"model-{i % 3}", MSGS, temperature=0.5)

    run_in_threads(work, 4)
    assert hm.flush(timeout=30)
    s = hm.stats()
    assert (s.recorded, s.exported, s.dropped) == (1000, 1000, 0)
    with Store(sqlite_url) as store:
        assert store.count() == 1000
        assert store.count(session="s2") == 250
        call = store.recent(1, session="s3")[0]
    assert call.messages == MSGS and call.params == {"temperature": 0.5}
    assert call.tags == {"thread": 3} and call.output_text.startswith("42 says model-")
    assert call.started_at.tzinfo is not None and call.ended_at >= call.started_at


def test_database_file_is_private_and_in_wal_mode(sqlite_url: str) -> None:
    hm.configure(backends=["sql"], sql_url=sqlite_url)
    ask("m", MSGS)
    assert hm.flush(timeout=10)
    path = _path(sqlite_url)
    assert path.stat().st_mode & 0o777 == 0o600
    for side in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        if side.exists():
            assert side.stat().st_mode & 0o077 == 0, side
    assert _rows(sqlite_url, "PRAGMA journal_mode") == [("wal",)]


def test_secrets_in_prompts_never_reach_the_database(sqlite_url: str) -> None:
    hm.configure(backends=["sql"], sql_url=sqlite_url)
    ask("m", [{"role": "user", "content": "my key is sk-abcdefghijklmnopqrstuvwx"}], api_key="sk-live-123")
    assert hm.flush(timeout=10)
    raw = _path(sqlite_url).read_bytes() + Path(f"{_path(sqlite_url)}-wal").read_bytes()
    assert b"sk-abcdefghijklmnop" not in raw and b"sk-live-123" not in raw
    assert b"[REDACTED]" in raw


def _sealed_drafts(n: int) -> list[dict[str, Any]]:
    now = time.time()
    return [seal({"started": now + i, "duration": 0.5, "model": "m", "messages": MSGS, "size_bytes": 100,
                  "output_text": f"out {i}"}) for i in range(n)]


def test_a_retried_batch_never_duplicates_rows(sqlite_url: str) -> None:
    backend = SQLBackend(sqlite_url)
    drafts = _sealed_drafts(50)
    _export(backend, drafts)
    _export(backend, drafts)  # the worker retries after a commit it did not see succeed
    _export(backend, drafts[:10] + _sealed_drafts(5))
    with Store(sqlite_url) as store:
        records = [store.get(d["id"]) for d in drafts]
    backend.export([r for r in records if r is not None])  # the LMCall path is idempotent too
    backend.shutdown()
    assert _rows(sqlite_url) == [(55,)]


def test_exit_flushes_records_without_any_flush_call(sqlite_url: str, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(f"""
        import historymw as hm
        hm.configure(backends=["sql"], sql_url={sqlite_url!r}, flush_interval=3600, batch_size=100000)

        @hm.recorded(provider="fake")
        def ask(model, messages):
            return "ok"

        for i in range(700):
            ask("m", [{{"role": "user", "content": f"question {{i}}"}}])
        # no flush(), no shutdown(): the exit hook must write what is queued
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert _rows(sqlite_url) == [(700,)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_records_without_reconfiguring_and_nothing_is_written_twice(sqlite_url: str) -> None:
    hm.configure(backends=["sql"], sql_url=sqlite_url, flush_interval=3600, batch_size=100000)
    with hm.history(session="parent"):
        for _ in range(100):
            ask("m", MSGS)
    assert hm.stats().queued == 100  # still queued in the parent at the moment of the fork
    pid = os.fork()
    if pid == 0:  # the child: record, flush, and leave without running the parent's test machinery
        code = 1
        try:
            with hm.history(session="child"):
                for _ in range(40):
                    ask("m", MSGS)
            code = 0 if hm.flush(timeout=20) and hm.stats().exported == 40 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert hm.flush(timeout=20)
    assert sorted(_rows(sqlite_url, "SELECT session, count(*) FROM historymw_calls GROUP BY session")) == [
        ("child", 40), ("parent", 100)]


def test_several_processes_share_one_file(sqlite_url: str, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(f"""
        import sys, historymw as hm
        hm.configure(backends=["sql"], sql_url={sqlite_url!r}, batch_size=50, flush_interval=0.01)
        ask = hm.recorded(provider="fake")(lambda model, messages: "ok")
        with hm.history(session=sys.argv[1]):
            for i in range(1500):
                ask("m", [{{"role": "user", "content": "q"}}])
        assert hm.flush(timeout=60), hm.stats()
        s = hm.stats()
        assert s.exported == 1500 and s.dropped == 0, s
    """))
    procs = [subprocess.Popen([sys.executable, str(script), f"p{i}"], stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert _rows(sqlite_url) == [(4500,)]


def test_retention_from_the_environment(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = SQLBackend(sqlite_url)  # an old history: 30 calls from two days ago
    old = _sealed_drafts(30)
    for d in old:
        d["started"] -= 2 * 86400
    _export(backend, old)
    backend.shutdown()
    monkeypatch.setenv("HISTORYMW_SQL_MAX_AGE", "1d")
    monkeypatch.setenv("HISTORYMW_SQL_MAX_ROWS", "25")
    hm.configure(backends=["sql"], sql_url=sqlite_url, batch_size=10, flush_interval=0.01)
    for i in range(40):
        ask("m", [{"role": "user", "content": f"q{i}"}])
    assert hm.flush(timeout=30)
    with Store(sqlite_url) as store:
        kept = store.recent(100)
    assert len(kept) == 25  # the old ones by age, then the oldest new ones by count
    assert [c.messages[0]["content"] for c in kept] == [f"q{i}" for i in range(15, 40)]


V1_DDL = """
CREATE TABLE historymw_calls (
    id VARCHAR(64) PRIMARY KEY, started_at FLOAT NOT NULL, ended_at FLOAT NOT NULL, duration_s FLOAT NOT NULL,
    provider VARCHAR, model VARCHAR, operation VARCHAR, session VARCHAR, status VARCHAR(8) NOT NULL,
    error_type VARCHAR, error_message TEXT, output_text TEXT, finish_reason VARCHAR, input_tokens INTEGER,
    output_tokens INTEGER, total_tokens INTEGER, cost FLOAT, stream BOOLEAN, time_to_first_token_s FLOAT,
    trace_id VARCHAR(32), span_id VARCHAR(16), source VARCHAR, size_bytes INTEGER,
    messages JSON, params JSON, outputs JSON, tags JSON);
CREATE INDEX ix_historymw_calls_started_at ON historymw_calls (started_at);
CREATE INDEX ix_historymw_calls_model ON historymw_calls (model);
CREATE INDEX ix_historymw_calls_session ON historymw_calls (session) WHERE session IS NOT NULL;
CREATE INDEX ix_historymw_calls_errors ON historymw_calls (status, started_at) WHERE status = 'error';
CREATE TABLE historymw_schema (name VARCHAR(32) PRIMARY KEY, version INTEGER NOT NULL);
INSERT INTO historymw_schema VALUES ('calls', 1);
INSERT INTO historymw_calls (id, started_at, ended_at, duration_s, provider, model, operation, status,
    output_text, input_tokens, output_tokens, total_tokens, cost, source, size_bytes, messages, params, tags)
VALUES ('0000000000010000000000000000000a', 1700000000.0, 1700000001.5, 1.5, 'openai', 'gpt-old', 'chat', 'ok',
    'from v1', 10, 5, 15, 0.001, 'decorator', 900, '[{"role":"user","content":"old"}]', '{"n":1}', '{"a":"b"}');
"""


def test_a_version_1_database_is_migrated_without_losing_history(sqlite_url: str) -> None:
    with sqlite3.connect(_path(sqlite_url)) as conn:
        conn.executescript(V1_DDL)
    hm.configure(backends=["sql"], sql_url=sqlite_url)

    @hm.recorded(provider="fake")
    def new_style(model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
        return {"id": "resp-1", "model": "m-2025", "choices": [{"message": {"content": "new"}}]}

    new_style("m", MSGS)
    assert hm.flush(timeout=10)
    assert _rows(sqlite_url, "SELECT version FROM historymw_schema") == [(SCHEMA_VERSION,)]
    with Store(sqlite_url) as store:
        old = store.get("0000000000010000000000000000000a")
        new = store.recent(1)[0]
    assert old is not None and old.output_text == "from v1" and old.tags == {"a": "b"}
    assert old.messages == [{"role": "user", "content": "old"}] and old.cost == 0.001 and old.metadata == {}
    assert old.started_at == dt.datetime.fromtimestamp(1700000000.0, dt.timezone.utc)
    assert new.response_id == "resp-1" and new.output_text == "new"
    indexes = {r[0] for r in _rows(sqlite_url, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "ix_historymw_calls_trace_id" in indexes


def test_a_newer_schema_is_refused_with_a_clear_error(sqlite_url: str) -> None:
    _export(SQLBackend(sqlite_url), _sealed_drafts(1))
    with sqlite3.connect(_path(sqlite_url)) as conn:
        conn.execute("UPDATE historymw_schema SET version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than"):
        Store(sqlite_url)


def test_store_refuses_a_missing_file_instead_of_creating_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no history database at"):
        Store(f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_read_api_filters_and_aggregates(sqlite_url: str) -> None:
    hm.configure(backends=["sql"], sql_url=sqlite_url)
    base = time.time() - 100
    # Ten calls to "a" with latencies 0.1..1.0 s, two of them failing; three to "b".
    for i in range(10):
        with hm.call(provider="p", model="a", messages=MSGS, started_at=base + i) as c:
            c.output(text="ok", usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                     cost=0.01)
            c.end(error=RuntimeError("boom") if i in (3, 7) else None, ended_at=base + i + (i + 1) / 10)
    with hm.history(session="u1"):
        for i in range(3):
            with hm.call(provider="p", model="b", messages=MSGS, started_at=base + 50 + i) as c:
                c.output(text="b")
                c.end(ended_at=base + 50 + i + 2.0)
    assert hm.flush(timeout=10)
    with Store(sqlite_url) as store:
        assert store.count() == 13 and store.count(model="a", status="error") == 2
        assert [c.model for c in store.recent(3)] == ["b", "b", "b"]
        assert store.count(since=base + 5, until=base + 51) == 5 + 1
        assert [c.session for c in store.recent(5, session="u1")] == ["u1"] * 3
        errors = store.recent(10, status="error")
        assert [c.error_type for c in errors] == ["RuntimeError", "RuntimeError"]
        by_model = {s.group: s for s in store.stats(by="model")}
        overall = store.stats()[0]
        assert store.stats(model="nope") == []
    a = by_model["a"]
    assert (a.calls, a.errors, a.input_tokens, a.output_tokens, a.total_tokens) == (10, 2, 100, 50, 150)
    assert a.cost == pytest.approx(0.1) and a.error_rate == pytest.approx(0.2)
    assert a.latency_p50_s == pytest.approx(0.5, abs=1e-6) and a.latency_p95_s == pytest.approx(1.0, abs=1e-6)
    assert a.latency_mean_s == pytest.approx(0.55, abs=1e-6)
    b = by_model["b"]
    assert (b.calls, b.errors, b.cost, b.total_tokens) == (3, 0, None, 0)
    assert b.latency_p95_s == pytest.approx(2.0, abs=1e-6)
    assert overall.group is None and overall.calls == 13 and overall.errors == 2
    assert overall.first_call is not None and overall.first_call.timestamp() == pytest.approx(base, abs=1e-3)


def test_unknown_url_scheme_is_a_configuration_error() -> None:
    with pytest.raises(hm.ConfigError, match="unsupported database URL scheme 'mysql'"):
        hm.configure(backends=["sql"], sql_url="mysql://u@h/db")
