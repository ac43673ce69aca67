"""Records per second persisted end to end into SQLite and PostgreSQL, against the raw driver.

    python benchmarks/sql_throughput.py [--n 100000] [--postgres URL]

End to end: N recorded calls (a @hm.recorded function, two chat messages,
params, a str answer) with backends=["sql"], timed from the first call until
hm.flush() returns, i.e. until every row is committed. The queue is sized to
hold all N so nothing is dropped; the caller and the export worker share one
interpreter (and its GIL), as they do in an application.

Baseline, in the same run: the raw driver (sqlite3 / psycopg 3) inserting the
same rows, already built as tuples, with executemany in 512-row transactions
into the same table (same indexes, same ON CONFLICT statement).

Also printed: the caller's cost per recorded call (ring only = the core; sql
with an idle worker = core + queue hand-off), and where the worker's time per
record goes: preparing the rows (sealing and row building, one pass) and the
insert (historymw's multi-row statements next to the driver's executemany).

PostgreSQL runs when --postgres or HISTORYMW_TEST_POSTGRES_URL gives a URL
(each run uses a fresh schema, dropped at the end).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import historymw as hm
from historymw.backends.sql import SQLBackend
from historymw.sql import engine as sql_engine
from historymw.sql import schema, write
from historymw.sql.batch import Built, build_rows

MSGS = [{"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is six times seven? Answer with a number."}]
ANSWER = "42. Six times seven is forty-two."
BATCH = 512


def fake_llm(model: str, messages: list[dict[str, str]], **params: Any) -> str:
    return ANSWER


ask = hm.recorded(provider="bench")(fake_llm)


def make_drafts(n: int) -> list[dict[str, Any]]:
    """n drafts exactly as the hot path captures them (through the ring)."""
    hm.configure(backends=["ring"], maxlen=n, max_bytes=2**34)
    for _ in range(n):
        ask("bench-model", MSGS, temperature=0.2, max_tokens=64)
    drafts = hm.ring().drafts()
    hm.configure()
    return drafts


Rows = tuple[tuple[str, ...], list[tuple[Any, ...]]]


def baseline_rows(n: int) -> tuple[Rows, Rows]:
    """(columns, rows) the raw driver inserts, for SQLite and for PostgreSQL: the rows historymw
    writes for n recorded calls, the columns these calls have (a hand-written insert would not bind
    twenty NULLs either), in the order historymw binds them. PostgreSQL binds bools as bools;
    SQLite's rows hold them as the 0/1 it stores. Same ids, same order."""
    drafts = make_drafts(n)
    ((columns, rows),) = build_rows(drafts).groups.items()
    ((pg_columns, pg_rows),) = build_rows(drafts, postgres=True).groups.items()
    return (columns, rows), (pg_columns, pg_rows)


def end_to_end(url: str, n: int) -> float:
    """Records per second, first call to the last row committed."""
    hm.configure(backends=["sql"], sql_url=url, queue_size=n, queue_bytes=2**34, batch_size=BATCH,
                 flush_interval=0.05)
    for _ in range(200):  # warm up: schema created, connection open, code paths hot
        ask("bench-model", MSGS, temperature=0.2, max_tokens=64)
    assert hm.flush(timeout=60)
    t0 = time.perf_counter()
    for _ in range(n):
        ask("bench-model", MSGS, temperature=0.2, max_tokens=64)
    result = hm.flush(timeout=600)
    elapsed = time.perf_counter() - t0
    s = hm.stats()
    hm.shutdown()
    hm.configure()
    if not result or s.dropped or s.exported != n + 200:
        sys.exit(f"end-to-end run lost records: {result} {s}")
    return n / elapsed


def raw_sqlite(path: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    sql = write.insert_statement(sql_engine.make_engine(f"sqlite:///{path}", create=False).dialect, columns)
    t0 = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows[i:i + BATCH])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return len(rows) / elapsed


