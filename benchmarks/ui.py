"""The viewer over a big history: server time per page and the server's memory while paging.

    python benchmarks/ui.py                      # 1,000,000 rows in SQLite and (if reachable) PostgreSQL
    python benchmarks/ui.py --rows 20000         # CI's quick size
    python benchmarks/ui.py --postgres URL       # default: $HISTORYMW_TEST_POSTGRES_URL

Rows are bulk-inserted (executemany / COPY) into tables the writer itself creates
(`ensure_schema`, so the same indexes), spread over 30 days; then the session and
rollup aggregates the writer keeps as it goes are filled the way the migration
fills them (`aggregates.backfill`). The real `historymw ui`
serves them in a subprocess; each figure is the server's own time for the page
(its Server-Timing header: queries plus rendering), the median of several requests
after one warm-up, and the server process's CPU time per request (PostgreSQL's own
work is in its server, not in that figure). RSS is the server's VmRSS while it
pages through 200 pages.
Targets: every page <= 100 ms; RSS flat while paging.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "ui"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, machine_line
from _server import Server

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "llama-3.1-8b"]
PROVIDERS = {"gpt-4o-mini": "openai", "gpt-4o": "openai", "claude-3-5-sonnet": "anthropic", "llama-3.1-8b": "local"}
SPAN_S = 30 * 86400
BATCH = 20_000
REPEAT = 5


def _rows(n: int, start: float, seed: int = 1) -> Any:
    rnd = random.Random(seed)
    for i in range(n):
        started = start + SPAN_S * i / n
        model = MODELS[i % 4]
        dur = rnd.lognormvariate(-0.7, 0.6)
        err = i % 37 == 0
        tin, tout = 30 + i % 50, 20 + i % 30
        yield (f"{int(started * 1e6):016x}{i:016x}", started, started + dur, dur, PROVIDERS[model], model,
               "chat", f"user-{i % 1000}" if i % 4 else None, "error" if err else "ok",
               "TimeoutError" if err else None, "upstream timed out" if err else None,
               None if err else f"Answer {i}: the order ships on day {i % 28 + 1}.", tin, tout, tin + tout,
               (tin + tout) * 1e-6, i % 6 == 0, "manual", 600,
               json.dumps([{"role": "user", "content": f"Question {i}: when does order {i % 9973} ship?"}]),
               json.dumps({"feature": ["search", "chat", "summarize"][i % 3]}))


COLS = ("id", "started_at", "ended_at", "duration_s", "provider", "model", "operation", "session", "status",
        "error_type", "error_message", "output_text", "input_tokens", "output_tokens", "total_tokens", "cost",
        "stream", "source", "size_bytes", "messages", "tags")


def fill_sqlite(path: Path, n: int) -> str:
    import sqlite3

    from historymw.sql import engine as sql_engine
    from historymw.sql import schema

    url = f"sqlite:///{path}"
    eng = sql_engine.make_engine(url, create=True)
    schema.ensure_schema(eng, create=True)  # the writer's tables and indexes
    _drop_indexes(eng)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    sql = f"INSERT INTO historymw_calls ({', '.join(COLS)}) VALUES ({', '.join('?' * len(COLS))})"
    rows = _rows(n, time.time() - SPAN_S)
    while True:
        batch = [r for _, r in zip(range(BATCH), rows, strict=False)]
        if not batch:
            break
        conn.executemany(sql, batch)
        conn.commit()
    conn.close()
    _create_indexes(eng)
    _aggregate(eng)
    conn = sqlite3.connect(path)
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    eng.dispose()
    return url


def _aggregate(eng: Any) -> None:
    """What the writer keeps as it inserts (bulk loading bypassed it): sessions and the overview's rollup."""
    from historymw.sql.aggregates import backfill
    from historymw.sql.engine import WRITE

    t = time.perf_counter()
    with eng.connect().execution_options(**WRITE) as conn, conn.begin():
        backfill(conn)
    print(f"  aggregates filled in {time.perf_counter() - t:.0f} s", flush=True)


def _drop_indexes(eng: Any) -> None:
    """Bulk loading is faster into a table without its secondary indexes; they are built after."""
    from historymw.sql.schema import calls

    with eng.begin() as conn:
        for ix in calls.indexes:
            ix.drop(conn)


def _create_indexes(eng: Any) -> None:
    from historymw.sql.schema import calls

    with eng.begin() as conn:
        for ix in calls.indexes:  # exactly the writer's indexes
            ix.create(conn)


def fill_postgres(base_url: str, n: int) -> tuple[str, Any, str]:
    import datetime as dt

    import sqlalchemy as sa

    from historymw.sql import engine as sql_engine
    from historymw.sql import schema

    name = f"hmbench_ui_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in base_url else "?"
    url = f"{base_url}{sep}options={quote(f'-csearch_path={name}')}"
    eng = sql_engine.make_engine(url, create=True)
    schema.ensure_schema(eng, create=True)
    _drop_indexes(eng)
    utc = dt.timezone.utc
    with eng.raw_connection().driver_connection as raw:  # psycopg 3: COPY in text format
        with raw.cursor() as cur, cur.copy(f"COPY historymw_calls ({', '.join(COLS)}) FROM STDIN") as copy:
            for r in _rows(n, time.time() - SPAN_S):
                r = list(r)
                r[1], r[2] = dt.datetime.fromtimestamp(r[1], utc), dt.datetime.fromtimestamp(r[2], utc)
                copy.write_row(r)
        raw.commit()
    _create_indexes(eng)
    _aggregate(eng)
    with eng.raw_connection().driver_connection as raw:
        raw.execute("ANALYZE")
        raw.commit()
    eng.dispose()
    return url, admin, name


