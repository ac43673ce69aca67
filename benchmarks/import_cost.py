"""What `import historymw` costs at startup, next to its own dependencies and the frameworks it records.

    python benchmarks/import_cost.py               # 7 fresh processes per row (~1 minute)
    python benchmarks/import_cost.py --quick       # one process per row
    python benchmarks/import_cost.py --detail      # also: the slowest modules under `import historymw`

Each row runs in a fresh interpreter (nothing cached in sys.modules; the OS file cache
warm after the first run) and times its statement with perf_counter from inside, so
interpreter start-up is not counted. Every module is read from its bytecode cache, as
after `pip install` (which compiles the dependencies' caches): the children may write
historymw's own caches (PYTHONDONTWRITEBYTECODE is removed), and one untimed import
writes them first; otherwise historymw alone would be compiled from source each run.
Rows take turns, run by run, so machine noise hits all alike; the figure is the median
over runs, with the min..max.

`import historymw` resolves its public names on first use (so that the `historymw` command
never imports the recorder): the historymw rows therefore time the import together with a
first touch of the recording API (`hm.recorded`, `hm.call`, `hm.history`, `hm.recent`), which
is what an application that records pays before its first call; the row "nothing used yet"
is the bare statement.

Rows: `import pydantic, structlog` (historymw's only dependencies: the baseline);
`import historymw` (+ first use); the same timed in a process that has already imported
pydantic and structlog (what historymw adds to them: the target's figure); the same
after defining one pydantic model (pydantic imports most of itself only then, so this
separates pydantic's deferred cost from historymw's own);
`import historymw` then `configure()`; `import historymw` then `configure(backends=[X])` for each backend
(this imports the backend's own dependencies and builds it: for sql, an engine and the
schema in a new SQLite file); `import dspy`; `import litellm`.

Also checked, in a fresh process: after `import historymw`, none of the optional
dependencies (sqlalchemy, psycopg, opentelemetry, litellm, dspy, ...) is in sys.modules.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common

OPTIONAL = ("sqlalchemy", "psycopg", "psycopg2", "opentelemetry", "litellm", "dspy", "openai", "httpx",
            "openinference", "matplotlib", "numpy")

_ONE_MODEL = "import pydantic, structlog\nclass _M(pydantic.BaseModel):\n    x: int = 0"
# `import historymw` binds its names on first use: what a recording application pays is the import and
# its first touch of the recording API (the recorder, its runtime and pipeline are imported then).
_HM = "import historymw as hm\nhm.recorded, hm.call, hm.history, hm.recent"

# (key, label, statement run before the clock starts, statement timed). The sql backend writes its schema into
# a file under {tmp}.
ROWS: list[tuple[str, str, str, str]] = [
    ("base", "import pydantic, structlog (baseline)", "", "import pydantic, structlog"),
    ("historymw", "import historymw + first use", "", _HM),
    ("historymw_bare", "import historymw, nothing used yet (pydantic+structlog imported)",
     "import pydantic, structlog", "import historymw"),
    ("historymw_after", "import historymw + first use, pydantic+structlog already imported",
     "import pydantic, structlog", _HM),
    # pydantic loads most of itself (pydantic.types, annotated_types, its plugin loader's entry-point scan) when
    # the first model class is defined, not at `import pydantic`: what every pydantic user pays once.
    ("pydantic_model", "import pydantic, structlog + define one BaseModel", "", _ONE_MODEL),
    ("historymw_after_model", "import historymw + first use, a pydantic model already defined", _ONE_MODEL, _HM),
    ("hm_ring", "import historymw + configure() (ring)", "", "import historymw as hm; hm.configure()"),
    ("hm_sql", "import historymw + configure(backends=['sql'])", "",
     "import historymw as hm; hm.configure(backends=['sql'], sql_url='sqlite:///{tmp}/imp-{i}.db')"),
    ("hm_otel", "import historymw + configure(backends=['otel'])", "",
     "import historymw as hm; hm.configure(backends=['otel'])"),
    ("hm_log", "import historymw + configure(backends=['log'])", "",
     "import historymw as hm; hm.configure(backends=['log'])"),
    ("dspy", "import dspy", "", "import dspy"),
    ("litellm", "import litellm", "", "import litellm"),
]

CHILD = """
import sys, time
exec({prelude!r})
t0 = time.perf_counter()
exec({stmt!r})
t = time.perf_counter() - t0
print("IMPORT_MS", t * 1000)
try:
    import historymw
    historymw.shutdown(0)
except Exception:
    pass
