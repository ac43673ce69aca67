"""The sessions list and the overview read the writer's aggregates (historymw_sessions, the 5-minute
rollup); on the same database they must say what grouping the calls says (the path an older,
never-migrated database takes), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import pytest

from historymw.sql.schema import ROLLUP_S
from historymw.ui import queries
from historymw.ui.db import open_database
from historymw.ui.queries import Query

from ._data import write_history


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('ui_agg') / 'history.db'}"
    else:
        url = str(request.getfixturevalue("pg_module")[0])
    write_history(url, 300)
    return url


@pytest.fixture(scope="module")
def pg_module() -> Iterator[tuple[str, None]]:
    import os
    import uuid
    from urllib.parse import quote

    import sqlalchemy as sa

    base = os.environ.get("HISTORYMW_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("set HISTORYMW_TEST_POSTGRES_URL to run the PostgreSQL tests")
    schema = f"hmtest_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}", None
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def test_the_sessions_list_from_the_table_is_the_calls_grouped(db_url: str) -> None:
    db = open_database(db_url)
    try:
        assert db.aggregates
        scan = dataclasses.replace(db, aggregates=False)
        everything = Query(since=0.0)
        from_table = queries.sessions(db, everything, limit=1000)
        grouped = queries.sessions(scan, everything, limit=1000)
        assert len(from_table) >= 5
        assert [(s["session"], s["calls"], s["errors"], s["tokens"], s["first"], s["last"]) for s in from_table] == \
               [(s["session"], s["calls"], s["errors"], s["tokens"], s["first"], s["last"]) for s in grouped]
        assert [s["cost"] for s in from_table] == pytest.approx([s["cost"] for s in grouped])
        one = from_table[1]["session"]
        assert [s["session"] for s in queries.sessions(db, Query(session=one, since=0.0))] == [one]
    finally:
        db.engine.dispose()


@pytest.mark.parametrize("filters", [{}, {"model": "gpt-4o"}, {"status": "error"}, {"provider": "anthropic"}])
def test_the_overview_from_the_rollup_is_the_calls_aggregated(db_url: str, filters: dict[str, str]) -> None:
    db = open_database(db_url)
    try:
        scan = dataclasses.replace(db, aggregates=False)
        newest = queries.newest_time(db)
        oldest = queries.oldest_time(db, None)
        assert newest is not None and oldest is not None
        # A range of whole 5-minute buckets whose width is a whole number of them: both ways draw
        # the same buckets.
        since = math.floor(oldest / ROLLUP_S) * ROLLUP_S
        n = math.ceil((newest + 1 - since) / ROLLUP_S / queries.BUCKETS) * queries.BUCKETS
        q = Query(since=float(since), until=float(since + n * ROLLUP_S), **filters)
        fast, slow = queries.overview(db, q), queries.overview(scan, q)
        assert fast.totals["calls"] > 0
        assert (fast.since, fast.until, fast.width) == (slow.since, slow.until, slow.width)
        assert {k: fast.totals[k] for k in ("calls", "errors", "tokens")} == \
               {k: slow.totals[k] for k in ("calls", "errors", "tokens")}
        assert fast.totals["cost"] == pytest.approx(slow.totals["cost"])
        assert [(m["model"], m["calls"], m["errors"], m["tokens"]) for m in fast.models] == \
               [(m["model"], m["calls"], m["errors"], m["tokens"]) for m in slow.models]
        assert [(b["start"], b["calls"], b["errors"]) for b in fast.buckets] == \
               [(b["start"], b["calls"], b["errors"]) for b in slow.buckets]
        for f, s in zip(fast.buckets, slow.buckets, strict=True):  # a histogram bin is 26% wide
            for p in ("p50", "p95"):
                assert (f[p] is None) == (s[p] is None)
                if s[p] is not None and s[p] > 0.001:
                    assert f[p] == pytest.approx(s[p], rel=0.13)
    finally:
        db.engine.dispose()
