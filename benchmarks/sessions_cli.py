"""`historymw sessions` over 10,000 sessions: the command as a user runs it, timed end to end.

    python benchmarks/sessions_cli.py                 # SQLite, and PostgreSQL when reachable
    python benchmarks/sessions_cli.py --sessions 2000 # a smaller store
    python benchmarks/sessions_cli.py --instructions  # also each command's instructions (callgrind)

The store is written through historymw itself (the SQL backend: the writer keeps
historymw_sessions as it inserts), `--calls-per-session` calls each. Each figure is
the median wall time and CPU time (user + system) of `historymw ...` run in a
subprocess after one warm-up, next to `historymw --help` measured in the same run:
a process that starts, imports the command line and exits (the part of any command no query can save). Then the
command in-process (`historymw.cli.main`, imports done: opening the store, the
query, the output), and `Store.sessions(50)` from the sessions table against the
same page from the calls grouped by session (what a database older than schema 4
gives). Target: the default `historymw sessions` <= 200 ms.

With --instructions, each command also runs once under callgrind, whole process (start-up,
imports, query, output, exit): a count that a loaded machine does not move, to compare
against `historymw --help`'s in the same run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, machine_line

EXE = str(Path(sys.executable).with_name("historymw"))
REPEAT = 7


def fill(url: str, sessions: int, per: int) -> None:
    import historymw as hm

    hm.configure(backends=["sql"], sql_url=url, batch_size=1000)
    base = time.time() - 30 * 86400
    msgs = [{"role": "user", "content": "When does my order ship?"}]
    n = sessions * per
    for i in range(n):
        with hm.history(session=f"user-{i % sessions:05d}"):
            with hm.call(provider="openai", model="gpt-4o-mini", messages=msgs, started_at=base + i * 2.0) as c:
                c.output(text="Tomorrow.", usage={"prompt_tokens": 12, "completion_tokens": 3}, cost=1e-5)
        if i % 2000 == 1999:
            hm.flush(timeout=600)  # the writer keeps up: nothing is dropped for a full queue
    assert hm.flush(timeout=600)
    stats = hm.stats()
    if stats.dropped:
        raise SystemExit(f"the fill dropped {stats.dropped} calls: {stats.dropped_by_reason}")
    hm.shutdown()


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall time and the child's CPU time (user + system: what a busy machine disturbs least), ms."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run([EXE, *argv], capture_output=True, text=True, env=env, timeout=120)
    ms = (time.perf_counter() - t) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    if p.returncode:
        raise SystemExit(f"historymw {' '.join(argv)} failed: {p.stderr.strip()}")
    return ms, cpu, p.stdout


def instructions(argv: list[str], env: dict[str, str]) -> int | None:
    """The instructions the whole `historymw ...` process executes (callgrind); None without valgrind."""
    import re
    import shutil

    if shutil.which("valgrind") is None:
        return None
    p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", EXE, *argv],
                       capture_output=True, text=True, env=env, timeout=600)
    found = re.search(r"Collected : (\d+)", p.stderr)
    if p.returncode or found is None:
        raise SystemExit(f"historymw {' '.join(argv)} under callgrind failed: {p.stderr.strip()[-2000:]}")
    return int(found.group(1))


def median_ms(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    timed(argv, env)  # warm-up: the page cache, Python's bytecode cache
    runs = [timed(argv, env)[:2] for _ in range(REPEAT)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def bench(label: str, url: str, sessions: int, count: bool = False) -> dict[str, Any]:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTORYMW_")}
    env["HISTORYMW_SQL_URL"] = url
    # The warm-up writes historymw's bytecode cache, as installing the package does (pip compiles it):
    # under PYTHONDONTWRITEBYTECODE (set in some shells and CI) every run would compile the command's
    # modules from source, some 80 million instructions no user's command pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    page = json.loads(timed(["sessions", "--json", "-n", str(sessions - 50)], env)[2])
    deep = page["sessions"][-1]["cursor"]
    cases = {
        "historymw --help (baseline: start, import, exit)": ["--help"],
        f"historymw sessions (first 50 of {sessions:,})": ["sessions"],
        "historymw sessions --json": ["sessions", "--json"],
        f"historymw sessions --before CURSOR (page at {sessions - 50:,})": ["sessions", "--before", deep],
        "historymw sessions ID (one session's calls)": ["sessions", page["sessions"][0]["id"]],
    }
    out: dict[str, float] = {}
    base_cpu = 0.0
    for name, argv in cases.items():
        out[name], cpu = median_ms(argv, env)
        out[name + " (CPU)"] = cpu
        if name.startswith("historymw --help"):
            base_cpu = cpu
            extra = ""
        else:
            extra = f"  (CPU +{cpu - base_cpu:.0f} ms over the baseline)"
        print(f"  {label:10s} {name:60s} {out[name]:7.0f} ms wall, {cpu:5.0f} ms CPU{extra}", flush=True)
    if count:
        base_n = None
        for name, argv in cases.items():
            n = instructions(argv, env)
            if n is None:
                print("  instruction counts skipped: valgrind is not installed")
                break
            out[name + " (instructions)"] = n
            base_n = n if base_n is None else base_n
            print(f"  {label:10s} {name:60s} {n:13,d} instructions ({n / base_n:.2f}x --help)", flush=True)
    in_process(label, url, deep, out)
    return out


def in_process(label: str, url: str, deep: str, out: dict[str, float]) -> None:
    import io

    from historymw.cli import main
    from historymw.store import Store

    def ms(fn: Any) -> float:
        fn()
        runs = []
        for _ in range(REPEAT):
            t = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - t) * 1000)
        return statistics.median(runs)

    cases = {
        "in-process: historymw sessions (open, query, print)": lambda: main(["--db", url, "sessions"], io.StringIO()),
        "in-process: historymw sessions --before CURSOR": lambda: main(["--db", url, "sessions", "--before", deep],
                                                                       io.StringIO()),
    }
    for name, fn in cases.items():
        out[name] = ms(fn)
        print(f"  {label:10s} {name:60s} {out[name]:7.1f} ms", flush=True)
    with Store(url) as store:
        out["Store.sessions(50): historymw_sessions"] = table = ms(lambda: store.sessions(50))
        store._has_sessions = False  # what an older database, read as it is, does: group the calls
        out["Store.sessions(50): calls grouped by session"] = grouped = ms(lambda: store.sessions(50))
    print(f"  {label:10s} {'Store.sessions(50): table / calls grouped':60s} {table:7.1f} / {grouped:.1f} ms "
          f"({grouped / table:.0f}x)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--calls-per-session", type=int, default=5)
    ap.add_argument("--postgres", default=os.environ.get("HISTORYMW_TEST_POSTGRES_URL"))
    ap.add_argument("--instructions", action="store_true", help="also count each command's instructions "
                    "(valgrind's callgrind: stable on a loaded machine)")
    args = ap.parse_args()
    m = machine()
    print(f"historymw sessions over {args.sessions:,} sessions x {args.calls_per_session} calls; "
          f"{machine_line(m)}; load {m['load']}")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/sessions.db"
        t = time.perf_counter()
        fill(url, args.sessions, args.calls_per_session)
        print(f"  sqlite     written in {time.perf_counter() - t:.0f} s", flush=True)
        bench("sqlite", url, args.sessions, args.instructions)
    if not args.postgres:
        print("  postgresql skipped: pass --postgres URL or set HISTORYMW_TEST_POSTGRES_URL")
        return
    import sqlalchemy as sa

    name = f"hmbench_sessions_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.postgres.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    try:
        sep = "&" if "?" in args.postgres else "?"
        url = f"{args.postgres}{sep}options={quote(f'-csearch_path={name}')}"
        t = time.perf_counter()
        fill(url, args.sessions, args.calls_per_session)
        print(f"  postgresql written in {time.perf_counter() - t:.0f} s", flush=True)
        bench("postgresql", url, args.sessions, args.instructions)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
