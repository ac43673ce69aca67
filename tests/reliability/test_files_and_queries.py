"""Files and queries: the SQLite file (and its WAL and shared-memory files) is readable by its owner
only, whatever the umask; every SQL statement historymw runs is parameterised, so user data (a model
name, a session, a filter typed into the CLI) is only ever a bound parameter; the CLI refuses an unknown
URL scheme with a message that says what is accepted.

See also tests/test_sql_backend.py::test_database_file_is_private_and_in_wal_mode and
tests/test_cli.py::test_bad_input_is_one_line_and_exit_2 (mysql://).
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import historymw as hm
from historymw import cli
from historymw.store import Store

HOSTILE = {
    "model": "x'; DROP TABLE historymw_calls;--",
    "session": "s' OR '1'='1",
    "provider": 'p"); DELETE FROM historymw_schema; --',
}
# Fragments that appear in no statement historymw writes itself.
MARKERS = ("DROP TABLE", "OR '1'='1", "DELETE FROM historymw_schema", "x'", "s'")


@pytest.fixture
def statements() -> Iterator[list[tuple[str, Any]]]:
    """Every statement any SQLAlchemy engine sends to a database during the test, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append((statement, parameters))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", capture)
    yield seen
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", capture)


def _record_hostile_calls() -> None:
    for i in range(3):
        with hm.history(session=HOSTILE["session"], tags={"q'uote": "v'; --"}):
            with hm.call(provider=HOSTILE["provider"], model=HOSTILE["model"],
                         messages=[{"role": "user", "content": "'); DROP TABLE historymw_calls; --"}],
                         params={"stop": ["';"]}) as c:
                c.output(text=f"answer {i} ' OR 1=1 --")


def _run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return cli.main(list(argv), out=out), out.getvalue()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
@pytest.mark.parametrize("path", ["drafts", "records"])
def test_user_data_is_only_ever_a_bound_parameter(db: str, path: str, statements: list[tuple[str, Any]],
                                                  request: pytest.FixtureRequest, figures: Any) -> None:
    url = request.getfixturevalue("sqlite_url") if db == "sqlite" else request.getfixturevalue("pg")[0]
    # "records": a redactor makes the worker build LMCall models, which take the backend's other write path.
    redactor = (lambda r: r) if path == "records" else None
    hm.configure(backends=["sql"], sql_url=url, redactor=redactor, sql_max_rows=1000, flush_interval=0.01)
    _record_hostile_calls()
    assert hm.flush(timeout=30)  # the write path, then retention (prune) through flush()
    assert hm.stats().exported == 3

    with Store(url) as store:  # the read API, filtering on the hostile values
        filters = {"model": HOSTILE["model"], "session": HOSTILE["session"], "provider": HOSTILE["provider"]}
        got = store.recent(10, **filters)
        assert len(got) == 3 and store.count(**filters) == 3
        assert [s.group for s in store.stats(by="model", **filters)] == [HOSTILE["model"]]
        assert len(list(store.calls(**filters))) == 3
        assert store.get(got[0].id) is not None and store.get("' OR '1'='1") is None
        assert store.prune(keep=1000) == 0
    call = got[-1]
    assert (call.model, call.session, call.provider) == (HOSTILE["model"], HOSTILE["session"], HOSTILE["provider"])
    assert call.tags == {"q'uote": "v'; --"}

    # The command line, as a user would type the same values.
    for argv in (["tail", "--json", "--model", HOSTILE["model"], "--session", HOSTILE["session"]],
                 ["stats", "--json", "--by", "session", "--model", HOSTILE["model"]],
                 ["export", "--format", "jsonl", "--session", HOSTILE["session"]],
                 ["show", "' OR '1'='1"]):
        code, out = _run_cli("--db", url, *argv)
        assert code == (1 if argv[0] == "show" else 0), (argv, out)
        if argv[0] == "tail":
            assert [json.loads(line)["model"] for line in out.splitlines()] == [HOSTILE["model"]] * 3

    assert statements
    with_user_data = 0
    for sql, params in statements:
        for marker in MARKERS:
            assert marker not in sql, f"user data inside SQL text: {sql[:300]!r}"
        if any(v in repr(params) for v in HOSTILE.values()):
            with_user_data += 1
    assert with_user_data >= 5  # the writes, the store's filters and the CLI's all bound them
    figures(statements=len(statements), statements_binding_user_data=with_user_data, string_built_with_user_data=0)


@pytest.mark.parametrize("maker", ["backend", "store"])
def test_sqlite_files_are_owner_only_even_with_a_permissive_umask(tmp_path: Path, maker: str) -> None:
    url = f"sqlite:///{tmp_path}/history.db"
    old = os.umask(0)  # a shared-host default: everything world-readable unless we say otherwise
    try:
        if maker == "backend":
            hm.configure(backends=["sql"], sql_url=url)
            hm.recorded(provider="p")(lambda model, messages: "ok")("m", [{"role": "user", "content": "q"}])
            assert hm.flush(timeout=10)
        else:
            Store(url, create=True).close()
    finally:
        os.umask(old)
    files = sorted(p for p in tmp_path.iterdir() if p.name.startswith("history.db"))
    assert tmp_path / "history.db" in files
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, f"{p.name} is {oct(stat.S_IMODE(p.stat().st_mode))}"


@pytest.mark.parametrize("url", [
    "mysql://u@h/db", "mongodb://localhost/history", "redis://localhost:6379/0", "http://example.com/history",
    "oracle+cx_oracle://u:p@h/db", "sqlite+aiosqlite:///history.db", "postgresql+asyncpg://u@h/db",
])
def test_cli_refuses_an_unknown_url_scheme_clearly(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _run_cli("--db", url, "stats")
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and out == ""
    assert err.startswith("historymw: unsupported ") and err.count("\n") == 1, err
    assert "sqlite:///" in err or "postgresql+psycopg://" in err  # says what is accepted
    if ":p@" in url:
        assert ":p@" not in err
    assert list(tmp_path.iterdir()) == []  # nothing created
