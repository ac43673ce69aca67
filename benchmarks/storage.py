"""Storage of a DSPy-optimizer-shaped history: bytes on disk, write throughput, reading a call back.

    python benchmarks/storage.py [--n 100000] [--postgres URL] [--quick] [--breakdown]

The calls: what an optimizer (BootstrapFewShot and the like) sends, call after call: the
same ~3 KB system prompt, 4 few-shot demos (user/assistant pairs of ~200 and ~300
characters) picked from one of 8 candidate demo sets, a question of ~200 varied characters,
an answer of ~300. They are recorded through the hot path (a @hm.recorded function into the
ring), and the drafts it captured are what every store below is given.

Side by side, in one run, into SQLite (a file, WAL) and PostgreSQL (a fresh schema):
- historymw: the store as it is (schema 7: content-addressed messages, the shared prefix one ref,
  the last message inline), written through the
  SQL backend's export path (`prepare_drafts` + `export_prepared`, batches of 512), i.e.
  the export worker's work per record, from drafts to committed rows, contents and the
  session and rollup aggregates.
- v3 rows: the row layout of schema 3 (every call's messages as JSON in its row, same table,
  same indexes, no aggregates), the same rows otherwise, built before the clock starts and
  inserted with the same multi-row statements: a lower bound of what schema 3 cost.
- JSON lines: one JSON object per call (the same fields) appended to a file.

Measured: bytes on disk (SQLite: the database file after a WAL checkpoint; PostgreSQL:
pg_total_relation_size of the tables, with indexes and TOAST), records written per second,
and reading one call back whole through `Store.get` (median of 300 random ids, warm). Rates
and read times are given twice: by the wall clock, and by this process's CPU time, which a
machine shared with other work inflates far less (for SQLite it is all the work; for
PostgreSQL the server's share is not in it).
Targets (issue 18): >= 10x smaller than v3 rows, >= 50,000 records/s into SQLite and
>= 20,000/s into PostgreSQL, <= 1 ms to read a call. `--quick`: 3,000 calls, for CI.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import quote

import historymw as hm
from historymw.backends.sql import SQLBackend
from historymw.sql import contents as contents_mod
from historymw.sql import engine as sql_engine
from historymw.sql import schema, write
from historymw.sql.batch import build_rows
from historymw.store import Store

BATCH = 512
READS = 300
WORDS = ("the of a to in is was for on that by with as it from at an be this which or are have "
         "treaty river empire century reform harbor council merchant canal census plague revolt "
         "dynasty frontier charter senate famine railway printing voyage guild monastery tariff").split()


def _text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        w = rng.choice(WORDS) if rng.random() > 0.15 else str(rng.randint(100, 2000))
        out.append(w)
        n += len(w) + 1
    return " ".join(out).capitalize() + "."


def shape(seed: int = 7) -> tuple[dict[str, str], list[list[dict[str, str]]]]:
    """The system prompt and the 8 candidate demo sets (4 pairs each, from a pool of 16)."""
    rng = random.Random(seed)
    system = {"role": "system", "content": (
        "Your input fields are:\n1. `question` (str): a question about history\n"
        "Your output fields are:\n1. `reasoning` (str)\n2. `answer` (str): short and factual\n"
        "All interactions will be structured in the following way, with the appropriate values filled in.\n"
        + _text(rng, 2700) + "\nIn adhering to this structure, your objective is: answer the question.")}
    pool = [({"role": "user", "content": _text(rng, 200)}, {"role": "assistant", "content": _text(rng, 300)})
            for _ in range(16)]
    demo_sets = [[m for pair in rng.sample(pool, 4) for m in pair] for _ in range(8)]
    return system, demo_sets


def make_drafts(n: int) -> list[dict[str, Any]]:
    """n drafts exactly as the hot path captures them (through the ring)."""
    rng = random.Random(11)
    system, demo_sets = shape()
    answers: dict[str, str] = {}

    @hm.recorded(provider="openai")
    def lm(model: str, messages: list[dict[str, str]], **params: Any) -> str:
        return answers[messages[-1]["content"]]

    hm.configure(backends=["ring"], maxlen=n, max_bytes=2**36, max_field_chars=10**6)
    for i in range(n):
        question = f"[{i}] " + _text(rng, 200)
        answers[question] = _text(rng, 300)
        lm("gpt-4o-mini", [system, *demo_sets[i % 8], {"role": "user", "content": question}],
           temperature=0.0, max_tokens=1000)
    drafts = hm.ring().drafts()
    hm.configure()
    if len(drafts) != n:
        sys.exit(f"captured {len(drafts)} drafts of {n}")
    return drafts


# -- the three stores -----------------------------------------------------------


Rate = tuple[float, float]  # records/s by the wall clock, by this process's CPU time


def _timed(fn: Any, n: int) -> Rate:
    gc.collect()
    w, c = time.perf_counter(), time.process_time()
    fn()
    return n / (time.perf_counter() - w), n / max(time.process_time() - c, 1e-9)


def write_historymw(url: str, drafts: list[dict[str, Any]]) -> Rate:
    """Records per second through the SQL backend's export path."""
    backend = SQLBackend(url)
    warm = [dict(d) for d in drafts[:50]]
    backend.export_prepared(backend.prepare_drafts(warm, True, _fail))  # schema, statements, connection
    batches = [[dict(d) for d in drafts[i:i + BATCH]] for i in range(50, len(drafts), BATCH)]

    def run() -> None:
        for b in batches:
            if backend.export_prepared(backend.prepare_drafts(b, True, _fail)):
                sys.exit("rows refused")

    rate = _timed(run, len(drafts) - 50)
    backend.shutdown()
    return rate