def server_ms(url: str) -> tuple[float, str]:
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read().decode()
        timing = r.headers["Server-Timing"]
    return float(re.search(r"dur=([\d.]+)", timing).group(1)), body  # type: ignore[union-attr]


def cpu_s(pid: int) -> float:
    """The server process's CPU time so far (user + system): less disturbed by a busy machine than wall time."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, pid: int, repeat: int) -> dict[str, Any]:
    try:
        server_ms(url)  # warm-up: first hit fills caches (the model list, SQLite's page cache)
        c0 = cpu_s(pid)
        runs = [server_ms(url)[0] for _ in range(repeat)]
    except urllib.error.HTTPError as exc:  # the page the server gave instead (a query stopped at its timeout)
        text = exc.read().decode(errors="replace")
        m = re.search(r'<p class="message">(.*?)</p>', text, re.S)
        return {"error": f"HTTP {exc.code}: {m.group(1).strip() if m else text[:200]}"}
    cpu = (cpu_s(pid) - c0) / repeat * 1000
    return {"median_ms": statistics.median(runs), "min_ms": min(runs), "max_ms": max(runs), "cpu_ms": cpu}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def deep_cursor(db_url: str, fraction: float) -> str:
    """The cursor of the row `fraction` of the way down (found once, with OFFSET, outside the server)."""
    import sqlalchemy as sa

    from historymw.sql.schema import calls
    from historymw.ui import queries

    eng = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with eng.connect() as c:
        n = c.execute(sa.select(sa.func.count()).select_from(calls)).scalar_one()
        row = c.execute(sa.select(calls.c.started_at, calls.c.id)
                        .order_by(calls.c.started_at.desc(), calls.c.id.desc())
                        .offset(int(n * fraction)).limit(1)).one()
    eng.dispose()
    return queries.Cursor(row[0], row[1]).encode()


def bench(label: str, db_url: str, repeat: int, pages_down: int) -> dict[str, Any]:
    srv = Server(db_url)
    try:
        base = srv.base
        deep = quote(deep_cursor(db_url, 0.9), safe="")
        pages = {
            "first page": "/",
            "filtered page (model)": "/?model=claude-3-5-sonnet",
            "filtered page (session)": "/?session=user-417",
            "filtered page (errors, 24h)": "/?status=error&range=24h",
            "deep page (90% down)": f"/?before={deep}",
            "deep page, filtered (model)": f"/?model=gpt-4o&before={deep}",
            "overview (last 24 h of activity)": "/overview",
            "overview, filtered (model)": "/overview?model=gpt-4o",
            "overview (30 days)": "/overview?range=30d",
            "overview, filtered (session: scans)": "/overview?session=user-417&range=7d",
            "one call": None,
            "sessions (7 days)": "/sessions",
            "text search, common": "/?q=ships+on+day",
        }
        _, first = server_ms(base + "/")
        call_id = re.search(r'data-id="([0-9a-f]+)"', first).group(1)  # type: ignore[union-attr]
        pages["one call"] = f"/calls/{call_id}"
        out: dict[str, Any] = {"pages": {}}
        for name, path in pages.items():
            m = out["pages"][name] = measure(base + str(path), srv.proc.pid, repeat)
            if "error" in m:
                print(f"  {label:10s} {name:34s} {m['error']}", flush=True)
                continue
            print(f"  {label:10s} {name:34s} {m['median_ms']:8.1f} ms (min {m['min_ms']:.1f}, max {m['max_ms']:.1f}; "
                  f"server CPU {m['cpu_ms']:.0f} ms)", flush=True)
        # RSS while a user pages down, sampled every tenth of the way.
        samples = [rss_kib(srv.proc.pid)]
        url = base + "/"
        for i in range(pages_down):
            _, body = server_ms(url)
            m = re.search(r'href="(/\?[^"]*before=[^"]+)" rel="next"', body)
            if not m:
                break
            url = base + m.group(1).replace("&amp;", "&")
            if i % max(pages_down // 10, 1) == 0:
                samples.append(rss_kib(srv.proc.pid))
        out["rss_kib"] = samples
        print(f"  {label:10s} RSS while paging {pages_down} pages (KiB): {samples}", flush=True)
        return out
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="20,000 rows (CI)")
    ap.add_argument("--postgres", default=os.environ.get("HISTORYMW_TEST_POSTGRES_URL"))
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--sqlite-file", type=Path, help="fill this SQLite file once and reuse it on later runs")
    args = ap.parse_args()
    n = 20_000 if args.quick else args.rows
    repeat, pages_down = (3, 40) if args.quick else (REPEAT, 200)
    res: dict[str, Any] = {"rows": n, "machine": machine(), "results": {}}
    print(f"historymw ui over {n:,} rows; {machine_line(res['machine'])}; load {res['machine']['load']}")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        path = args.sqlite_file or Path(tmp) / "big.db"
        if args.sqlite_file and path.exists():
            url = f"sqlite:///{path}"
            print(f"  sqlite     reusing {path}", flush=True)
        else:
            url = fill_sqlite(path, n)
            print(f"  sqlite     filled in {time.perf_counter() - t:.0f} s", flush=True)
        res["results"]["sqlite"] = bench("sqlite", url, repeat, pages_down)
    if args.postgres:
        t = time.perf_counter()
        url, admin, name = fill_postgres(args.postgres, n)
        print(f"  postgresql filled in {time.perf_counter() - t:.0f} s", flush=True)
        try:
            res["results"]["postgresql"] = bench("postgresql", url, repeat, pages_down)
        finally:
            import sqlalchemy as sa

            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
            admin.dispose()
    else:
        print("  postgresql skipped: pass --postgres URL or set HISTORYMW_TEST_POSTGRES_URL")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
