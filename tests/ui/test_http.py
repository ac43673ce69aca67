"""The viewer over plain HTTP (Starlette's TestClient on the real app and a real database): bad input
gets a clear page or one CLI line, pages are keyset-paged, the database is only ever read."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import historymw as hm
from historymw.cli import main
from historymw.ui import command
from historymw.ui.app import CSP, create_app
from historymw.ui.db import open_database

from ._data import write_history

pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (in the dev extra)")
from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('ui_http') / 'history.db'}"
    write_history(url, 120)
    return url


@pytest.fixture
def client(small_db: str) -> Iterator[TestClient]:
    db = open_database(small_db)
    with TestClient(create_app(db), base_url="http://127.0.0.1:8765") as c:
        yield c
    db.engine.dispose()


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


# -- one CLI line for what cannot be served ---------------------------------------------------


def test_missing_database_is_one_line_and_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nothing-here.db"
    code, err = _cli(capsys, "--db", f"sqlite:///{path}", "ui", "--port", "0")
    assert code == 3 and err.count("\n") == 1 and f"no history database at {path}" in err
    assert not path.exists()


def test_foreign_tables_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    code, err = _cli(capsys, "--db", f"sqlite:///{path}", "ui", "--port", "0")
    assert code == 3 and err.count("\n") == 1 and "not a historymw history database" in err
    with sqlite3.connect(path) as conn:  # nothing was added to someone else's database
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["orders"]


def test_unreachable_postgresql_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("psycopg", reason="needs the postgres extra")
    code, err = _cli(capsys, "--db", "postgresql+psycopg://postgres@127.0.0.1:1/test", "ui", "--port", "0")
    assert code == 3 and err.count("\n") == 1 and "database error at postgresql+psycopg://" in err
    assert "Traceback" not in err


def test_non_loopback_host_needs_a_token(small_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(capsys, "--db", small_db, "ui", "--host", "0.0.0.0", "--token", "")
    assert code == 2 and err.count("\n") == 1 and "refusing to serve on 0.0.0.0 without a token" in err
    # Without --token a non-loopback host gets a generated one (printed with the URL), never none.
    generated = command.access_token("0.0.0.0", None)
    assert generated is not None and len(generated) >= 24
    assert command.access_token("0.0.0.0", None) != generated
    assert command.access_token("192.168.1.5", "given-token") == "given-token"
    assert command.access_token("127.0.0.1", None) is None and command.access_token("::1", None) is None
    assert command.access_token("localhost", None) is None


def test_bad_trace_url_and_port_are_one_line(small_db: str, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTORYMW_UI_TRACE_URL", "javascript:alert('{trace_id}')")
    code, err = _cli(capsys, "--db", small_db, "ui", "--port", "0")
    assert code == 2 and "HISTORYMW_UI_TRACE_URL" in err and err.count("\n") == 1
    monkeypatch.delenv("HISTORYMW_UI_TRACE_URL")
    code, err = _cli(capsys, "--db", small_db, "ui", "--port", "70000")
    assert code == 2 and "--port must be 0-65535" in err


# -- pages ------------------------------------------------------------------------------------


def test_every_response_carries_the_strict_policy(client: TestClient) -> None:
    for path in ("/", "/overview", "/sessions", "/calls/nope", "/?before=garbage", "/static/app.css"):
        r = client.get(path)
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP and "script-src 'self'" in CSP
    assert "<script>" not in client.get("/").text.replace('<script src="/static/app.js" defer></script>', "")


@pytest.mark.parametrize(("path", "status", "says"), [
    ("/?before=garbage", 400, "not a page cursor"),
    ("/?status=maybe", 400, "status must be ok or error"),
    ("/?since=yesterday-ish", 400, "bad since time"),
    ("/?tag=novalue", 400, "a tag filter is key=value"),
    ("/?limit=100000", 400, "limit must be one of"),
    ("/overview?range=forever", 400, "range must be one of"),
    ("/calls/0123456789abcdef", 404, "no call with id"),
    ("/session?id=nobody", 404, "no calls of session"),
    ("/session", 400, "which session?"),
])
def test_bad_input_is_a_clear_page(client: TestClient, path: str, status: int, says: str) -> None:
    r = client.get(path)
    assert r.status_code == status
    assert says in r.text and "Traceback" not in r.text


def test_filters_select_what_they_name(client: TestClient, small_db: str) -> None:
    import re

    def rows(path: str) -> list[str]:
        r = client.get(path)
        assert r.status_code == 200, r.text
        return re.findall(r'<tr class="[^"]*" data-id="([0-9a-f]+)"', r.text)

    with sqlite3.connect(small_db.removeprefix("sqlite:///")) as conn:
        def ids(where: str, *params: Any) -> set[str]:
            return {r[0] for r in conn.execute(f"SELECT id FROM historymw_calls WHERE {where}", params)}

        assert set(rows("/?model=gpt-4o&limit=200")) == ids("model = ?", "gpt-4o")
        assert set(rows("/?provider=anthropic&limit=200")) == ids("provider = ?", "anthropic")
        assert set(rows("/?status=error&limit=200")) == ids("status = 'error'")
        assert set(rows("/?tag=feature%3Dsummarize&limit=200")) == ids("tags->>'feature' = 'summarize'")
        assert set(rows("/?q=BOM+DIA&limit=200")) == ids("output_text LIKE '%Bom dia%'")  # any case
        # % and _ are literal characters in a search, not wildcards
        assert rows("/?q=%25") == [] and rows("/?q=Answer_%23") == [] and rows("/?q=Answer+%23")
        first, last = conn.execute("SELECT min(started_at), max(started_at) FROM historymw_calls").fetchone()
        mid = (first + last) / 2
        assert set(rows(f"/?since={mid}&limit=200")) == ids("started_at >= ?", mid)


def test_keyset_pages_keep_ties_in_order(tmp_path: Path) -> None:
    """Calls that started at the same instant are neither repeated nor skipped at page edges."""
    url = f"sqlite:///{tmp_path / 'ties.db'}"
    hm.configure(backends=["sql"], sql_url=url)
    for i in range(130):
        with hm.call(provider="p", model="m", messages=[{"role": "user", "content": str(i)}],
                     started_at=1_700_000_000.0 + (i // 40)) as c:
            c.output(text="x")
    assert hm.flush(timeout=10)
    hm.configure()
    from historymw.ui import queries

    db = open_database(url)
    seen, p = [], queries.page(db, queries.Query(), limit=25)
    while True:
        seen += [r["id"] for r in p.rows]
        if p.older is None:
            break
        p = queries.page(db, queries.Query(), before=p.older, limit=25)
    with sqlite3.connect(tmp_path / "ties.db") as conn:
        expected = [r[0] for r in conn.execute("SELECT id FROM historymw_calls ORDER BY started_at DESC, id DESC")]
    assert seen == expected and len(seen) == 130
    back = queries.page(db, queries.Query(), after=queries.Cursor.decode(p.newest.encode()), limit=25)  # type: ignore[union-attr]
    assert [r["id"] for r in back.rows] == expected[-5 - 25:-5]
    db.engine.dispose()


def test_the_trace_id_links_to_the_apm(tmp_path: Path) -> None:
    sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="needs the otel extra")
    url = f"sqlite:///{tmp_path / 'traced.db'}"
    hm.configure(backends=["sql"], sql_url=url)
    tracer = sdk.TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span, \
            hm.call(provider="p", model="m", messages=[{"role": "user", "content": "hi"}]) as c:
        c.output(text="x")
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert hm.flush(timeout=10)
    hm.configure()
    db = open_database(url)
    call_id = sqlite3.connect(tmp_path / "traced.db").execute("SELECT id FROM historymw_calls").fetchone()[0]
    with TestClient(create_app(db, trace_url="https://apm.example/trace/{trace_id}"),
                    base_url="http://127.0.0.1") as c:
        html = c.get(f"/calls/{call_id}").text
    assert f'href="https://apm.example/trace/{trace_id}"' in html
    with TestClient(create_app(db), base_url="http://127.0.0.1") as c:
        assert trace_id in (html := c.get(f"/calls/{call_id}").text)
        assert "apm.example" not in html
    db.engine.dispose()


def test_overview_follows_the_filters(client: TestClient) -> None:
    import re

    def total(path: str) -> int:
        m = re.search(r'id="total-calls">([\d,]+)<', client.get(path).text)
        assert m, path
        return int(m.group(1).replace(",", ""))

    everything = total("/overview?range=all")
    assert everything == 121
    assert 0 < total("/overview?range=all&model=gpt-4o") < everything
    assert total("/overview?range=all&status=error") == client.get("/?status=error&limit=200").text.count("data-id=")


# -- access ------------------------------------------------------------------------------------


def test_only_loopback_host_headers_without_a_token(client: TestClient) -> None:
    assert client.get("/", headers={"host": "localhost:8765"}).status_code == 200
    assert client.get("/", headers={"host": "[::1]:8765"}).status_code == 200
    r = client.get("/", headers={"host": "attacker.example:8765"})  # DNS rebinding
    assert r.status_code == 403


def test_token_by_query_cookie_or_bearer(small_db: str) -> None:
    db = open_database(small_db)
    with TestClient(create_app(db, token="s3cret"), base_url="http://192.168.1.5:8765") as c:
        assert c.get("/").status_code == 401
        assert c.get("/", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/", headers={"authorization": "Bearer s3cret"}).status_code == 200
        r = c.get("/sessions?token=s3cret", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/sessions"
        assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
        assert c.get("/overview").status_code == 200  # the cookie now
    db.engine.dispose()


# -- read-only --------------------------------------------------------------------------------


def test_sqlite_is_opened_read_only(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    write_history(f"sqlite:///{path}", 30, hostile=False)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")  # as a copied or archived file would be
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    db = open_database(f"sqlite:///{path}")
    with TestClient(create_app(db), base_url="http://127.0.0.1") as c:
        for p in ("/", "/overview?range=all", "/sessions?range=all", "/?q=x"):
            assert c.get(p).status_code == 200
    import sqlalchemy as sa

    with pytest.raises(sa.exc.OperationalError, match=r"readonly|read-only|query_only"), db.engine.connect() as conn:
        conn.exec_driver_sql("DELETE FROM historymw_calls")
    db.engine.dispose()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not Path(str(path) + "-wal").exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_postgresql_pages_read_only(pg: tuple[str, Any]) -> None:
    url, check = pg
    write_history(url, 80, hostile=False)
    db = open_database(url)
    assert db.dialect == "postgresql"
    from historymw.ui import queries

    seen, p = [], queries.page(db, queries.Query(), limit=30)
    while True:
        seen += [r["id"] for r in p.rows]
        if p.older is None:
            break
        p = queries.page(db, queries.Query(), before=p.older, limit=30)
    import sqlalchemy as sa

    with check.connect() as conn:
        expected = [r[0] for r in conn.execute(sa.text("SELECT id FROM historymw_calls "
                                                       "ORDER BY started_at DESC, id DESC"))]
    assert seen == expected
    with TestClient(create_app(db), base_url="http://127.0.0.1") as c:
        for path in ("/", "/?model=gpt-4o&q=ANSWER", "/overview?range=all", "/sessions?range=all",
                     "/session?id=bob-77a1", "/?tag=feature%3Dchat", f"/calls/{expected[3]}"):
            r = c.get(path)
            assert r.status_code == 200, (path, r.text[-500:])
        assert c.get("/overview?range=all").text.count("bar-ok") > 5
    with pytest.raises(sa.exc.InternalError, match="read-only"), db.engine.connect() as conn:
        conn.exec_driver_sql("DELETE FROM historymw_calls")
    with check.begin() as conn:  # the table goes away under a running viewer
        conn.execute(sa.text("DROP TABLE historymw_calls"))
    with TestClient(create_app(db), base_url="http://127.0.0.1") as c:
        r = c.get("/")
        assert r.status_code == 503 and "database error at postgresql+psycopg://" in r.text
        assert "historymw_calls" in r.text and "Traceback" not in r.text
    db.engine.dispose()


def test_the_quickstart_database_shows_its_calls(tmp_path: Path) -> None:
    """README's quickstart writes ./historymw.db; `historymw ui` in that directory (the default URL) shows it."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTORYMW_")}
    subprocess.run([sys.executable, str(root / "examples" / "quickstart.py")], cwd=tmp_path, env=env,
                   check=True, capture_output=True, timeout=120)
    from historymw.cli import _DEFAULT_URL

    db = open_database(_DEFAULT_URL.replace("sqlite:///", f"sqlite:///{tmp_path}/"))
    with TestClient(create_app(db), base_url="http://127.0.0.1") as c:
        html = c.get("/").text
        assert html.count("data-id=") == 8 and "What is six times seven?" in html and "the answer is 42" in html
        assert "TimeoutError: the fake model timed out" in html
        assert c.get("/session?id=alice").text.count('class="turn"') == 4
    db.engine.dispose()