def raw_postgres(url: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> float:
    import psycopg

    eng = sql_engine.make_engine(url, create=False)
    sql = write.insert_statement(eng.dialect, columns)
    dsn = eng.url.set(drivername="postgresql").render_as_string(hide_password=False)
    eng.dispose()
    with psycopg.connect(dsn) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            for i in range(0, len(rows), BATCH):
                cur.executemany(sql, rows[i:i + BATCH])
                conn.commit()
        elapsed = time.perf_counter() - t0
    return len(rows) / elapsed


def in_fresh_schema(base_url: str, fn: Callable[[str], float]) -> float:
    """Run fn(url) against a new PostgreSQL schema, dropped afterwards."""
    import sqlalchemy as sa

    admin = sa.create_engine(sql_engine.parse_url(base_url))
    name = f"hmbench_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(sa.schema.CreateSchema(name))
    sep = "&" if "?" in base_url else "?"
    try:
        return fn(f"{base_url}{sep}options={quote(f'-csearch_path={name}')}")
    finally:
        with admin.begin() as conn:
            conn.execute(sa.schema.DropSchema(name, cascade=True))
        admin.dispose()


def raw_postgres_best(base_url: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> float:
    def run(url: str) -> float:
        schema.ensure_schema(sql_engine.make_engine(url, create=True))
        return raw_postgres(url, columns, rows)

    return max(in_fresh_schema(base_url, run) for _ in range(2))


def caller_costs(n: int, configs: dict[str, dict[str, Any]], rounds: int = 7) -> dict[str, float]:
    """Best-of-`rounds` µs a recorded call adds over the bare function, per configuration; the
    configurations take turns, so a busy machine slows them alike."""
    best = dict.fromkeys(configs, float("inf"))
    for _ in range(rounds):
        for name, config in configs.items():
            hm.configure(**config)
            t0 = time.perf_counter()
            for _ in range(n):
                fake_llm("bench-model", MSGS, temperature=0.2, max_tokens=64)
            bare = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(n):
                ask("bench-model", MSGS, temperature=0.2, max_tokens=64)
            best[name] = min(best[name], (time.perf_counter() - t0 - bare) / n * 1e6)
            hm.shutdown()
    hm.configure()
    return best


def prepare_cost(drafts: list[dict[str, Any]]) -> float:
    """µs per record the worker spends sealing drafts and building their rows (batch by batch)."""
    drafts = copy.deepcopy(drafts)  # sealing gives them ids: each round starts from fresh drafts
    t0 = time.perf_counter()
    for i in range(0, len(drafts), BATCH):
        build_rows(drafts[i:i + BATCH])
    return (time.perf_counter() - t0) / len(drafts) * 1e6


def insert_cost(path: str, groups: list[Built]) -> float:
    """µs per record historymw's SQL backend spends inserting prepared rows (and their message
    contents), batch by batch."""
    backend = SQLBackend(f"sqlite:///{path}")
    for columns in {c for g in groups for c in g.groups}:
        backend._statement(columns).many  # noqa: B018 - the schema created and the inserts compiled, as by the warm-up
    n = sum(len(rows) for g in groups for rows in g.groups.values())
    t0 = time.perf_counter()
    for g in groups:
        backend._write(g.groups, g.contents)
    elapsed = time.perf_counter() - t0
    backend.shutdown()
    return elapsed / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="records per run (default 100000)")
    ap.add_argument("--postgres", default=os.environ.get("HISTORYMW_TEST_POSTGRES_URL"),
                    help="PostgreSQL URL (default: $HISTORYMW_TEST_POSTGRES_URL)")
    args = ap.parse_args()
    n = args.n

    print(f"historymw SQL throughput, {n:,} records per run, batch {BATCH}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs\n")
    with tempfile.TemporaryDirectory() as tmp:
        cost = caller_costs(10_000, {
            "core": {"backends": ["ring"], "maxlen": 100_000, "max_bytes": 2**34},
            "sql": {"backends": ["sql"], "sql_url": f"sqlite:///{tmp}/idle.db", "queue_size": 10**6,
                    "queue_bytes": 2**34, "batch_size": 10**7, "flush_interval": 3600},
        })
    few = make_drafts(10_240)  # stage costs, measured before 100k records are alive (GC stays cheap)
    t_prepare = min(prepare_cost(few) for _ in range(3))
    few_groups = [build_rows(few[i:i + BATCH]) for i in range(0, len(few), BATCH)]
    with tempfile.TemporaryDirectory() as tmp:
        t_insert = min(insert_cost(f"{tmp}/stage-{i}.db", few_groups) for i in range(3))
    del few, few_groups
    (columns, rows), (pg_columns, pg_rows) = baseline_rows(n)

    results: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = 0.0
        for i in range(2):
            raw_path = f"{tmp}/raw-{i}.db"
            schema.ensure_schema(sql_engine.make_engine(f"sqlite:///{raw_path}", create=True))
            raw = max(raw, raw_sqlite(raw_path, columns, rows))
        raw_pg = raw_postgres_best(args.postgres, pg_columns, pg_rows) if args.postgres else 0.0
        del rows, pg_rows  # 100k live rows would make every GC pass of the runs below slower
        gc.collect()
        e2e = max(end_to_end(f"sqlite:///{tmp}/e2e-{i}.db", n) for i in range(3))
        results.append(("SQLite (file, WAL)", e2e, raw, 50_000))

    if args.postgres:
        e2e_pg = max(in_fresh_schema(args.postgres, lambda url: end_to_end(url, n)) for _ in range(3))
        results.append(("PostgreSQL (psycopg 3)", e2e_pg, raw_pg, 20_000))
    else:
        print("(PostgreSQL skipped: pass --postgres URL or set HISTORYMW_TEST_POSTGRES_URL)\n")

    print(f"{'store':<24}{'historymw rec/s':>17}{'raw executemany':>17}{'ratio':>8}{'target':>10}  verdict")
    for name, e2e, base, target in results:
        ok = e2e >= target and e2e >= base / 2
        print(f"{name:<24}{e2e:>17,.0f}{base:>17,.0f}{e2e / base:>8.2f}{target:>10,}  "
              f"{'meets both' if ok else 'BELOW TARGET'} (targets: >= {target:,}/s and ratio >= 0.50)")

    core, handoff = cost["core"], cost["sql"]
    print(f"\ncaller cost per recorded call: {core:.2f} µs core (ring only); {handoff:.2f} µs with the sql queue "
          f"(idle worker) -> hand-off {handoff - core:+.2f} µs (budget: 2 µs core + at most 1 µs hand-off)")
    print(f"worker cost per record: prepare {t_prepare:.1f} µs (seal + row in one pass: id, secret scan, JSON), "
          f"insert {t_insert:.1f} µs (multi-row statements, through SQLAlchemy); "
          f"the raw driver's executemany: {1e6 / raw:.1f} µs")


if __name__ == "__main__":
    main()
