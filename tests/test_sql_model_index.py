"""Schema 7's index on (model, started_at): a model's newest calls are read in index order, on
SQLite and PostgreSQL, through `Store.recent(model=...)` (`historymw tail --model`) and
the viewer's list page; a schema-6 database is carried forward."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from historymw.backends.sql import SQLBackend
from historymw.record import seal
from historymw.sql.schema import SCHEMA_VERSION
from historymw.store import Store

V6_DUMP = Path(__file__).parent / "data" / "store_v6.sql"
INDEX = "ix_historymw_calls_model_started_at"


def _write(url: str, n: int) -> None:
    """`n` calls, most of one model (the case where finding a model's rows and then sorting them
    all by time costs the most), through the export worker's fast path."""
    def fail(exc: BaseException) -> None:
        raise exc

    backend = SQLBackend(url)
    now = time.time() - n
    drafts = [seal({"started": now + i, "duration": 0.1, "model": "m-big" if i % 50 else "m-small",
                    "size_bytes": 1, "messages": [{"role": "user", "content": f"q{i}"}]}) for i in range(n)]
    assert backend.export_prepared(backend.prepare_drafts(drafts, True, fail)) == 0
    backend.shutdown()


def _statements(engine: Any, read: Any) -> list[tuple[str, Any]]:
    """The statements (and parameters) that `read()` sent through `engine`."""
    seen: list[tuple[str, Any]] = []

    def log(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    sa.event.listen(engine, "before_cursor_execute", log)
    try:
        read()
    finally:
        sa.event.remove(engine, "before_cursor_execute", log)
    return seen


def _model_reads(url: str, model: str) -> list[tuple[str, Any]]:
    """The statements of a model-filtered newest-first read: the store's and the viewer's list page."""
    from historymw.ui import queries
    from historymw.ui.db import open_database

    with Store(url) as store:
        store.recent(1)  # (the reader's first read learns the columns: not the statement looked at)
        got = _statements(store._engine, lambda: store.recent(20, model=model))
        assert [c.model for c in store.recent(20, model=model)] == [model] * 20
    db = open_database(url)
    try:
        page = _statements(db.engine, lambda: queries.page(db, queries.Query(model=model), limit=20))
    finally:
        db.engine.dispose()
    reads = [s for s in got + page if "ORDER BY" in s[0] and "model" in s[0]]
    assert len(reads) == 2, got + page
    return reads


def test_sqlite_reads_a_models_newest_calls_in_index_order(sqlite_url: str) -> None:
    _write(sqlite_url, 400)
    path = sqlite_url.removeprefix("sqlite:///")
    for statement, params in _model_reads(sqlite_url, "m-big"):
        with sqlite3.connect(path) as conn:
            plan = " / ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {statement}", params))
        # Not "USE TEMP B-TREE FOR ORDER BY" (all of the model's rows sorted per page). The
        # tie-breaker on id is still sorted ("RIGHT PART OF ORDER BY"), among calls that started
        # at the same instant only, as in the unfiltered read on the started_at index.
        assert f"USING INDEX {INDEX} (model=?" in plan and "TEMP B-TREE FOR ORDER BY" not in plan, plan


def test_postgresql_reads_a_models_newest_calls_in_index_order(pg: tuple[str, sa.Engine]) -> None:
    url, check = pg
    _write(url, 10_000)
    with check.begin() as conn:
        conn.exec_driver_sql("ANALYZE historymw_calls")
    # A model of one call in 50: PostgreSQL reads the newest calls of a model that has most of them
    # on started_at's index backwards (as it should: it filters out few), and without (model,
    # started_at) those of a rarer one by model alone, then sorted, or on started_at, filtering out
    # 49 rows in 50.
    for statement, params in _model_reads(url, "m-small"):
        with check.begin() as conn:
            # 10,000 rows fit in a few hundred pages, where a scan is still cheapest: the index must
            # win against the other indexes, not against a scan.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {statement}", params))
        assert INDEX in plan and "Bitmap" not in plan, plan
        assert "\n  ->  Sort" not in plan and not plan.startswith("Limit\n  ->  Sort"), plan


def test_a_schema_6_database_is_carried_forward(tmp_path: Path) -> None:
    """The v6 fixture (written by historymw at schema 6) gets the new index in place of the old one,
    its calls read back the same, and new calls are recorded into it."""
    path = tmp_path / "v6.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V6_DUMP.read_text())
    url = f"sqlite:///{path}"
    with Store(url) as store:  # a reader: never migrates
        before = [c.model_dump() for c in store.recent(100)]
    assert len(before) == 34
    _write(url, 3)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM historymw_schema").fetchone() == (SCHEMA_VERSION,) == (7,)
        indexes = {r[0]: r[1] for r in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                                   "AND tbl_name = 'historymw_calls' AND sql IS NOT NULL")}
    assert "ix_historymw_calls_model" not in indexes
    assert "(model, started_at)" in indexes[INDEX]
    with Store(url) as store:
        after = {c.id: c.model_dump() for c in store.recent(100)}
        assert len(after) == 37 and all(after[c["id"]] == c for c in before)
        assert len(store.recent(100, model="gpt-4o-mini")) == 24


def test_a_schema_6_postgresql_database_is_carried_forward(pg: tuple[str, sa.Engine]) -> None:
    """PostgreSQL: a store of schema 6 (its index on model alone) gets the new index in its place."""
    url, check = pg
    _write(url, 5)
    with check.begin() as conn:  # as schema 6 left it
        conn.exec_driver_sql(f"DROP INDEX {INDEX}")
        conn.exec_driver_sql("CREATE INDEX ix_historymw_calls_model ON historymw_calls (model)")
        conn.exec_driver_sql("UPDATE historymw_schema SET version = 6")
    _write(url, 3)
    with check.connect() as conn:
        assert conn.exec_driver_sql("SELECT version FROM historymw_schema").scalar_one() == SCHEMA_VERSION
        names = set(conn.exec_driver_sql("SELECT indexname FROM pg_indexes "
                                         "WHERE schemaname = current_schema() AND tablename = 'historymw_calls'")
                     .scalars())
    assert INDEX in names and "ix_historymw_calls_model" not in names
    with Store(url) as store:
        assert len(store.recent(100, model="m-big")) == 6
