"""The viewer as a person uses it: the real `historymw ui` on a free loopback port, driven by the
system's headless Chromium through Playwright."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import historymw as hm

from ._data import XSS, XSS_SESSION
from ._server import Server


def _db_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _ids(page: Any) -> list[str]:
    return [str(x) for x in page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.id)")]


def test_each_page_opens(server: Server, page: Any) -> None:
    page.goto(server.base + "/")
    assert page.inner_text("h1") == "Calls"
    assert len(_ids(page)) == 50
    page.click("header nav >> text=Sessions")
    assert page.inner_text("h1") == "Sessions"
    assert page.locator("table.sessions tbody tr").count() >= 5
    page.click("table.sessions tbody tr >> nth=1 >> a")
    assert page.inner_text("h1").startswith("Session")
    assert page.locator(".turn").count() > 10
    page.click("header nav >> text=Overview")
    assert page.inner_text("h1") == "Overview"
    assert page.locator("svg.chart").count() == 4
    assert page.locator("svg.chart rect.bar-ok").count() > 10  # the calls chart has bars across the day
    assert page.locator("svg.chart polyline.line-p95").count() >= 1
    assert int(page.inner_text("#total-calls").replace(",", "")) > 500
    assert page.console_errors == []  # the strict CSP blocks nothing the viewer itself needs


def test_filter_by_model_and_by_session(server: Server, page: Any, history_db: str) -> None:
    page.goto(server.base + "/")
    page.fill("input[name=model]", "claude-3-5-sonnet")
    page.click("form.filters button")
    page.wait_for_url("**model=claude-3-5-sonnet**")
    models = page.eval_on_selector_all("#rows td.model", "tds => tds.map(t => t.firstChild.textContent.trim())")
    assert len(models) == 50 and set(models) == {"claude-3-5-sonnet"}

    page.goto(server.base + "/")
    page.fill("input[name=session]", "bob-77a1")
    page.select_option("select[name=status]", "ok")
    page.click("form.filters button")
    page.wait_for_url("**session=bob-77a1**")
    ids = _ids(page)
    with sqlite3.connect(_db_path(history_db)) as conn:
        expected = {r[0] for r in conn.execute("SELECT id FROM historymw_calls WHERE session='bob-77a1' "
                                               "AND status='ok'")}
    assert ids and set(ids) <= expected
    assert set(page.eval_on_selector_all("#rows td.session", "tds => tds.map(t => t.textContent.trim())")) \
        == {"bob-77a1"}


def test_page_through_every_call(server: Server, page: Any, history_db: str) -> None:
    with sqlite3.connect(_db_path(history_db)) as conn:
        expected = [r[0] for r in conn.execute("SELECT id FROM historymw_calls ORDER BY started_at DESC, id DESC")]
    assert len(expected) >= 1001
    page.goto(server.base + "/?limit=100")
    seen: list[str] = []
    for _ in range(100):
        seen += _ids(page)
        older = page.locator("#older")
        if older.count() == 0:
            break
        with page.expect_navigation():
            older.click()
    assert seen == expected  # every call once, newest first, none skipped across page boundaries
    last_start = len(expected) - len(_ids(page))
    with page.expect_navigation():
        page.click("text=‹ Newer")  # and back again
    assert _ids(page) == expected[last_start - 100:last_start]


def test_open_a_call(server: Server, page: Any) -> None:
    page.goto(server.base + "/?model=gpt-4o&status=error")
    page.click("#rows tr >> nth=0 >> td.when a")
    page.wait_for_url("**/calls/**")
    assert page.locator(".badge.err").first.inner_text() == "error"
    assert page.locator(".error-box h2").inner_text() in ("TimeoutError", "RuntimeError")
    assert page.locator(".msg.role-system").inner_text().endswith("You are a concise assistant.")
    assert page.locator(".msg.role-user").count() >= 1
    params = page.inner_text("aside.facts")
    assert "[REDACTED]" in params and "sk-test" not in params  # the key never reached the database

    page.goto(server.base + "/?q=Thanks.+Now+the+short+version")  # a conversation with a tool call
    page.click("#rows tr >> nth=0 >> td.when a")
    assert "search_docs" in page.inner_text(".tool-call")
    fold = page.locator(".msg.role-tool details.fold")
    assert fold.count() == 1 and not fold.get_attribute("open")  # the long tool result is folded
    fold.locator("summary").click()
    assert fold.get_attribute("open") is not None


def test_a_new_call_appears_live(server: Server, page: Any, history_db: str) -> None:
    page.goto(server.base + "/")
    page.evaluate("window.__same_page = true")
    marker = f"live call {time.time_ns()}"
    hm.configure(backends=["sql"], sql_url=history_db)
    with hm.history(session="live"), hm.call(provider="openai", model="gpt-4o-mini",
                                             messages=[{"role": "user", "content": marker}]) as c:
        c.output(text="appears without a reload")
    assert hm.flush(timeout=10)
    hm.configure()
    page.wait_for_selector(f"#rows tr:first-child >> text={marker}", timeout=20_000)
    assert page.evaluate("window.__same_page") is True  # no reload happened


def test_recorded_script_is_never_run(server: Server, page: Any) -> None:
    page.goto(server.base + f"/?session={XSS_SESSION}")
    assert XSS.split("<img")[0] in page.inner_text("#rows")  # shown as text
    assert page.evaluate("typeof window.__pwned") == "undefined"
    page.click("#rows tr >> nth=0 >> td.when a")
    page.wait_for_url("**/calls/**")
    assert "<script>window.__pwned=1</script>" in page.inner_text(".msg.role-user")
    assert page.locator("main script, main img").count() == 0
    assert page.locator("a[href^='javascript']").count() == 0
    page.goto(server.base + f"/session?id={XSS_SESSION}")
    page.goto(server.base + "/?tag=feature%3D%3Cb%3Ebold%3C%2Fb%3E")
    assert _ids(page)
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_the_token_guards_every_page(history_db: str, page: Any) -> None:
    s = Server(history_db, "--token", "correct-horse-battery")
    try:
        assert s.url.endswith("/?token=correct-horse-battery")
        resp = page.goto(s.base + "/overview")
        assert resp.status == 401 and "Token required" in page.inner_text("h1")
        page.goto(s.base + "/?token=wrong")
        assert "Token required" in page.inner_text("h1")
        page.goto(s.url)  # what the command printed: trades the token for a cookie
        assert page.inner_text("h1") == "Calls" and "token=" not in page.url
        page.click("header nav >> text=Overview")
        assert page.inner_text("h1") == "Overview"
    finally:
        s.stop()
