"""`historymw sessions`, run as a user types it (a subprocess) on a real SQLite file and a real PostgreSQL
server (each read directly, and through the Store)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli import run

import historymw as hm


def _fill(url: str) -> str:
    """12 sessions: session i's calls end at base + 60 * i; "chat-03" also has a failing call."""
    hm.configure(backends=["sql"], sql_url=url)
    base = time.time() - 7200
    for i in range(12):
        with hm.history(session=f"chat-{i:02d}"):
            for j in range(2 + (i == 3)):
                with hm.call(provider="p", model="m", messages=[{"role": "user", "content": f"q{i}.{j}"}],
                             started_at=base + 60 * i - 5 * (2 - j)) as c:
                    c.output(text=f"a{i}.{j}", usage={"prompt_tokens": 4, "completion_tokens": 1}, cost=0.01)
                    c.end(error=ValueError("bad") if (i, j) == (3, 2) else None)
    with hm.history(session="evil\x1b[31m"):
        hm.call(provider="p", model="m", messages=[{"role": "user", "content": "x"}],
                started_at=base - 600).__enter__().end()
    assert hm.flush(timeout=10)
    hm.shutdown()
    return url


@pytest.fixture
def db(sqlite_url: str) -> str:
    return _fill(sqlite_url)


def test_sessions_lists_newest_activity_first_and_pages_with_the_printed_cursor(db: str) -> None:
    p = run("--db", db, "sessions", "-n", "5")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["LAST", "ACTIVITY", "(UTC)", "FIRST", "(UTC)", "SESSION", "CALLS", "ERRORS", "TOKENS",
                                "COST"]
    assert [ln.split()[4] for ln in lines[1:6]] == [f"chat-{i:02d}" for i in (11, 10, 9, 8, 7)]
    assert lines[-1].startswith("next page: historymw sessions --before ")
    page = json.loads(run("--db", db, "sessions", "-n", "5", "--json").stdout)
    assert [s["id"] for s in page["sessions"]] == [ln.split()[4] for ln in lines[1:6]]
    assert lines[-1].endswith(page["next"]) or lines[-1].endswith(f"'{page['next']}'")
    seen = [s["id"] for s in page["sessions"]]
    while page["next"] is not None:  # follow the cursor each page gives
        page = json.loads(run("--db", db, "sessions", "-n", "5", "--json", "--before", page["next"]).stdout)
        seen += [s["id"] for s in page["sessions"]]
    assert seen == [f"chat-{i:02d}" for i in reversed(range(12))] + ["evil\x1b[31m"]
    last = json.loads(run("--db", db, "sessions", "-n", "13", "--json").stdout)
    assert last["next"] is None and len(last["sessions"]) == 13
    chat3 = next(s for s in last["sessions"] if s["id"] == "chat-03")
    assert (chat3["calls"], chat3["errors"], chat3["input_tokens"], chat3["total_tokens"]) == (3, 1, 12, 15)
    assert chat3["cost"] == pytest.approx(0.03)
    text = run("--db", db, "sessions", "-n", "20").stdout
    assert "\x1b" not in text and "evil\\x1b[31m" in text  # recorded text never drives the terminal
    assert "next page" not in text


def test_sessions_id_shows_the_conversation_in_order(db: str) -> None:
    p = run("--db", db, "sessions", "chat-03")
    assert p.returncode == 0, p.stderr
    head, _, table = p.stdout.partition("\n\n")
    assert head.startswith("session chat-03: 3 calls, 1 errors, 15 tokens, cost $0.03")
    rows = table.splitlines()[1:]
    assert len(rows) == 3 and "ValueError: bad" in rows[2] and "a3.0" in rows[0] and "a3.1" in rows[1]
    doc = json.loads(run("--db", db, "sessions", "chat-03", "--json").stdout)
    assert doc["session"]["id"] == "chat-03" and doc["session"]["calls"] == 3
    assert [c["messages"][0]["content"] for c in doc["calls"]] == ["q3.0", "q3.1", "q3.2"]
    full = run("--db", db, "sessions", "chat-03", "--full").stdout
    assert full.index("q3.0") < full.index("a3.0") < full.index("q3.1") < full.index("q3.2")