def _fail(exc: BaseException) -> None:
    raise exc


def v3_rows(drafts: list[dict[str, Any]], postgres: bool) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """The rows schema 3 stored for these drafts: today's rows with each call's messages as the JSON
    text schema 3 wrote in its `messages` column, in place of `message_refs`."""
    built = build_rows([dict(d) for d in drafts], postgres=postgres)
    ((columns, rows),) = built.groups.items()
    at = columns.index("message_refs")
    raw = {dg: contents_mod.decode_body(b) for dg, b, _ in built.contents}
    out = []
    for row in rows:
        messages = "[" + ",".join(b.decode() for b in contents_mod.message_bytes(row[at], raw)) + "]"  # type: ignore[union-attr]
        out.append((*row[:at], messages, *row[at + 1:]))
    return (*columns[:at], "messages", *columns[at + 1:]), out


def v3_schema(engine: Any) -> None:
    """The tables of schema 3: the calls table without `message_refs`, same indexes; no contents."""
    import sqlalchemy as sa

    md = sa.MetaData()
    table = sa.Table(schema.CALLS, md, *(c._copy() for c in schema.calls.columns if c.name != "message_refs"))
    for ix in schema.calls.indexes:
        sa.Index(ix.name, *(table.c[c.name] for c in ix.columns), **ix.dialect_kwargs)
    with engine.begin() as conn:
        md.create_all(conn)
        schema.versions.create(conn)
        conn.execute(schema.versions.insert().values(name="calls", version=3))


