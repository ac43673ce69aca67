"""Short ids in the SQL store: the v2 -> v3 migration on a store written by the release before
them (SQLite and PostgreSQL), and lookups by short id before and after it."""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

import historymw as hm
from historymw.sql.ids import short_id
from historymw.sql.schema import SCHEMA_VERSION
from historymw.store import Store

V2_DUMP = Path(__file__).parent / "data" / "store_v2.sql"
MSGS = [{"role": "user", "content": "q"}]


def _load_v2(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    conn.executescript(V2_DUMP.read_text())
    ids = [r[0] for r in conn.execute("SELECT id FROM historymw_calls ORDER BY started_at, id")]
    conn.close()
    return ids


def _record_one(url: str) -> None:
    hm.configure(backends=["sql"], sql_url=url)
    hm.recorded(provider="p")(lambda model, messages: "new")("m", MSGS)
    assert hm.flush(timeout=10)
    hm.configure(backends=["ring"])


def test_a_version_2_sqlite_store_is_read_as_it_is_then_migrated_by_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    ids = _load_v2(path)
    url = f"sqlite:///{path}"
    before = path.read_bytes()
    with Store(url) as store:  # a reader: finds calls by short id without migrating
        assert [c.id for c in store.recent(100)] == ids
        got = store.get(short_id(ids[2]).upper())
        assert got is not None and got.id == ids[2] and got.output_text == "answer 2"
    assert path.read_bytes() == before

    _record_one(url)  # the next writer migrates
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM historymw_schema").fetchone() == (SCHEMA_VERSION,)
    rows = conn.execute("SELECT id, short_id FROM historymw_calls").fetchall()
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(historymw_calls)")}
    conn.close()
    assert len(rows) == len(ids) + 1 and all(s == short_id(i) for i, s in rows)
    assert "ix_historymw_calls_short_id" in indexes
    with Store(url) as store:
        for i in ids:
            call = store.get(short_id(i))
            assert call is not None and call.id == i
        assert store.count() == len(ids) + 1


def test_a_version_2_postgresql_store_is_migrated(pg: tuple[str, sa.Engine]) -> None:
    url, check = pg
    _record_one(url)
    _record_one(url)
    with check.begin() as conn:  # back to what the release before short ids wrote
        conn.execute(sa.text("UPDATE historymw_calls SET messages = CAST(:m AS JSONB)"), {"m": json.dumps(MSGS)})
        conn.execute(sa.text("DROP TABLE historymw_contents"))
        conn.execute(sa.text("ALTER TABLE historymw_calls DROP COLUMN message_refs"))
        conn.execute(sa.text("DROP INDEX ix_historymw_calls_short_id"))
        conn.execute(sa.text("ALTER TABLE historymw_calls DROP COLUMN short_id"))
        conn.execute(sa.text("UPDATE historymw_schema SET version = 2"))
    with Store(url) as store:
        ids = [c.id for c in store.recent(10)]
        got = store.get(short_id(ids[0]))
        assert got is not None and got.id == ids[0]
    _record_one(url)
    with check.connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM historymw_schema")).scalar() == SCHEMA_VERSION
        rows = conn.execute(sa.text("SELECT id, short_id FROM historymw_calls")).all()
    assert len(rows) == 3 and all(s == short_id(i) for i, s in rows)
    with Store(url) as store:
        assert [c.messages for c in store.recent(10)] == [MSGS] * 3


@pytest.mark.parametrize("call_id", ["not-one-of-ours", "ABC", "x" * 64])
def test_ids_of_another_shape_get_a_short_id_too(call_id: str) -> None:
    s = short_id(call_id)
    assert len(s) == 8 and int(s, 16) >= 0 and s == short_id(call_id)


def test_the_calls_of_a_process_get_consecutive_short_ids() -> None:
    """Consecutive, so that each process adds to the short-id index at one place (like the primary key)."""
    from historymw.record import new_id

    shorts = [int(short_id(new_id(1.0)), 16) for _ in range(1000)]
    assert all((b - a) % 2**32 == 1 for a, b in itertools.pairwise(shorts))


def test_store_get_checks_its_argument(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _load_v2(path)
    with Store(f"sqlite:///{path}") as store:
        with pytest.raises(TypeError, match="call_id must be a str"):
            store.get(123)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="status must be"):
            store.recent(status="bogus")
        assert store.get("zz") is None and store.get("019e") is None