"""

CHECK = """
import sys
import historymw as hm
hm.recorded, hm.call, hm.history, hm.recent
print(sorted({{m.split('.')[0] for m in sys.modules}} & set({optional!r})))
"""


def _env() -> dict[str, str]:
    env = _common.child_env(HISTORYMW_SHUTDOWN_TIMEOUT="0")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # see the module docstring: bytecode caches as after an install
    return env


def time_once(prelude: str, stmt: str) -> float:
    proc = subprocess.run([sys.executable, "-c", CHILD.format(prelude=prelude, stmt=stmt)], capture_output=True,
                          text=True, env=_env(), check=False, timeout=300)
    match = re.search(r"IMPORT_MS ([0-9.]+)", proc.stdout)
    if proc.returncode != 0 or match is None:
        raise SystemExit(f"import row failed: {stmt}\n{proc.stderr[-2000:]}")
    return float(match.group(1))


def optional_after_import() -> list[str]:
    proc = subprocess.run([sys.executable, "-c", CHECK.format(optional=OPTIONAL)], capture_output=True, text=True,
                          env=_common.child_env(), check=True)
    return list(json.loads(proc.stdout.strip().replace("'", '"')))


def importtime_top(n: int = 12) -> list[tuple[str, float]]:
    """The modules with the largest cumulative import time under `import historymw` (after pydantic, structlog)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import pydantic, structlog\n{_HM}"],
                          capture_output=True, text=True, env=_env(), check=True)
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((parts[2].rstrip(), int(parts[1]) / 1000))
    # Only what `import historymw` added: the lines after the last line of the baseline imports.
    cut = max(i for i, (name, _) in enumerate(rows) if name.strip() in ("pydantic", "structlog"))
    return sorted(rows[cut + 1:], key=lambda r: -r[1])[:n]


def measure(quick: bool = False, runs: int | None = None, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    runs = runs or (1 if quick else 7)
    rows = [r for r in ROWS if r[0] not in skip]
    samples: dict[str, list[float]] = {key: [] for key, _, _, _ in rows}
    time_once("", "import historymw")  # writes historymw's bytecode caches, untimed
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            k = i % len(rows)
            for key, _, prelude, stmt in rows[k:] + rows[:k]:
                samples[key].append(time_once(prelude, stmt.format(tmp=tmp, i=i)))
    base = statistics.median(samples["base"])
    out = []
    for key, label, prelude, stmt in rows:
        s = samples[key]
        med = statistics.median(s)
        # The row that runs after the baseline's imports adds its whole time; the others, their difference.
        added = med if prelude else med - base
        out.append({"key": key, "name": label, "statement": stmt.replace("{tmp}/imp-{i}.db", "…"),
                    "ms": med, "min": min(s), "max": max(s), "added_ms": added, "ratio": med / base})
    return {"machine": _common.machine(), "runs": runs, "rows": out, "optional_after_import": optional_after_import()}


def import_added(res: dict[str, Any]) -> float:
    """The headline: what `import historymw` adds once pydantic and structlog are imported (measured directly, in
    the same process; the difference of two fresh-process medians says the same with more noise)."""
    return float(next(r["added_ms"] for r in res["rows"] if r["key"] == "historymw_after"))


def import_added_own(res: dict[str, Any]) -> float | None:
    """What `import historymw` adds once pydantic has defined a model: historymw's own import cost."""
    return next((float(r["added_ms"]) for r in res["rows"] if r["key"] == "historymw_after_model"), None)


def print_table(res: dict[str, Any]) -> None:
    print(f"import cost — {_common.machine_line(res['machine'])}; median of {res['runs']} fresh processes per row")
    print(f"{'':66} {'ms':>8} {'min..max':>17} {'vs baseline':>12}")
    for r in res["rows"]:
        print(f"{r['name']:66} {r['ms']:8.1f} {r['min']:7.1f}..{r['max']:<8.1f} {r['added_ms']:+9.1f} ms")
    added = import_added(res)
    opt = res["optional_after_import"]
    print(f"\n`import historymw` adds {added:.1f} ms to `import pydantic, structlog` (target ≤ 50 ms): "
          f"{'met' if added <= 50 else 'MISSED'}; optional modules imported: {opt or 'none'}")
    own = import_added_own(res)
    if own is not None:
        print(f"of which historymw's own modules, once pydantic has defined a model: {own:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one process per row")
    ap.add_argument("--runs", type=int, help="fresh processes per row (default 7)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--detail", action="store_true", help="print the slowest modules under `import historymw`")
    args = ap.parse_args()
    res = measure(args.quick, args.runs)
    if args.detail:
        res["importtime_top"] = importtime_top()
    print_table(res)
    if args.detail:
        print("\nslowest imports under `import historymw` (cumulative ms, after pydantic and structlog):")
        for name, ms in res["importtime_top"]:
            print(f"  {ms:8.1f}  {name}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    if res["optional_after_import"]:
        sys.exit(f"`import historymw` imported optional dependencies: {res['optional_after_import']}")


if __name__ == "__main__":
    main()