def write_v3(url: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Rate:
    """Records per second inserting the v3 rows with historymw's multi-row statements."""
    page_size = sql_engine.SQLITE_PAGE_SIZE
    sql_engine.SQLITE_PAGE_SIZE = 4096  # a SQLite file as schema 3 made it (SQLite's default pages)
    try:
        engine = sql_engine.make_engine(url, create=True)
        v3_schema(engine)
    finally:
        sql_engine.SQLITE_PAGE_SIZE = page_size
    ins = write.Insert(engine.dialect, columns)
    batches = [rows[i:i + BATCH] for i in range(0, len(rows), BATCH)]

    def run() -> None:
        for b in batches:  # schema 3 had no aggregates: the rows alone, a transaction per batch
            with engine.connect().execution_options(**sql_engine.WRITE) as conn, conn.begin():
                whole = len(b) - len(b) % ins.per
                if whole:
                    conn.exec_driver_sql(ins.many, [tuple(chain.from_iterable(b[i:i + ins.per]))
                                                    for i in range(0, whole, ins.per)])
                if whole < len(b):
                    conn.exec_driver_sql(ins.one, list(b[whole:]))

    rate = _timed(run, len(rows))
    engine.dispose()
    return rate


def write_jsonl(path: Path, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Rate:
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    records = []
    for row in rows:
        record = {c: v for c, v in zip(columns, row, strict=True) if v is not None}
        record["messages"] = json.loads(record["messages"])
        records.append(record)

    def run() -> None:
        with open(path, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(encode(record) + "\n")

    return _timed(run, len(rows))


WRITER_BATCH = BATCH


def writer_scenario() -> tuple[Any, None]:
    """For benchmarks/instructions.py (`--scenarios storage:writer_scenario`): one call writes a batch of
    WRITER_BATCH drafts into SQLite through the export path, from drafts to committed rows: instructions
    per record = its figure / WRITER_BATCH, stable on a loaded machine where the rates above are not."""
    drafts = make_drafts(8 * WRITER_BATCH)
    backend = SQLBackend(f"sqlite:///{tempfile.mkdtemp()}/writer.db")
    at = [0]

    def call() -> None:
        i = at[0] % 8 * WRITER_BATCH
        at[0] += 1
        if backend.export_prepared(backend.prepare_drafts([dict(d) for d in drafts[i:i + WRITER_BATCH]], True,
                                                          _fail)):
            sys.exit("rows refused")

    return call, None


# -- measures ---------------------------------------------------------------------


def sqlite_bytes(path: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def postgres_bytes(url: str) -> int:
    import sqlalchemy as sa

    engine = sql_engine.make_engine(url, create=False)
    with engine.connect() as conn:
        tables = [t for t in (schema.CALLS, schema.CONTENTS) if sa.inspect(conn).has_table(t)]
        total = sum(int(conn.execute(sa.text("SELECT pg_total_relation_size(CAST(:t AS regclass))"),
                                     {"t": t}).scalar_one()) for t in tables)
    engine.dispose()
    return total


def sqlite_breakdown(path: Path, n: int) -> str:
    """Where a SQLite store's bytes go, per table and index (SQLite's dbstat), per call: the pages
    (payload, unused space, and the rest: cell pointers, headers, interior pages)."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, count(*), sum(pgsize), sum(payload), sum(unused) FROM dbstat "
                            "GROUP BY name ORDER BY sum(pgsize) DESC, name").fetchall()
    except sqlite3.OperationalError as exc:  # a SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
        return f"\n(no breakdown: {exc})"
    finally:
        conn.close()
    lines = ["| table or index | bytes/call | payload | unused | other |", "|---|---|---|---|---|"]
    rest = [0, 0, 0]
    for name, pages, size, payload, unused in rows:
        if pages == 1:  # the tables of a few rows, and empty indexes: summed below
            rest = [rest[0] + size, rest[1] + payload, rest[2] + unused]
            continue
        lines.append(f"| {name} | {size / n:,.1f} | {payload / n:,.1f} | {unused / n:,.1f} "
                     f"| {(size - payload - unused) / n:,.1f} |")
    lines.append(f"| (the rest: tables and indexes of one page) | {rest[0] / n:,.1f} | {rest[1] / n:,.1f} "
                 f"| {rest[2] / n:,.1f} | {(rest[0] - rest[1] - rest[2]) / n:,.1f} |")
    return "\n".join(lines)


def postgres_breakdown(url: str, n: int) -> str:
    """Where a PostgreSQL store's bytes go: each relation of the schema (tables, their indexes and
    TOAST tables), per call."""
    import sqlalchemy as sa

    engine = sql_engine.make_engine(url, create=False)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c "
            "LEFT JOIN pg_class t ON t.reltoastrelid = c.oid OR t.oid = c.oid "
            "JOIN pg_namespace s ON s.oid = t.relnamespace "
            "WHERE s.nspname = current_schema() AND c.relkind IN ('r', 'i', 't') "
            "GROUP BY c.relname, c.oid ORDER BY 2 DESC, 1")).all()
    engine.dispose()
    lines = ["| relation | bytes/call |", "|---|---|"]
    small = sum(int(size) for _, size in rows if int(size) <= 16384)  # (an index has a meta page and a root)
    lines += [f"| {name} | {int(size) / n:,.1f} |" for name, size in rows if int(size) > 16384]
    lines.append(f"| (the rest: tables and indexes of one or two pages) | {small / n:,.1f} |")
    return "\n".join(lines)


def read_ms(url: str, ids: list[str]) -> Rate:
    """Median ms of `Store.get(id)`, one call read back whole (its messages included): wall, CPU."""
    rng = random.Random(3)
    picks = [rng.choice(ids) for _ in range(READS)]
    with Store(url) as store:
        for i in picks[:20]:  # warm: connection, statements, pages
            store.get(i)
        times, cpu = [], []
        for i in picks:
            w, c = time.perf_counter(), time.process_time()
            call = store.get(i)
            times.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
            if call is None or len(call.messages) != 10:
                sys.exit(f"call {i} not read back whole")
    return statistics.median(times) * 1e3, statistics.median(cpu) * 1e3


@contextmanager
def fresh_schema(base_url: str) -> Iterator[str]:
    import sqlalchemy as sa

    admin = sa.create_engine(sql_engine.parse_url(base_url))
    name = f"hmstorage_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(sa.schema.CreateSchema(name))
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options={quote(f'-csearch_path={name}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.schema.DropSchema(name, cascade=True))
        admin.dispose()


def _row(name: str, size: int, base: int, rate: Rate, read: Rate | None) -> str:
    read_s = f"{read[0]:.3f} / {read[1]:.3f}" if read is not None else "-"
    return (f"| {name} | {size / len(DRAFTS_N):,.0f} | {size / 2**20:,.1f} | {base / size:.1f}x "
            f"| {rate[0]:,.0f} / {rate[1]:,.0f} | {read_s} |")


DRAFTS_N: list[int] = []
Result = tuple[str, int, Rate, "Rate | None"]  # (store, bytes, records/s, read ms)


def run_sqlite(tmp: Path, drafts: list[dict[str, Any]], ids: list[str],
               breakdown: list[str] | None = None) -> list[Result]:
    cols, rows = v3_rows(drafts, postgres=False)
    v4_path, v3_path, jl_path = tmp / "v4.db", tmp / "v3.db", tmp / "calls.jsonl"
    v4_rate = write_historymw(f"sqlite:///{v4_path}", drafts)
    v3_rate = write_v3(f"sqlite:///{v3_path}", cols, rows)
    jl_rate = write_jsonl(jl_path, cols, rows)
    out: list[Result] = [
        ("historymw (schema 7)", sqlite_bytes(v4_path), v4_rate, read_ms(f"sqlite:///{v4_path}", ids)),
        ("v3 rows (today's store)", sqlite_bytes(v3_path), v3_rate, read_ms(f"sqlite:///{v3_path}", ids)),
        ("JSON lines", jl_path.stat().st_size, jl_rate, None)]
    if breakdown is not None:
        breakdown.append(sqlite_breakdown(v4_path, len(drafts)))
    return out


def run_postgres(base_url: str, drafts: list[dict[str, Any]], ids: list[str],
                 breakdown: list[str] | None = None) -> list[Result]:
    cols, rows = v3_rows(drafts, postgres=True)
    out = []
    with fresh_schema(base_url) as url:
        rate = write_historymw(url, drafts)
        out.append(("historymw (schema 7)", postgres_bytes(url), rate, read_ms(url, ids)))
        if breakdown is not None:
            breakdown.append(postgres_breakdown(url, len(drafts)))
    with fresh_schema(base_url) as url:
        rate = write_v3(url, cols, rows)
        out.append(("v3 rows (today's store)", postgres_bytes(url), rate, read_ms(url, ids)))
    return out


def _read(result: Result) -> float:
    read = result[3]
    return read[0] if read is not None else float("inf")


def table(title: str, results: list[Result]) -> str:
    base = results[1][1]
    lines = [f"\n{title}\n", "| store | bytes/call | MiB | smaller than v3 | records/s written (wall / CPU) "
             "| read 1 call, ms (wall / CPU) |",
             "|---|---|---|---|---|---|"]
    lines += [_row(name, size, base, rate, read) for name, size, rate, read in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="calls (default 100000)")
    ap.add_argument("--quick", action="store_true", help="3,000 calls: a few seconds, for CI")
    ap.add_argument("--breakdown", action="store_true",
                    help="also print where historymw's bytes go, per table and index")
    ap.add_argument("--postgres", default=os.environ.get("HISTORYMW_TEST_POSTGRES_URL"),
                    help="PostgreSQL URL (default: $HISTORYMW_TEST_POSTGRES_URL; skipped without one)")
    args = ap.parse_args(argv)
    n = 3_000 if args.quick else args.n
    DRAFTS_N[:] = range(n)
    codec = "zstd" if contents_mod.WRITE_CODEC == contents_mod.ZSTD else "zlib"
    print(f"historymw storage, {n:,} DSPy-optimizer-shaped calls, batches of {BATCH}, contents compressed "
          f"with {codec}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    drafts = make_drafts(n)
    ids: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        # The ids the stores will hold: the fast path gives each draft its id when it first builds it.
        built = build_rows(drafts)
        ids = [row[0] for rows in built.groups.values() for row in rows]
        del built
        sqlite_split: list[str] | None = [] if args.breakdown else None
        sqlite_results = run_sqlite(Path(tmp), drafts, ids, sqlite_split)
    print(table("SQLite (file, WAL)", sqlite_results))
    if sqlite_split:
        print("\nhistorymw's SQLite file, per table and index (dbstat):\n")
        print(*sqlite_split)
    checks: list[tuple[str, bool]] = [
        ("SQLite >= 10x smaller than v3 rows", sqlite_results[1][1] >= 10 * sqlite_results[0][1]),
        ("SQLite >= 50,000 records/s (wall)", sqlite_results[0][2][0] >= 50_000),
        ("SQLite >= 50,000 records/s (CPU)", sqlite_results[0][2][1] >= 50_000),
        ("SQLite read <= 1 ms (wall)", _read(sqlite_results[0]) <= 1.0),
    ]
    if args.postgres:
        pg_split: list[str] | None = [] if args.breakdown else None
        pg_results = run_postgres(args.postgres, drafts, ids, pg_split)
        print(table("PostgreSQL", pg_results))
        if pg_split:
            print("\nhistorymw's PostgreSQL relations (pg_relation_size):\n")
            print(*pg_split)
        checks += [
            ("PostgreSQL >= 10x smaller than v3 rows", pg_results[1][1] >= 10 * pg_results[0][1]),
            ("PostgreSQL >= 20,000 records/s (wall)", pg_results[0][2][0] >= 20_000),
            ("PostgreSQL read <= 1 ms (wall)", _read(pg_results[0]) <= 1.0),
        ]
    else:
        print("\nPostgreSQL: skipped (no --postgres URL nor HISTORYMW_TEST_POSTGRES_URL)")
    print("\nTargets (issue 18):")
    for what, ok in checks:
        print(f"  {'met    ' if ok else 'NOT MET'}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
