"""The SQL backend on the real PostgreSQL server (HISTORYMW_TEST_POSTGRES_URL): JSONB, idempotence,
an outage at start and mid-run through a TCP proxy the test cuts, retention, migration, read API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _pgtrace import round_trips
from _threads import run_in_threads
from reliability._proxy import Proxy

import historymw as hm
from historymw.backends.sql import SQLBackend
from historymw.record import seal
from historymw.sql.schema import SCHEMA_VERSION
from historymw.store import Store

MSGS = [{"role": "user", "content": "What is six times seven?"}]


def _export(backend: SQLBackend, drafts: list[dict[str, Any]]) -> int:
    """The export worker's fast path: prepare the drafts, then export them."""
    def fail(exc: BaseException) -> None:
        raise exc

    return backend.export_prepared(backend.prepare_drafts(drafts, True, fail))


@hm.recorded(provider="fake")
def ask(model: str, messages: list[dict[str, str]], **params: Any) -> str:
    return f"42 says {model}"


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM historymw_calls")).scalar_one())


def test_records_from_many_threads_are_persisted_with_jsonb(pg: tuple[str, sa.Engine]) -> None:
    url, check = pg
    hm.configure(backends=["sql"], sql_url=url, batch_size=100, flush_interval=0.05)

    def work(t: int) -> None:
        with hm.history(session=f"s{t}", tags={"team": "search"}):
            for _ in range(200):
                ask("m", MSGS, temperature=0.2)

    run_in_threads(work, 4)
    assert hm.flush(timeout=30)
    assert _count(check) == 800
    with check.connect() as conn:
        types = dict(conn.execute(sa.text(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'historymw_calls' AND table_schema = current_schema()")).all())
        by_tag = conn.execute(sa.text(
            "SELECT count(*) FROM historymw_calls WHERE tags @> '{\"team\": \"search\"}'::jsonb")).scalar_one()
    assert types["messages"] == "jsonb" and types["started_at"] == "timestamp with time zone"
    assert by_tag == 800
    with Store(url) as store:
        call = store.recent(1, session="s1")[0]
        assert store.count(session="s0") == 200
    assert call.messages == MSGS and call.params == {"temperature": 0.2} and call.tags == {"team": "search"}


def test_retries_are_idempotent_and_nul_characters_are_stored(pg: tuple[str, sa.Engine]) -> None:
    url, check = pg
    backend = SQLBackend(url)
    now = time.time()
    drafts = [seal({"started": now + i, "duration": 0.2, "model": "m", "messages": MSGS, "size_bytes": 1,
                    "output_text": "a\x00b" if i == 0 else "fine"}) for i in range(20)]
    assert _export(backend, drafts) == 0
    assert _export(backend, drafts) == 0
    backend.shutdown()
    assert _count(check) == 20
    with Store(url) as store:
        first = store.get(drafts[0]["id"])
    assert first is not None and first.output_text == "a\ufffdb"


def test_database_down_at_start_then_back_then_down_again(pg: tuple[str, sa.Engine]) -> None:
    url, check = pg
    _export(SQLBackend(url), [])  # the schema exists (an earlier run), the server is what fails
    u = sa.make_url(url)
    proxy = Proxy(u.host or "127.0.0.1", u.port or 5432)
    proxied = u.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        hm.configure(backends=["sql"], sql_url=proxied, queue_size=300, batch_size=50, flush_interval=0.01)
        t0 = time.monotonic()
        for i in range(1000):
            ask("m", [{"role": "user", "content": f"q{i}"}])
        assert time.monotonic() - t0 < 5  # calls never wait for the database
        s = hm.stats()
        assert s.dropped_by_reason["queue_full"] >= 650 and s.exported == 0
        assert not hm.flush(timeout=0.3)  # says what it could not deliver
        proxy.restore()
        assert hm.flush(timeout=30)
        s = hm.stats()
        assert s.dropped == s.dropped_by_reason["queue_full"]
        assert s.exported == 1000 - s.dropped == _count(check)

        proxy.cut()  # down again, with pooled connections now broken
        for i in range(200):
            ask("m", [{"role": "user", "content": f"second {i}"}])
        time.sleep(0.3)
        proxy.restore()
        assert hm.flush(timeout=30)
        s = hm.stats()
        assert s.recorded == 1200 and s.queued == 0
        assert s.exported + s.dropped == 1200
        assert _count(check) == s.exported
        assert s.errors.get("export:sql", 0) > 0
    finally:
        hm.shutdown(timeout=2)
        proxy.close()


def test_retention_and_read_api(pg: tuple[str, sa.Engine]) -> None:
    url, check = pg
    hm.configure(backends=["sql"], sql_url=url, sql_max_rows=30, flush_interval=0.01)
    base = time.time() - 1000
    for i in range(50):
        with hm.call(provider="p", model="a" if i % 2 else "b", messages=MSGS, started_at=base + i) as c:
            c.output(text="x", usage={"prompt_tokens": 3, "completion_tokens": 2}, cost=0.5)
            c.end(ended_at=base + i + (i % 10 + 1) / 10, error=ValueError("no") if i == 49 else None)
    assert hm.flush(timeout=30)
    assert _count(check) == 30
    with Store(url) as store:
        assert [c.started_at.timestamp() for c in store.recent(30)] == pytest.approx(
            [base + i for i in range(20, 50)], abs=1e-3)
        stats = {s.group: s for s in store.stats(by="model")}
        assert store.count(status="error") == 1
        # the calls before base + 40, however long the machine took to get here
        assert store.prune(older_than=time.time() - (base + 39.5)) == 20
        assert store.prune(keep=4) == 6
        assert store.count() == 4
    assert stats["a"].calls == 15 and stats["a"].total_tokens == 75 and stats["a"].cost == pytest.approx(7.5)
    assert stats["b"].errors == 0 and stats["a"].errors == 1
    assert stats["a"].latency_p50_s == pytest.approx(0.6, abs=1e-3)  # odd i: 0.2,0.4,...,1.0 thrice


def test_a_version_1_database_is_migrated(pg: tuple[str, sa.Engine]) -> None:
    url, check = pg
    with check.begin() as conn:
        conn.execute(sa.text("""
            CREATE TABLE historymw_calls (
              id VARCHAR(64) PRIMARY KEY, started_at TIMESTAMPTZ NOT NULL, ended_at TIMESTAMPTZ NOT NULL,
              duration_s FLOAT NOT NULL, provider VARCHAR, model VARCHAR, operation VARCHAR, session VARCHAR,
              status VARCHAR(8) NOT NULL, error_type VARCHAR, error_message TEXT, output_text TEXT,
              finish_reason VARCHAR, input_tokens INTEGER, output_tokens INTEGER, total_tokens INTEGER,
              cost FLOAT, stream BOOLEAN, time_to_first_token_s FLOAT, trace_id VARCHAR(32), span_id VARCHAR(16),
              source VARCHAR, size_bytes INTEGER, messages JSONB, params JSONB, outputs JSONB, tags JSONB)"""))
        conn.execute(sa.text("CREATE TABLE historymw_schema (name VARCHAR(32) PRIMARY KEY, version INTEGER NOT NULL)"))
        conn.execute(sa.text("INSERT INTO historymw_schema VALUES ('calls', 1)"))
        conn.execute(sa.text(
            "INSERT INTO historymw_calls (id, started_at, ended_at, duration_s, model, status, output_text, "
            "messages) VALUES ('00000000000100000000000000000001', to_timestamp(1700000000), "
            "to_timestamp(1700000002), 2.0, 'gpt-old', 'ok', 'from v1', "
            "'[{\"role\": \"user\", \"content\": \"old\"}]')"))
    hm.configure(backends=["sql"], sql_url=url)
    ask("m", MSGS)
    assert hm.flush(timeout=10)
    with check.connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM historymw_schema")).scalar_one() == SCHEMA_VERSION
    with Store(url) as store:
        old = store.get("00000000000100000000000000000001")
        assert store.count() == 2
    assert old is not None and old.output_text == "from v1" and old.duration_s == 2.0
    assert old.messages == [{"role": "user", "content": "old"}] and old.started_at.timestamp() == 1700000000


def test_reading_a_call_back_is_one_statement_with_its_prompt(pg: tuple[str, sa.Engine], tmp_path: Path) -> None:
    """`Store.get` on PostgreSQL: the row and the contents of its shared prefix (a list and its
    messages) in one statement, no transaction around it; the contents are not sent again to a
    reader that holds them; and the store stays read-only."""
    from historymw.sql import contents

    url, check = pg
    system = {"role": "system", "content": "You answer questions about history. " * 20}
    demos = [{"role": "user", "content": f"demo {i}"} for i in range(3)]
    backend = SQLBackend(url)
    drafts = [seal({"started": time.time() + i, "duration": 0.1, "model": "m", "size_bytes": 1,
                    "messages": [system, *demos, {"role": "user", "content": f"question {i}"}]}) for i in range(3)]
    assert _export(backend, drafts) == 0
    backend.shutdown()
    contents._decoded._items.clear()  # as in a new process: no prompt held yet
    contents._decoded._held = 0
    trace = tmp_path / "trace"
    with Store(url) as store, open(trace, "w") as fh:
        with store._engine.connect() as conn:  # the reader's one pooled connection, traced
            conn.connection.dbapi_connection.pgconn.trace(fh.fileno())
        first = store.get(drafts[0]["id"])
        second = store.get(drafts[1]["id"])
        with store._engine.connect() as conn:
            conn.connection.dbapi_connection.pgconn.untrace()  # (writes out what libpq holds)
    exchanges = round_trips(trace.read_text())
    assert len(exchanges) == 2, exchanges
    # A demo's digest is in the contents sent with the first call, not in the answer to the second.
    demo = contents.digest(contents.message_json(demos[0]).encode()).hex()
    assert demo in exchanges[0] and demo not in exchanges[1]
    with Store(url) as store:
        with pytest.raises(sa.exc.InternalError, match="read-only"), store._engine.connect() as conn:
            conn.execute(sa.text("DELETE FROM historymw_contents"))
    assert first is not None and first.messages == [system, *demos, {"role": "user", "content": "question 0"}]
    assert second is not None and second.messages[-1] == {"role": "user", "content": "question 1"}
    assert second.messages[:-1] == first.messages[:-1]
    with check.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM historymw_contents")).scalar_one() > 0


def test_a_reader_survives_a_server_restart(pg: tuple[str, sa.Engine]) -> None:
    """Readers skip the pool's pre-ping (a round trip per read): a pooled connection the server
    dropped is replaced when a read finds it dead, and the read goes through."""
    url, _ = pg
    backend = SQLBackend(url)
    draft = seal({"started": time.time(), "duration": 0.1, "model": "m", "messages": MSGS, "size_bytes": 1})
    assert _export(backend, [draft]) == 0
    backend.shutdown()
    u = sa.make_url(url)
    proxy = Proxy(u.host or "127.0.0.1", u.port or 5432)
    proxied = u.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        proxy.restore()
        with Store(proxied) as store:
            assert store.get(draft["id"]) is not None
            proxy.cut()  # the pooled connection dies
            proxy.restore()
            call = store.get(draft["id"])
            assert call is not None and call.messages == MSGS
    finally:
        proxy.close()