def test_unknown_session_is_exit_1_and_a_bad_cursor_exit_2(db: str) -> None:
    p = run("--db", db, "sessions", "nobody")
    assert (p.returncode, p.stdout) == (1, "")
    assert p.stderr.startswith("historymw: no session 'nobody' in sqlite:///")
    p = run("--db", db, "sessions", "--before", "yesterday")
    assert p.returncode == 2 and "not a sessions cursor" in p.stderr and len(p.stderr.splitlines()) == 1


def test_sessions_json_is_what_the_store_models_write(db: str) -> None:
    # The command prints plain rows (no pydantic model is built for the list); they must read as
    # Store.sessions() models dumped to JSON would: same keys, same values, times with a Z.
    page = json.loads(run("--db", db, "sessions", "-n", "20", "--json").stdout)
    with hm.Store(db) as store:
        assert page["sessions"] == [s.model_dump(mode="json") for s in store.sessions(20)]
    assert page["sessions"][0]["last_at"].endswith("Z")


_IMPORTS = """
import sys
from historymw.cli import main
try:
    code = main(sys.argv[1:])  # --help exits from inside
finally:
    loaded = sorted({name.split(".")[0] for name in sys.modules} & {"pydantic", "structlog", "sqlalchemy", "psycopg"}
                    | {name for name in sys.modules if name in ("historymw.runtime", "historymw.models")})
    print("LOADED", loaded, file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("argv", [["sessions"], ["sessions", "--json"], ["sessions", "-n", "2", "--before", "CURSOR"],
                                  ["sessions", "chat-03"], ["--help"]])
def test_sessions_list_imports_neither_pydantic_nor_sqlalchemy_nor_the_recorder(db: str, argv: list[str]) -> None:
    # People type `historymw sessions` and wait for it: nearly all it cost was imports (the pydantic
    # models a third of it, SQLAlchemy 40%). The list of a SQLite file is read with sqlite3 as plain
    # rows; nothing records here.
    import os
    import subprocess
    import sys

    if "CURSOR" in argv:
        argv[argv.index("CURSOR")] = json.loads(run("--db", db, "sessions", "-n", "2", "--json").stdout)["next"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTORYMW_")}
    p = subprocess.run([sys.executable, "-c", _IMPORTS, "--db", db, *argv], capture_output=True, text=True,
                       timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert "LOADED []" in p.stderr.splitlines()


def _pages_alike(reader: Any, store: hm.Store) -> None:
    """The direct reader and the Store give the same pages, rows and cursors, page after page."""
    before = None
    while True:
        mine, theirs = reader.session_rows(5, before=before), store.session_rows(5, before=before)
        assert mine == theirs
        if len(mine) < 5:
            break
        before = mine[-1]["cursor"]


def test_the_direct_reader_pages_exactly_as_the_store(db: str) -> None:
    # sql/direct reads the list with sqlite3 and its own statement; Store, through SQLAlchemy. Same
    # pages, same rows, same cursors, page after page.
    from historymw.sql import direct

    reader = direct.open_sessions(db)
    assert reader is not None
    with reader, hm.Store(db) as store:
        _pages_alike(reader, store)
        assert reader.session_rows(0) == [] and len(reader.session_rows(100)) == 13


def test_a_session_reads_alike_directly_and_through_the_store(db: str) -> None:
    # The same file named with a %-escape: SQLAlchemy decodes it; the direct reader leaves such URLs to
    # the Store. Both print the same lines, an error's text and escaped control characters included.
    head, _, name = db.rpartition("/")
    escaped = f"{head}%2F{name}"
    for argv in (["sessions"], ["sessions", "chat-03"], ["sessions", "evil\x1b[31m"],
                 ["sessions", "-n", "3", "--json"]):
        direct, store = run("--db", db, *argv), run("--db", escaped, *argv)
        assert (direct.returncode, direct.stderr) == (0, "") and (store.returncode, store.stderr) == (0, "")
        assert direct.stdout == store.stdout


def test_the_direct_reader_knows_the_schema_it_reads() -> None:
    # Its names mirror historymw.sql.schema (which imports SQLAlchemy). When the schema version moves on,
    # check that the sessions table reads the same, then move KNOWN_VERSION with it: until then, the
    # command reads a newer database through the Store (slower, still right).
    from historymw.sql import direct, schema

    assert (direct.VERSIONS_TABLE, direct.SESSIONS_TABLE) == (schema.VERSIONS, schema.SESSIONS)
    assert direct.SESSIONS_SINCE == schema.SESSIONS_SINCE
    assert direct.KNOWN_VERSION == schema.SCHEMA_VERSION
    assert set(direct.SESSION_FIELDS) == {c.name for c in schema.sessions.columns}


@pytest.mark.parametrize("url", ["sqlite:///h.db", "sqlite:////tmp/x/h.db", "sqlite+pysqlite:///h.db",
                                 "sqlite:///~/h.db", "sqlite:///a b#c@d:e.db", "sqlite:///sub/../h.db"])
def test_the_direct_reader_finds_the_file_the_engine_opens(url: str) -> None:
    from historymw.sql import direct, engine

    assert direct.sqlite_file(url) == engine.sqlite_path(engine.parse_url(url))


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:h.db?uri=true",
                                 "sqlite:///h%20b.db", "sqlite:///h.db?timeout=5", "SQLite:///h.db",
                                 "postgresql+psycopg2://u@h/db", "postgresql://u@/db?host=h", "postgresql://u@h:x/db",
                                 "postgresql://u@h/db?sslmode=require&sslmode=disable", "mysql://u@h/db"])
def test_other_urls_are_left_to_the_store(url: str) -> None:
    from historymw.sql import direct

    assert direct.sqlite_file(url) is None and direct.open_sessions(url) is None


def test_what_the_direct_reader_does_not_read_the_store_reads_or_explains(tmp_path: Path, db: str) -> None:
    import sqlite3

    # A database older than the sessions table (schema 3): the calls grouped by session, as before.
    old = tmp_path / "v3.db"
    with sqlite3.connect(old) as conn:
        conn.executescript((Path(__file__).parent / "data" / "store_v3.sql").read_text())
    p = run("--db", str(old), "sessions", "--json")
    assert p.returncode == 0, p.stderr
    with hm.Store(f"sqlite:///{old}") as store:
        assert json.loads(p.stdout)["sessions"] == [s.model_dump(mode="json") for s in store.sessions(50)]
    # Not a history database; no file; a directory: the Store's messages, exit code 3.
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    for path, message in [(other, "has no historymw tables"), (tmp_path / "none.db", "no history database at"),
                          (tmp_path, "is a directory")]:
        p = run("--db", str(path), "sessions")
        assert p.returncode == 3 and message in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    # A newer schema than this historymw knows is refused, not misread.
    newer = tmp_path / "newer.db"
    newer.write_bytes(Path(db.removeprefix("sqlite:///")).read_bytes())
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE historymw_schema SET version = version + 1 WHERE name = 'calls'")
    p = run("--db", str(newer), "sessions")
    assert p.returncode == 3 and "newer than this historymw understands" in p.stderr


# -- PostgreSQL: read with libpq (sql/direct_pg) when the URL is one it parses, else through the Store ----------

@pytest.fixture
def pg_db(pg: tuple[str, Any]) -> tuple[str, str]:
    """The 12 sessions in a fresh PostgreSQL schema: the URL the direct reader reads, and the same
    database named with its host in the query, a form only the Store reads."""
    url = _fill(pg[0])
    head, _, query = url.partition("?")
    assert head.startswith("postgresql+psycopg://postgres@127.0.0.1:5432/"), "these tests name the server so"
    return url, head.replace("@127.0.0.1:5432/", "@/") + "?host=127.0.0.1&port=5432&" + query


def test_postgres_is_read_directly_and_pages_exactly_as_the_store(pg_db: tuple[str, str]) -> None:
    from historymw.sql import direct

    reader = direct.open_sessions(pg_db[0])
    assert reader is not None and direct.open_sessions(pg_db[1]) is None
    with reader, hm.Store(pg_db[0]) as store:
        _pages_alike(reader, store)
        assert len(reader.session_rows(100)) == 13
        for sid in ("chat-03", "evil\x1b[31m"):
            assert reader.session_row(sid) == store.session_row(sid)
            fields = direct.CallLine._fields
            assert reader.calls(session=sid) == [tuple(getattr(c, f) for f in fields) for c in store.calls(session=sid)]


@pytest.mark.parametrize("options", ["", "%20-cTimeZone%3DAmerica/St_Johns"])
def test_postgres_prints_alike_directly_and_through_the_store(pg_db: tuple[str, str], options: str) -> None:
    # A server in another time zone (-03:30, -02:30 in summer) gives times with that offset: JSON keeps
    # them as the Store's models write them.
    direct_url, store_url = (u + options for u in pg_db)
    cursor = json.loads(run("--db", store_url, "sessions", "-n", "4", "--json").stdout)["next"]
    for argv in (["sessions"], ["sessions", "chat-03"], ["sessions", "evil\x1b[31m"], ["sessions", "-n", "3", "--json"],
                 ["sessions", "-n", "4", "--before", cursor], ["sessions", "nobody"], ["sessions", "--before", "x"]):
        direct, store = run("--db", direct_url, *argv), run("--db", store_url, *argv)
        assert direct.returncode == store.returncode and direct.stdout == store.stdout, argv
        # Errors name the store by its URL (the two spell it differently); the rest is the same.
        assert direct.stderr.split(" in postgresql")[0] == store.stderr.split(" in postgresql")[0], argv


def test_postgres_sessions_import_neither_psycopg_nor_sqlalchemy(pg_db: tuple[str, str]) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTORYMW_")}
    for argv in (["sessions"], ["sessions", "chat-03"]):
        p = subprocess.run([sys.executable, "-c", _IMPORTS, "--db", pg_db[0], *argv], capture_output=True, text=True,
                           timeout=60, env=env)
        assert p.returncode == 0, p.stderr
        assert "LOADED []" in p.stderr.splitlines()


def test_postgres_what_the_direct_reader_does_not_read_the_store_reads_or_explains(pg: tuple[str, Any],
                                                                                  pg_db: tuple[str, str]) -> None:
    import sqlalchemy as sa

    url = pg_db[0]
    # A password in the URL (the server's trust auth ignores it): never printed, by either reader.
    head, _, rest = url.partition("postgres@")
    secret = f"{head}postgres:hunter2-s3cret@{rest}"
    for argv in (["sessions", "-n", "2"], ["sessions", "nobody"]):
        p = run("--db", secret, *argv)
        assert "hunter2" not in p.stdout + p.stderr and p.returncode == (0 if argv[1] == "-n" else 1)
    # A newer schema than this historymw knows: the Store refuses it, in its words.
    with pg[1].begin() as conn:
        conn.execute(sa.text("UPDATE historymw_schema SET version = version + 1 WHERE name = 'calls'"))
    p = run("--db", url, "sessions")
    assert p.returncode == 3 and "newer than this historymw understands" in p.stderr
    # No historymw tables there: the Store's message, exit code 3.
    with pg[1].begin() as conn:
        conn.execute(sa.text("DROP TABLE historymw_schema, historymw_sessions, historymw_calls CASCADE"))
    p = run("--db", url, "sessions")
    assert p.returncode == 3 and len(p.stderr.splitlines()) == 1, p.stderr
    # A server that is not there: the Store's message, exit code 3.
    p = run("--db", "postgresql+psycopg://postgres@127.0.0.1:1/test", "sessions")
    assert p.returncode == 3 and "127.0.0.1" in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://u@h:5432/db", "postgresql://u:p%40ss%2Fw@h/db", "postgres://u@h/db?sslmode=disable",
    "postgresql+psycopg://u:@h:05432/d%20b?options=-csearch_path%3Dx&application_name=a%20b",
    "postgresql://[::1]:5433/db", "postgresql://u@/db", "postgresql:///db?connect_timeout=30",
    "postgresql://u:p:q@h/db", "postgresql://h:0/db", "postgresql://u@h/db?dbname=other&user=v"])
def test_the_direct_reader_connects_as_sqlalchemy_would(url: str) -> None:
    # What SQLAlchemy's psycopg dialect passes to psycopg.connect for the URL, with the engine's connect
    # timeout: the parameters libpq gets from either reader.
    from historymw.sql import direct, engine

    u = engine.parse_url(url)
    _, kwargs = u.get_dialect()().create_connect_args(u)
    kwargs["connect_timeout"] = engine.PG_CONNECT_TIMEOUT_S
    assert direct.postgres_params(url) == {k: str(v) for k, v in kwargs.items()}
