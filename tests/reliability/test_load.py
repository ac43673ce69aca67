"""Load: 16 threads x 5,000 calls and 1,000 concurrent asyncio tasks through the SQL backend.
Every call is stored, or stored + dropped equals calls recorded, exactly; no id is used twice;
scopes never leak between threads or tasks."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

import historymw as hm

THREADS, CALLS = 16, 3000  # 48,000 calls from 16 threads: the races show; the suite stays under 10 minutes
TASKS, TASK_CALLS = 1000, 20


@hm.recorded(provider="load")
def ask(model: str, messages: list[dict[str, str]]) -> str:
    return "re " + messages[0]["content"]


def _rows(url: str, engine: sa.Engine | None) -> list[tuple[str, str | None, Any, str]]:
    """(id, session, tags, first message) of every stored row, read with plain SQL: the first message
    through its `message_refs` (inline, or a digest into historymw_contents: decoded, since it may be
    compressed)."""
    from historymw.sql.contents import stored_messages

    sql = "SELECT id, session, tags, message_refs FROM historymw_calls"
    bodies_sql = "SELECT hash, body FROM historymw_contents"
    if engine is None:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            raw = [(i, s, json.loads(t) if t else {}, r) for i, s, t, r in conn.execute(sql).fetchall()]
            bodies = dict(conn.execute(bodies_sql).fetchall())
    else:
        with engine.connect() as conn:
            raw = [(i, s, t or {}, r) for i, s, t, r in conn.execute(sa.text(sql)).all()]
            bodies = {bytes(h): b for h, b in conn.execute(sa.text(bodies_sql)).all()}

    def first(refs: bytes) -> str:
        return str(stored_messages(refs, bodies)[0]["content"])

    return [(i, s, t, first(r)) for i, s, t, r in raw]


def _check_accounting(stored: int) -> hm.Stats:
    s = hm.stats()
    assert s.queued == 0 and s.errors == {}, s
    assert s.exported == stored, "a row was lost or two records shared an id (the insert ignores duplicates)"
    assert s.exported + s.dropped == s.recorded, s
    assert set(s.dropped_by_reason) <= {"queue_full"}, s.dropped_by_reason
    return s


def _thread_load(url: str, engine: sa.Engine | None, queue_size: int, queue_bytes: int | str,
                 figures: Any) -> None:
    # The ring holds every record here, so that its ids can be checked against the stored rows.
    hm.configure(backends=["ring", "sql"], sql_url=url, queue_size=queue_size, queue_bytes=queue_bytes,
                 maxlen=THREADS * CALLS, max_bytes="256MiB")
    start = threading.Barrier(THREADS)

    def work(t: int) -> None:
        start.wait()
        with hm.history(session=f"t{t}", tags={"thread": t}):
            for i in range(CALLS):
                if t % 2 and i % 10 == 9:
                    with hm.history(disable=True):  # must not switch off any other thread's recording
                        ask("m", [{"role": "user", "content": f"{t}:{i}"}])
                elif i % 7 == 0:
                    with hm.history(tags={"inner": i}):  # nested scope: merges, then unwinds
                        ask("m", [{"role": "user", "content": f"{t}:{i}"}])
                else:
                    ask("m", [{"role": "user", "content": f"{t}:{i}"}])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    made = THREADS * CALLS
    disabled = (THREADS // 2) * (CALLS // 10)
    assert hm.flush(timeout=120)

    rows = _rows(url, engine)
    s = _check_accounting(len(rows))
    assert s.recorded == made - disabled
    assert len({r[0] for r in rows}) == len(rows)
    ring_ids = [r.id for r in hm.ring()]
    assert len(ring_ids) == s.recorded and len(set(ring_ids)) == len(ring_ids)
    assert {r[0] for r in rows} <= set(ring_ids)
    for _id, session, tags, content in rows:
        t, i = map(int, content.split(":"))
        assert not (t % 2 and i % 10 == 9), "a call inside disable=True was recorded"
        expected_tags = {"thread": t, "inner": i} if i % 7 == 0 else {"thread": t}
        assert (session, tags) == (f"t{t}", expected_tags), (content, session, tags)
    per_thread = Counter(r[1] for r in rows)
    if s.dropped == 0:
        assert per_thread == {f"t{t}": CALLS - (CALLS // 10 if t % 2 else 0) for t in range(THREADS)}
    figures(made=made, recorded=s.recorded, stored=len(rows), dropped=s.dropped,
            dropped_by_reason=s.dropped_by_reason, disabled_not_recorded=disabled)


def test_16_threads_every_call_stored_exactly_once(sqlite_url: str, figures: Any) -> None:
    _thread_load(sqlite_url, None, queue_size=THREADS * CALLS, queue_bytes="256MiB", figures=figures)
    assert hm.stats().dropped == 0


def test_16_threads_with_the_default_queue_stored_plus_dropped_is_exact(sqlite_url: str, figures: Any) -> None:
    # The default queue (10,000) can fill faster than SQLite drains it (how much depends on the machine's
    # load): what does not fit is dropped and counted, never lost uncounted.
    _thread_load(sqlite_url, None, queue_size=hm.Settings().queue_size,
                 queue_bytes=hm.Settings().queue_bytes, figures=figures)


def test_16_threads_into_postgresql(pg: tuple[str, sa.Engine], figures: Any) -> None:
    url, check = pg
    _thread_load(url, check, queue_size=THREADS * CALLS, queue_bytes="256MiB", figures=figures)
    assert hm.stats().dropped == 0


@pytest.mark.parametrize("queue_size", [TASKS * TASK_CALLS, 500])
async def test_1000_concurrent_tasks_keep_their_own_scopes(sqlite_url: str, queue_size: int, figures: Any) -> None:
    hm.configure(backends=["sql"], sql_url=sqlite_url, queue_size=queue_size, queue_bytes="256MiB", batch_size=200)
    all_started = asyncio.Event()
    entered = 0

    @hm.recorded(provider="load")
    async def aask(model: str, messages: list[dict[str, str]]) -> str:
        await asyncio.sleep(0)  # every call yields: tasks interleave inside each other's calls
        return "re " + messages[0]["content"]

    async def task(k: int) -> None:
        nonlocal entered
        with hm.history(session=f"task-{k}", tags={"task": k}):
            entered += 1
            if entered == TASKS:
                all_started.set()
            await all_started.wait()  # all 1,000 scopes are open at once
            for i in range(TASK_CALLS):
                await aask("m", [{"role": "user", "content": f"{k}:{i}"}])

    await asyncio.gather(*(task(k) for k in range(TASKS)))
    made = TASKS * TASK_CALLS
    assert hm.flush(timeout=60)
    rows = _rows(sqlite_url, None)
    s = _check_accounting(len(rows))
    assert s.recorded == made
    assert len({r[0] for r in rows}) == len(rows)
    for _id, session, tags, content in rows:
        k = int(content.split(":")[0])
        assert (session, tags) == (f"task-{k}", {"task": k}), (content, session, tags)
    if queue_size >= made:
        assert len(rows) == made
    else:
        assert s.dropped > 0  # the small queue overflowed, and every drop was counted
    figures(made=made, stored=len(rows), dropped=s.dropped, dropped_by_reason=s.dropped_by_reason)
