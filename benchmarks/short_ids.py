"""What the short-id column costs the SQLite store: ratios measured in one run.

    python benchmarks/short_ids.py [--n 50000] [--repeat 5]

The same rows (historymw's rows for N recorded calls, built before timing) are
inserted with executemany in 512-row transactions into fresh files, best of
--repeat runs each, the variants alternating:

- the store as it is: `short_id` (consecutive within a process) and its index;
- the store without `short_id` (as it was before short ids);
- scrambled short ids (random 8 digits: what a hashed short id would be);
- a random primary key instead of the time-ordered id.

Printed: each as a ratio to the store without `short_id`, and the cost of
computing a short id against `build_rows` per row. Ratios taken in the same
process, not absolute numbers: this machine is shared.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sql_throughput import make_drafts

from historymw.sql import engine as sql_engine
from historymw.sql import schema
from historymw.sql.batch import build_rows
from historymw.sql.ids import short_from

BATCH = 512


def _store(path: str, variant: str) -> None:
    schema.ensure_schema(sql_engine.make_engine(f"sqlite:///{path}", create=True))
    if variant == "without":
        conn = sqlite3.connect(path)
        conn.execute("DROP INDEX ix_historymw_calls_short_id")
        conn.execute("ALTER TABLE historymw_calls DROP COLUMN short_id")
        conn.commit()
        conn.close()


def _insert(path: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = f"INSERT INTO historymw_calls ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    start = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows[i:i + BATCH])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    drafts = make_drafts(args.n)
    start = time.perf_counter()
    ((columns, rows),) = build_rows([dict(d) for d in drafts]).groups.items()
    build_s = time.perf_counter() - start
    i_short = columns.index("short_id")
    without_cols = columns[:i_short] + columns[i_short + 1:]
    without_rows = [r[:i_short] + r[i_short + 1:] for r in rows]
    random_rows = [(os.urandom(16).hex(), *r[1:]) for r in rows]
    scrambled_rows = [(*r[:i_short], os.urandom(4).hex(), *r[i_short + 1:]) for r in rows]

    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeat):
            for variant, cols, data in (("as_is", columns, rows), ("without", without_cols, without_rows),
                                        ("scrambled", columns, scrambled_rows), ("random_pk", columns, random_rows)):
                path = os.path.join(tmp, f"{variant}-{k}.db")
                _store(path, variant)
                t = _insert(path, cols, data)
                best[variant] = min(best.get(variant, t), t)

    start = time.perf_counter()
    for i in range(args.n):
        short_from(i, 0x12345678)
    short_s = time.perf_counter() - start

    print(f"rows: {args.n:,}; best of {args.repeat} runs each, same process; insert time / without short_id:")
    for variant, label in (("as_is", "the store as it is (consecutive short_id, indexed)"),
                           ("scrambled", "random short ids (indexed)"), ("random_pk", "random primary key")):
        print(f"  {label:52} {best[variant] / best['without']:.3f}")
    print(f"short_from per call / build_rows per row: {short_s / build_s:.3f}")

if __name__ == "__main__":
    main()