def test_postgresql_pages_cost_one_round_trip_per_query(pg: tuple[str, Any], tmp_path: Path) -> None:
    """The viewer reads PostgreSQL as the store's readers do: each of a page's queries is one round
    trip (no pool pre-ping, no BEGIN/ROLLBACK around it), in read-only sessions."""
    import sqlalchemy as sa
    from _pgtrace import round_trips

    from historymw.ui import queries

    url, _ = pg
    write_history(url, 40, hostile=False)
    db = open_database(url)
    statements: list[str] = []
    sa.event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    trace = tmp_path / "trace"
    with open(trace, "w") as fh:
        with db.engine.connect() as conn:  # the pool's one connection (reads are sequential), traced
            conn.connection.dbapi_connection.pgconn.trace(fh.fileno())
        statements.clear()
        p = queries.page(db, queries.Query(model="gpt-4o"), limit=5)
        call = queries.get_call(db, p.rows[0]["id"])
        with db.engine.connect() as conn:
            conn.connection.dbapi_connection.pgconn.untrace()
    exchanges = round_trips(trace.read_text())
    assert len(statements) >= 2 and len(exchanges) == len(statements), exchanges
    assert not any("BEGIN" in e or "ROLLBACK" in e for e in exchanges)
    assert call is not None and call["model"] == "gpt-4o"
    with pytest.raises(sa.exc.InternalError, match="read-only"), db.engine.connect() as conn:
        conn.exec_driver_sql("DELETE FROM historymw_calls")
    db.engine.dispose()


def test_postgresql_pages_survive_a_server_restart(pg: tuple[str, Any]) -> None:
    """Without a pre-ping, a pooled connection the server dropped is found dead by a page's query:
    the viewer replaces it and the page is served (200), not an error page."""
    from reliability._proxy import Proxy

    url, _ = pg
    write_history(url, 20, hostile=False)
    proxy = Proxy.for_url(url)
    try:
        proxy.restore()
        db = open_database(proxy.url(url))
        with TestClient(create_app(db), base_url="http://127.0.0.1") as c:
            assert c.get("/").status_code == 200
            proxy.cut()  # the pooled connections die
            proxy.restore()
            for path in ("/", "/overview?range=all", "/sessions?range=all"):
                r = c.get(path)
                assert r.status_code == 200, (path, r.text[-500:])
            proxy.cut()  # and while the server is down, a page says so in one line
            r = c.get("/")
            assert r.status_code == 503 and "database error at postgresql+psycopg://" in r.text
        db.engine.dispose()
    finally:
        proxy.close()
