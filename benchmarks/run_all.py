"""Every benchmark of the project in one command: a results page with plots, ratios against same-run baselines.

    python benchmarks/run_all.py            # full run, for people (~25 minutes on 2 cores)
    python benchmarks/run_all.py --quick    # well under a minute, offline: CI runs it so nothing rots

Full run: writes benchmarks/results.md and docs/img/bench_*.png (raw JSON in benchmarks/out/).
Quick run: writes everything under benchmarks/out/quick/ and leaves the committed page alone.

Sections, each run in fresh processes (a benchmark never inherits another's heap,
callbacks or configuration), each interleaving its own contenders round by round:

1. Hot path: benchmarks/hot_path.py (the core on a bare function: bare, disabled, sampled
   out, recorded into ring / ring + sql / ring + otel, DSPy's history path) and
   benchmarks/peers.py (identical `litellm.completion(mock_response=...)` calls with each
   peer's instrumentation, and `dspy.LM` calls with DSPy's history vs historymw's).
2. Memory over calls: benchmarks/dspy_memory.py's DSPy program, DSPy as shipped vs DSPy
   with historymw, with ~4 KB and ~40 KB prompts: RSS growth along 50,000 calls, and the
   memory the history itself retains (tracemalloc, past DSPy's 10,000-entry cap).
3. Persistence: records/s end to end into SQLite and PostgreSQL vs the raw driver's
   executemany of the same rows (benchmarks/sql_throughput.py's functions).
4. Import cost: benchmarks/import_cost.py.
5. Instructions per call: benchmarks/instructions.py (callgrind; N calls minus 0 calls, baseline
   subtracted) for the core paths, the cache-hit `dspy.LM` call and the LiteLLM peers. Skipped
   in --quick (minutes per scenario), and said so on the page.

The Targets table puts the two measures of each target side by side, from the same run.

PostgreSQL: --postgres URL or $HISTORYMW_TEST_POSTGRES_URL; without either that row is skipped
and the page says so. matplotlib (the `bench` extra) draws the plots; without it the page
has tables only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common

HERE = Path(__file__).resolve().parent
DOCS_IMG = _common.ROOT / "docs" / "img"
RESULTS_MD = HERE / "results.md"
NOTES_BEGIN, NOTES_END = "<!-- notes: kept across runs -->", "<!-- /notes -->"
SIZES = {"4 KB": 4096, "40 KB": 40960}
MEMORY_VARIANTS = {"dspy": "DSPy as shipped", "historymw": "DSPy + historymw (default: 1,000 records, 16 MiB)"}

# -- children: one benchmark part per process -----------------------------------------------------


def memory_child(variant: str, size: int, calls: int, traced: bool) -> dict[str, Any]:
    """dspy_memory.py's child, with the prompt size this page needs (its CLI fixes ~4 KB)."""
    import dspy_memory

    def question(i: int) -> str:  # distinct per call, as real prompts are, `size` characters
        line = f"Record {i}: the quick brown fox jumps over the lazy dog while the history grows. "
        return (line * (size // len(line) + 1))[:size]

    dspy_memory.question = question
    return dspy_memory.child(variant, calls, traced, False)  # type: ignore[no-any-return]


def sql_child(n: int, rounds: int, postgres: str | None) -> dict[str, Any]:
    """End-to-end records/s against the raw driver, interleaved round by round, with sql_throughput.py's parts."""
    import gc

    import sql_throughput as st

    from historymw.sql import engine as sql_engine
    from historymw.sql import schema

    (columns, rows), (pg_columns, pg_rows) = st.baseline_rows(n)
    gc.collect()
    runs: dict[str, list[float]] = {"sqlite": [], "sqlite_raw": [], "postgres": [], "postgres_raw": []}

    def raw_pg(url: str) -> float:
        schema.ensure_schema(sql_engine.make_engine(url, create=True))
        return st.raw_postgres(url, pg_columns, pg_rows)

    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            raw_path = f"{tmp}/raw-{r}.db"
            schema.ensure_schema(sql_engine.make_engine(f"sqlite:///{raw_path}", create=True))
            runs["sqlite_raw"].append(st.raw_sqlite(raw_path, columns, rows))
            runs["sqlite"].append(st.end_to_end(f"sqlite:///{tmp}/e2e-{r}.db", n))
            if postgres:
                runs["postgres_raw"].append(st.in_fresh_schema(postgres, raw_pg))
                runs["postgres"].append(st.in_fresh_schema(postgres, lambda url: st.end_to_end(url, n)))
    pg_version = None
    if postgres:
        import sqlalchemy as sa

        eng = sa.create_engine(sql_engine.parse_url(postgres))
        with eng.connect() as conn:
            pg_version = conn.execute(sa.text("show server_version")).scalar()
        eng.dispose()
    return {"n": n, "rounds": rounds, "batch": st.BATCH, "runs": runs, "postgres_version": pg_version,
            "sqlite_version": __import__("sqlite3").sqlite_version}


# -- the parent -----------------------------------------------------------------------------------


def run(args: list[str], timeout: float = 3600) -> str:
    t = time.perf_counter()
    _common.eprint(f"  $ python {' '.join(args)}")
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=_common.child_env(),
                          cwd=_common.ROOT, timeout=timeout, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"benchmark failed ({proc.returncode}): python {' '.join(args)}")
    _common.eprint(f"    done in {time.perf_counter() - t:.0f} s")
    return proc.stdout


def child_json(args: list[str]) -> Any:
    return json.loads(run(args).strip().splitlines()[-1])


def hot_section(out: Path, quick: bool) -> dict[str, Any]:
    flag = ["--quick"] if quick else []
    run(["benchmarks/hot_path.py", *flag, "--json", str(out / "hot_path.json")])
    run(["benchmarks/peers.py", *flag, "--json", str(out / "peers.json")])
    return {"core": json.loads((out / "hot_path.json").read_text()),
            "peers": json.loads((out / "peers.json").read_text())}


def instructions_section(out: Path, quick: bool) -> dict[str, Any]:
    """benchmarks/instructions.py's callgrind counts (every scenario), or why they were not taken."""
    import instructions

    why = instructions.available()
    if why is None and quick:
        why = ("skipped in --quick: callgrind needs minutes per scenario (DSPy and LiteLLM ones most); "
               "run `python benchmarks/instructions.py` or a full run_all.py")
    if why is not None:
        _common.eprint(f"  instruction counts: {why}")
        return {"skipped": why}
    run(["benchmarks/instructions.py", "--json", str(out / "instructions.json")], timeout=4 * 3600)
    return {"results": json.loads((out / "instructions.json").read_text())}


def memory_section(calls: int, traced_calls: int, quick: bool) -> dict[str, Any]:
    # A quick run only checks that every part works: one traced run per variant and size stands for both.
    jobs = [(v, label, size, traced) for traced in ((True,) if quick else (False, True))
            for label, size in SIZES.items() for v in MEMORY_VARIANTS]
    results: dict[str, Any] = {"calls": traced_calls if quick else calls, "traced_calls": traced_calls, "runs": []}
    argv = [[__file__, "--memory-child", v, "--size", str(size), "--calls", str(traced_calls if traced else calls),
             *(["--traced"] if traced else [])] for v, _, size, traced in jobs]
    if quick:  # figures are not read in a quick run: run the children side by side to stay fast
        procs = [subprocess.Popen([sys.executable, *a], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=_common.child_env(), cwd=_common.ROOT) for a in argv]
        outs = []
        for p, a in zip(procs, argv, strict=True):
            stdout, stderr = p.communicate(timeout=600)
            if p.returncode != 0:
                sys.stderr.write(stderr[-5000:])
                raise SystemExit(f"benchmark failed: python {' '.join(a)}")
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    else:
        outs = [child_json(a) for a in argv]
    for (v, label, size, traced), res in zip(jobs, outs, strict=True):
        results["runs"].append({"variant": v, "size": label, "size_chars": size, "traced": traced, **res})
        if quick:
            results["runs"].append({"variant": v, "size": label, "size_chars": size, **res, "traced": False})
    return results


def sql_section(n: int, rounds: int, postgres: str | None) -> dict[str, Any]:
    return child_json([__file__, "--sql-child", "--n", str(n), "--rounds", str(rounds),
                       *(["--postgres", postgres] if postgres else [])])


def import_section(out: Path, quick: bool) -> dict[str, Any]:
    run(["benchmarks/import_cost.py", *(["--quick"] if quick else []), "--json", str(out / "import_cost.json")])
    return json.loads((out / "import_cost.json").read_text())  # type: ignore[no-any-return]


# -- figures --------------------------------------------------------------------------------------


def core_rows(hot: dict[str, Any]) -> list[dict[str, Any]]:
    """hot_path.py's rows, plus the otel-backend row from its otel_overhead rows (full runs only)."""
    rows = [dict(r) for r in hot["core"]["results"]]
    otel = dict(hot["core"].get("otel") or [])
    if "otel: bare function" in otel and "otel: historymw, ring + otel backend" in otel:
        added = otel["otel: historymw, ring + otel backend"] - otel["otel: bare function"]
        rows.insert(-2, {"name": "recorded (ring + otel backend)*", "added_us": added, "spread_us": None,
                         "per_call_us": otel["otel: historymw, ring + otel backend"]})
    return rows


Target = tuple[str, str, str, str, "bool | None"]  # path, µs measured, instructions, target, met


def _added(res: dict[str, Any], name: str) -> float | None:
    """Instructions per call that callgrind counted over the scenario's baseline (None: not counted)."""
    r = (res.get("instructions") or {}).get("results", {}).get(name)
    return None if r is None else r["added"]


def _instr(n: float | None) -> str:
    return "not counted" if n is None else f"{n:+,.0f}"


def _all(*oks: bool | None) -> bool | None:
    """Met when every measured part is met; None when nothing was measured."""
    known = [ok for ok in oks if ok is not None]
    return None if not known else all(known)


def issue_targets(res: dict[str, Any]) -> list[Target]:
    """The targets of the hot-path issue, each with the time (ratio-based, same-run baseline) and the
    callgrind instruction count (N calls minus 0 calls, baseline scenario subtracted) of ONE run."""
    out: list[Target] = []
    hot = res.get("hot")
    core = {r["name"]: r for r in core_rows(hot)} if hot else {}
    dspy_us = core.get("DSPy history path (10k full)", {}).get("added_us")
    dspy_in = _added(res, "dspy_history_path")
    for label, row, scen in (("`@recorded`, keyword call, 4 KB prompt, ring", "recorded (ring), keyword call",
                              "recorded_keyword"),
                             ("`@recorded`, positional call", "recorded (ring)", "recorded_positional")):
        us, n = core.get(row, {}).get("added_us"), _added(res, scen)
        parts = []
        if us is not None:
            parts.append(f"{us:.2f} µs" + (f", {dspy_us / us:.1f}× cheaper than DSPy's history" if dspy_us else ""))
        ratio_in = f" ({dspy_in / n:.1f}× cheaper than DSPy's history)" if n and dspy_in else ""
        out.append((label, "; ".join(parts) or "not run", _instr(n) + ratio_in,
                    "≤ 2.5 µs and ≥ 8× cheaper than DSPy's history path",
                    _all(None if us is None else us <= 2.5 and (dspy_us is None or dspy_us / us >= 8),
                         None if not n or not dspy_in else dspy_in / n >= 8)))
    for label, row, scen in (("disabled call", "disabled", "disabled"), ("sampled-out call", "sampled out",
                                                                          "sampled_out")):
        us, n = core.get(row, {}).get("added_us"), _added(res, scen)
        out.append((label, "not run" if us is None else f"{us:.3f} µs", _instr(n), "≤ 0.3 µs, pure Python",
                    None if us is None else us <= 0.3))
    peers = {r["key"]: r for r in hot["peers"].get("dspy", [])} if hot else {}
    timed = (peers.get("dspy_historymw", {}).get("caller", {}).get("median"),
             peers.get("dspy_shipped", {}).get("caller", {}).get("median"))
    # Two shapes counted; peers.py times the second, `lm(PROMPT)`.
    for shape, scen, (us, theirs) in (("two short messages", "dspy", (None, None)),
                                      ("`lm(PROMPT)`, 4 KB (peers.py's call)", "dspy_prompt", timed)):
        n, n_theirs = _added(res, f"{scen}_historymw"), _added(res, f"{scen}_shipped")
        out.append((f"DSPy cache-hit `dspy.LM` call with `install()`, {shape}, over `disable_history=True`",
                    "timed as `lm(PROMPT)`" if scen == "dspy" else "not run" if us is None
                    else f"{us:+.1f} µs (DSPy's own history {theirs:+.1f} µs)",
                    _instr(n) + (f" (DSPy's own history {n_theirs:+,.0f}: {n_theirs / n:.1f}× ours)"
                                 if n and n_theirs else ""),
                    "≤ 3 µs, i.e. ≥ 7× cheaper than DSPy's own history",
                    _all(None if us is None else us <= 3, None if not n or not n_theirs else n_theirs / n >= 7)))
    lite = {r["key"]: r for r in hot["peers"]["litellm"]} if hot else {}
    mine_us = lite.get("hm_ring", {}).get("total", {}).get("median")
    mine, oi, noop = (_added(res, "litellm_historymw"), _added(res, "litellm_openinference"),
                      _added(res, "litellm_custom_logger"))
    def total(key: str) -> float:
        return float(lite.get(key, {}).get("total", {}).get("median", float("nan")))

    measured_us = "not run" if mine_us is None else (
        f"{mine_us:+.0f} µs total CPU (OpenInference {total('openinference'):+.0f}, empty CustomLogger "
        f"{total('litellm_noop'):+.0f}; time cannot resolve this)")
    counted = _instr(mine)
    if mine is not None and oi and noop:
        counted += (f" (OpenInference {oi:+,.0f}: ours is {mine / oi:.0%} of it; empty CustomLogger {noop:+,.0f}: "
                    f"ours is {mine / noop:.0%})")
    out.append(("LiteLLM `completion(mock_response=…)`, whole process", measured_us, counted,
                "instructions ≤ ¼ of OpenInference's and ≤ an empty CustomLogger's + 25%",
                None if mine is None or not oi or not noop else mine <= oi / 4 and mine <= noop * 1.25))
    if "import" in res:
        import import_cost

        added = import_cost.import_added(res["import"])
        out.append(("`import historymw` over `import pydantic, structlog`", f"{added:+.1f} ms", "—", "≤ 50 ms",
                    added <= 50))
    return out


def verdicts(res: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for the targets outside the hot-path issue's table that this run measured."""
    out: list[tuple[str, str, bool | None]] = []
    if "hot" in res:
        peers = {r["key"]: r for r in res["hot"]["peers"]["litellm"]}
        if "hm_otel" in peers:
            mine = peers["hm_otel"]
            for key, label in (("openinference", "OpenInference"), ("litellm_otel", "LiteLLM's own OTel callback")):
                if key in peers:
                    theirs = peers[key]
                    ok = (mine["caller"]["median"] < theirs["caller"]["median"]
                          and mine["total"]["median"] < theirs["total"]["median"])
                    out.append((f"otel-backed recorded call cheaper than {label}",
                                f"caller +{mine['caller']['median']:.0f} vs +{theirs['caller']['median']:.0f} µs; "
                                f"total CPU +{mine['total']['median']:.0f} vs +{theirs['total']['median']:.0f} µs",
                                ok))
    if "memory" in res:
        for label in SIZES:
            hm_run = _mem_run(res["memory"], "historymw", label, traced=False)
            if hm_run and "historymw" in hm_run:
                h = hm_run["historymw"]
                out.append((f"retained memory within the byte budget ({label} prompts)",
                            f"{h['bytes_held'] / 2**20:.1f} MiB held of {h['max_bytes'] / 2**20:.0f} MiB after "
                            f"{hm_run['calls']:,} calls", h["bytes_held"] <= h["max_bytes"]))
    if "sql" in res:
        for key, label, target in (("sqlite", "SQLite", 50_000), ("postgres", "PostgreSQL", 20_000)):
            runs = res["sql"]["runs"]
            if runs[key]:
                e2e, raw = statistics.median(runs[key]), statistics.median(runs[f"{key}_raw"])
                out.append((f"≥ {target:,} records/s into {label}, ≥ half the raw driver",
                            f"{e2e:,.0f}/s, {e2e / raw:.2f}× raw ({raw:,.0f}/s)", e2e >= target and e2e >= raw / 2))
            else:
                out.append((f"≥ {target:,} records/s into {label}", "not run (no PostgreSQL URL)", None))
    if "import" in res:
        import import_cost

        opt = res["import"]["optional_after_import"]
        own = import_cost.import_added_own(res["import"])
        if own is not None:
            out.append(("(the same, once pydantic has defined one model: historymw's own modules)", f"{own:.1f} ms",
                        own <= 50))
        out.append(("`import historymw` imports no optional dependency", ", ".join(opt) or "none imported", not opt))
    return out


def _mem_run(mem: dict[str, Any], variant: str, size: str, traced: bool) -> dict[str, Any] | None:
    return next((r for r in mem["runs"] if r["variant"] == variant and r["size"] == size and r["traced"] == traced),
                None)


def plot_hot(res: dict[str, Any], path: Path, desc: str, cmd: str) -> None:
    plt = _common.pyplot()
    core = [r for r in core_rows(res["hot"]) if r["name"] != "bare"]
    peers = res["hot"]["peers"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), gridspec_kw={"width_ratios": [1, 1.25]})
    ax = axes[0]
    dspy_us = next(r["added_us"] for r in core if r["name"].startswith("DSPy"))
    names = [r["name"] for r in core][::-1]
    vals = [max(r["added_us"], 1e-3) for r in core][::-1]
    colours = ["#d62728" if n.startswith("DSPy") else "#7f7f7f" if n.startswith("pydantic") else "#1f77b4"
               for n in names]
    ax.barh(names, vals, color=colours)
    for i, (n, v) in enumerate(zip(names, vals, strict=True)):
        label = "baseline" if n.startswith("DSPy") else f"{dspy_us / v:.0f}× cheaper" if v < dspy_us else \
            f"{v / dspy_us:.1f}× dearer"
        ax.text(v * 1.08, i, f"{v:.2f} µs · {label}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(vals) / 2, max(vals) * 12)
    ax.set_xlabel("µs added per call (log scale), median of interleaved rounds")
    ax.set_title("Core hot path on a bare function (4 KB prompt)\nratio vs DSPy's own history path", fontsize=10)
    ax.grid(axis="x", alpha=0.3, which="both")

    ax = axes[1]
    rows = [r for r in peers["litellm"] if r["key"] != "bare"][::-1]
    base = peers["litellm"][0]["caller_us_per_call"]
    y = range(len(rows))
    caller = [r["caller"]["median"] for r in rows]
    total = [r["total"]["median"] for r in rows]
    err = [[r["caller"]["median"] - r["caller"]["min"] for r in rows],
           [r["caller"]["max"] - r["caller"]["median"] for r in rows]]
    ax.barh([i + 0.2 for i in y], caller, height=0.4, color="#1f77b4", xerr=err, capsize=2,
            error_kw={"elinewidth": 0.8, "ecolor": "#555555"}, label="caller thread CPU (min..max over rounds)")
    ax.barh([i - 0.2 for i in y], total, height=0.4, color="#ff7f0e", label="total CPU, every thread")
    for i, (c, t) in enumerate(zip(caller, total, strict=True)):
        ax.text(max(c, t, 0) + 8, i, f"+{c / base:.0%} / +{t / base:.0%}", va="center", fontsize=8)
    ax.set_yticks(list(y), [r["name"] for r in rows], fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"µs added per call vs the bare call ({base:.0f} µs caller CPU)\n"
                  "labels: caller / total added, as a share of the bare call", fontsize=8, labelpad=2)
    ax.set_title(f"Peers on identical litellm.completion(mock_response=...)\ncalls, {peers['rounds']} interleaved "
                 "rounds", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    ax.set_xlim(right=max(*caller, *total) * 1.3)
    ax.grid(axis="x", alpha=0.3)
    _common.footer(fig, desc, cmd)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(res: dict[str, Any], path: Path, desc: str, cmd: str) -> None:
    plt = _common.pyplot()
    mem = res["memory"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    colour = {"dspy": "#d62728", "historymw": "#1f77b4"}
    style = {"4 KB": "-", "40 KB": "--"}
    budget = None
    for traced, ax, key, title in ((False, axes[0], "rss_mib", f"process RSS growth over {mem['calls']:,} calls"),
                                   (True, axes[1], "traced_mib",
                                    f"Python memory held (tracemalloc), {mem['traced_calls']:,} calls")):
        for v, vlabel in MEMORY_VARIANTS.items():
            for size in SIZES:
                r = _mem_run(mem, v, size, traced)
                if r is None:
                    continue
                xs = [0] + [s["calls"] for s in r["samples"]]
                ys = [0.0] + [s[key] for s in r["samples"]]
                ax.plot(xs, ys, style[size], color=colour[v], label=f"{vlabel}, {size} prompts")
                ax.annotate(f"{ys[-1]:.0f} MiB", (xs[-1], ys[-1]), fontsize=8, color=colour[v],
                            textcoords="offset points", xytext=(3, 2))
                if "historymw" in r:
                    budget = r["historymw"]["max_bytes"] / 2**20
        if budget:
            ax.axhline(budget, color="grey", linestyle=":", linewidth=1)
            ax.text(ax.get_xlim()[1] * 0.02, budget * 1.03, f"historymw byte budget {budget:.0f} MiB", color="grey",
                    fontsize=8)
        if ax.get_xlim()[1] > 10_000:
            ax.axvline(10_000, color="#d62728", linestyle=":", linewidth=0.8, alpha=0.6)
            ax.text(10_000, 0, " DSPy's 10,000-entry cap", color="#d62728", fontsize=8, va="bottom")
        ax.set_xlabel("DSPy ChainOfThought calls (LiteLLM mock_response)")
        ax.set_ylabel("MiB")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    dspy40 = _mem_run(mem, "dspy", "40 KB", True)
    hm40 = _mem_run(mem, "historymw", "40 KB", True)
    if dspy40 and hm40 and hm40.get("retained_by_history_mib"):
        axes[1].text(0.02, 0.62, f"40 KB prompts: DSPy's history retains "
                     f"{dspy40['retained_by_history_mib'] / hm40['retained_by_history_mib']:.0f}× what historymw does",
                     transform=axes[1].transAxes, fontsize=9)
    axes[0].legend(fontsize=8, loc="center right")
    fig.suptitle("Memory against calls: DSPy's history vs historymw on the same DSPy program", fontsize=11)
    _common.footer(fig, desc, cmd)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sql(res: dict[str, Any], path: Path, desc: str, cmd: str) -> None:
    plt = _common.pyplot()
    runs = res["sql"]["runs"]
    stores = [(k, label, target) for k, label, target in (("sqlite", "SQLite (file, WAL)", 50_000),
                                                         ("postgres", "PostgreSQL (psycopg 3)", 20_000)) if runs[k]]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for i, (k, _, target) in enumerate(stores):
        e2e, raw = statistics.median(runs[k]), statistics.median(runs[f"{k}_raw"])
        ax.bar(i - 0.2, raw / 1000, width=0.38, color="#7f7f7f", label="raw driver executemany" if i == 0 else None)
        ax.bar(i + 0.2, e2e / 1000, width=0.38, color="#1f77b4",
               label="historymw end to end (call → row committed)" if i == 0 else None,
               yerr=[[e2e / 1000 - min(runs[k]) / 1000], [max(runs[k]) / 1000 - e2e / 1000]], capsize=3)
        ax.hlines(target / 1000, i + 0.01, i + 0.39, color="#2ca02c", linestyle="--", linewidth=1.2,
                  label="target" if i == 0 else None)
        ax.text(i + 0.2, e2e / 1000, f"{e2e / 1000:.0f}k/s\n{e2e / raw:.2f}× raw", ha="center", va="bottom",
                fontsize=9)
        ax.text(i - 0.2, raw / 1000, f"{raw / 1000:.0f}k/s", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(stores)), [s[1] for s in stores])
    ax.set_ylabel("thousand records per second")
    ax.set_title(f"Persistence: {res['sql']['n']:,} records per run, median of {res['sql']['rounds']} "
                 "interleaved rounds", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.2)
    _common.footer(fig, desc, cmd)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_import(res: dict[str, Any], path: Path, desc: str, cmd: str) -> None:
    plt = _common.pyplot()
    rows = res["import"]["rows"][::-1]
    base = next(r["ms"] for r in rows if r["key"] == "base")
    fig, ax = plt.subplots(figsize=(10, 4.8))
    colours = ["#7f7f7f" if r["key"] == "base" else "#d62728" if r["key"] in ("dspy", "litellm") else "#1f77b4"
               for r in rows]
    ax.barh([r["name"] for r in rows], [r["ms"] for r in rows], color=colours,
            xerr=[[r["ms"] - r["min"] for r in rows], [r["max"] - r["ms"] for r in rows]], capsize=2,
            error_kw={"elinewidth": 0.8, "ecolor": "#555555"})
    for i, r in enumerate(rows):
        ax.text(r["max"] * 1.05, i, f"{r['ms']:.0f} ms · {r['ms'] / base:.1f}× baseline", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(r["ms"] for r in rows) / 2, max(r["max"] for r in rows) * 6)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel("ms, median of fresh processes (log scale; bars: min..max)")
    ax.set_title("Import cost (interpreter start-up not counted)", fontsize=10)
    ax.grid(axis="x", alpha=0.3, which="both")
    _common.footer(fig, desc, cmd)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the page -------------------------------------------------------------------------------------


def target_table(res: dict[str, Any]) -> str:
    """The issue's targets: time (µs added, median of interleaved rounds against a same-run baseline) and
    instructions (callgrind, N calls minus 0 calls, baseline scenario subtracted) side by side."""
    lines = ["| path | measured (µs added, ratio-based) | instructions added per call (callgrind) | target | met? |",
             "|---|---|---|---|---|"]
    for path, us, n, target, ok in issue_targets(res):
        lines.append(f"| {path} | {us} | {n} | {target} | "
                     f"{'met' if ok else 'not measured' if ok is None else '**missed**'} |")
    skipped = (res.get("instructions") or {}).get("skipped")
    if skipped:
        lines.append(f"\nInstruction counts: {skipped}.")
    return "\n".join(lines)


def _f(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def page(res: dict[str, Any], images: dict[str, str], cmd: str, notes: str) -> str:
    m = res["machine"]
    lines: list[str] = []
    w = lines.append
    w("# historymw benchmarks: the results\n")
    w("<!-- generated by benchmarks/run_all.py: edit only the notes section, which is kept across runs -->\n")
    w(f"Reproduce: `{cmd}` ({'quick mode: numbers indicative only' if res['quick'] else 'full run'}; "
      f"took {res['elapsed_s'] / 60:.0f} min).  ")
    w(f"Machine: {_common.machine_line(m)}.  ")
    la, lb = res["load_start"], res["load_end"]
    if la and lb:
        w(f"Load average (1/5/15 min) at start {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}, at end "
          f"{lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f}: other work shared these cores, which is why every benchmark "
          "interleaves its contenders round by round and reports each figure against a baseline measured in the "
          "same rounds.  ")
    w(f"Run on {res['date']}; versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()) + ".\n")
    w("## Targets\n")
    w(target_table(res))
    w("")
    w("| other target | measured | |")
    w("|---|---|---|")
    for target, measured, ok in verdicts(res):
        w(f"| {target} | {measured} | {'met' if ok else 'not run' if ok is None else '**missed**'} |")
    w("")
    w(NOTES_BEGIN)
    w(notes.strip() if notes.strip() else "(no notes yet)")
    w(NOTES_END + "\n")

    if "hot" in res:
        hot = res["hot"]
        core = core_rows(hot)
        w("## 1. Hot path: what a call pays for being recorded\n")
        if "hot" in images:
            w(f"![hot path]({images['hot']})\n")
        c = hot["core"]
        w(f"**Core, on a bare function** (`benchmarks/hot_path.py`: {c['rounds']} interleaved rounds × "
          f"{c['calls']:,} calls, 4 KB prompt; the calling thread's CPU µs added to the bare call, median and "
          "min..max over rounds). "
          "This isolates historymw: LiteLLM's own ~1 ms per mock call would drown these microseconds.\n")
        dspy_us = next(r["added_us"] for r in core if r["name"].startswith("DSPy"))
        w("| contender | µs per call | µs added | min..max | vs DSPy's history path |")
        w("|---|---:|---:|---:|---:|")
        for r in core:
            sp = r["spread_us"]
            ratio = "" if r["name"] == "bare" else ("baseline" if r["name"].startswith("DSPy")
                                                     else f"{dspy_us / r['added_us']:.1f}× cheaper"
                                                     if r["added_us"] > 0 else "")
            w(f"| {r['name']} | {_f(r['per_call_us'], 3)} | {_f(r['added_us'], 3)} | "
              f"{_f(sp[0], 2) + '..' + _f(sp[1], 2) if sp else '—'} | {ratio} |")
        if any(r["name"].endswith("*") for r in core):
            w("\n\\* caller-thread CPU from benchmarks/otel_overhead.py's rows in the same hot_path.py run "
              "(a TracerProvider with a BatchSpanProcessor and in-memory exporter); no spread recorded.\n")
        p = hot["peers"]
        base = p["litellm"][0]
        w(f"\n**Peers, on identical LiteLLM calls** (`benchmarks/peers.py`: `litellm.completion(model=\"gpt-4o-mini\", "
          f"messages=..., mock_response=\"Paris.\")`, {p['prompt_chars']}-char prompt, {p['rounds']} interleaved "
          f"rounds × {p['calls_per_round']} calls per contender). Caller = CPU time of the calling thread "
          "(`time.thread_time`), what the call itself pays; LiteLLM hands success events to background logging "
          "threads, so callbacks run there. Total = CPU time of the whole process for the calls plus draining "
          "everything they queued (logging threads idle, export workers flushed, spans exported): all the work, "
          "wherever it ran. Wall = the caller's elapsed time. All are µs added to the bare call in the same round; "
          "a difference of a few µs is below what this measures (see the min..max).\n")
        w("| contender (LiteLLM) | caller µs/call | + caller | min..max | + total CPU | + wall | "
          "+ caller vs bare | spans/call |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in p["litellm"]:
            cc = r["caller"]
            w(f"| {r['name']} | {r['caller_us_per_call']:.0f} | {cc['median']:+.1f} | "
              f"{cc['min']:+.0f}..{cc['max']:+.0f} | {r['total']['median']:+.1f} | {r['wall']['median']:+.1f} | "
              f"{cc['median'] / base['caller_us_per_call']:+.1%} | {r['spans_per_call']:.0f} |")
        if p.get("dspy"):
            w("\n`dspy.LM(\"openai/gpt-4o-mini\", mock_response=..., cache=True)` called with the same prompt "
              "(cache hits); "
              "the baseline is DSPy with `disable_history=True` (DSPy then builds no history entry at all):\n")
            w("| contender (DSPy) | caller µs/call | + caller | min..max | + total CPU | + wall |")
            w("|---|---:|---:|---:|---:|---:|")
            for r in p["dspy"]:
                cc = r["caller"]
                w(f"| {r['name']} | {r['caller_us_per_call']:.0f} | {cc['median']:+.1f} | "
                  f"{cc['min']:+.0f}..{cc['max']:+.0f} | {r['total']['median']:+.1f} | {r['wall']['median']:+.1f} |")
        w("")

    if (res.get("instructions") or {}).get("results"):
        w("## Instructions per call (callgrind)\n")
        w("`benchmarks/instructions.py`: each scenario in two fresh processes under `valgrind --tool=callgrind`, "
          "one making N calls and one making 0, identical otherwise (imports, setup and warm-up uninstrumented; "
          "counting switched on around the calls and the draining of what they queued: LiteLLM's logging threads, "
          "export workers). Every thread is counted. Per call = (N − 0) / N; added = per call minus the "
          "baseline scenario's. Counts do not move with the machine's load, as times do.\n")
        w("| scenario | instructions per call | added | over | N |")
        w("|---|---:|---:|---|---:|")
        for r in res["instructions"]["results"].values():
            added = "baseline" if r["added"] is None else f"{r['added']:+,.0f}"
            w(f"| {r['what']} | {r['per_call']:,.0f} | {added} | {r['baseline'] or ''} | {r['calls']} |")
        w("")

    if "memory" in res:
        mem = res["memory"]
        w("## 2. Memory over calls: DSPy's history vs historymw\n")
        if "memory" in images:
            w(f"![memory over calls]({images['memory']})\n")
        w(f"benchmarks/dspy_memory.py's program (a `dspy.ChainOfThought` in a module, `dspy.LM` on LiteLLM's "
          f"`mock_response=`, `cache=False`, a distinct prompt per call, DSPy's program trace off in both variants), "
          f"each variant in a fresh process. RSS growth along {mem['calls']:,} calls; the memory the history itself "
          f"retains (what clearing it frees, tracemalloc) after {mem['traced_calls']:,} calls, past DSPy's "
          "10,000-entry cap (tracemalloc makes each call ~4× slower, hence the shorter run).\n")
        w("| variant | prompt | RSS growth | retained by history | records held (historymw) | ms per call |")
        w("|---|---|---:|---:|---:|---:|")
        for v, vlabel in MEMORY_VARIANTS.items():
            for size in SIZES:
                plain, traced = _mem_run(mem, v, size, False), _mem_run(mem, v, size, True)
                if plain is None or traced is None:
                    continue
                h = plain.get("historymw")
                held = (f"{h['records_held']:,} ({h['bytes_held'] / 2**20:.1f} of {h['max_bytes'] / 2**20:.0f} MiB)"
                        if h else f"— (DSPy lists: {plain['dspy_lists']['GLOBAL_HISTORY']:,} entries)")
                w(f"| {vlabel} | {size} | {plain['rss_growth_mib']:.0f} MiB | "
                  f"{traced['retained_by_history_mib']:.1f} MiB | {held} | {plain['us_per_call'] / 1000:.2f} |")
        w("")

    if "sql" in res:
        sq = res["sql"]
        w("## 3. Persistence: records per second\n")
        if "sql" in images:
            w(f"![persistence]({images['sql']})\n")
        w(f"End to end: {sq['n']:,} recorded calls with `backends=[\"sql\"]`, timed from the first call until "
          "`hm.flush()` returns (every row committed; caller and export worker share one interpreter). Baseline "
          f"in the same rounds: the raw driver (sqlite3 {sq['sqlite_version']} / psycopg 3) inserting the same rows, "
          f"already built as tuples, with executemany in {sq['batch']}-row transactions into the same table. Median "
          f"of {sq['rounds']} interleaved rounds (min..max).\n")
        w("| store | historymw rec/s | raw executemany rec/s | ratio | target |")
        w("|---|---:|---:|---:|---:|")
        for k, label, target in (("sqlite", "SQLite (file, WAL)", 50_000), ("postgres", "PostgreSQL", 20_000)):
            runs = sq["runs"][k]
            if not runs:
                w(f"| {label} | not run: no PostgreSQL URL | | | ≥ {target:,} |")
                continue
            e2e, raw = statistics.median(runs), statistics.median(sq["runs"][f"{k}_raw"])
            if k == "postgres" and sq.get("postgres_version"):
                label += f" {sq['postgres_version'].split()[0]}"
            w(f"| {label} | {e2e:,.0f} ({min(runs):,.0f}..{max(runs):,.0f}) | {raw:,.0f} | {e2e / raw:.2f} | "
              f"≥ {target:,} and ≥ 0.50 |")
        w("")

    if "import" in res:
        imp = res["import"]
        w("## 4. Import cost\n")
        if "import" in images:
            w(f"![import cost]({images['import']})\n")
        w(f"benchmarks/import_cost.py: each row in a fresh interpreter, the statement timed from inside (start-up "
          f"not counted), median of {imp['runs']} runs, rows interleaved. After `import historymw`, optional "
          f"modules in `sys.modules`: {', '.join(imp['optional_after_import']) or 'none'}.\n")
        w("| statement | ms | min..max | added to baseline | × baseline |")
        w("|---|---:|---:|---:|---:|")
        for r in imp["rows"]:
            w(f"| {r['name']} | {r['ms']:.1f} | {r['min']:.0f}..{r['max']:.0f} | {r['added_ms']:+.1f} | "
              f"{r['ratio']:.2f} |")
        w("")
    return "\n".join(lines) + "\n"


def kept_notes(path: Path) -> str:
    if not path.exists():
        return ""
    m = re.search(re.escape(NOTES_BEGIN) + r"\n(.*?)\n" + re.escape(NOTES_END), path.read_text(), re.S)
    return m.group(1) if m and m.group(1).strip() != "(no notes yet)" else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="well under a minute, offline; writes benchmarks/out/quick/")
    ap.add_argument("--only", default="hot,instructions,memory,sql,import",
                    help="comma list of sections (hot, instructions, memory, sql, import); default all")
    ap.add_argument("--out", help="directory for results.md and the plots (default: the committed page for a full "
                    "run, benchmarks/out/quick/ for a quick one)")
    ap.add_argument("--postgres", default=os.environ.get("HISTORYMW_TEST_POSTGRES_URL"),
                    help="PostgreSQL URL (default: $HISTORYMW_TEST_POSTGRES_URL); without one that row is skipped")
    ap.add_argument("--memory-calls", type=int, help="DSPy calls for the RSS curve (default 50000)")
    ap.add_argument("--memory-traced-calls", type=int, help="DSPy calls under tracemalloc (default 11000)")
    ap.add_argument("--sql-n", type=int, help="records per persistence run (default 100000)")
    ap.add_argument("--from-json", metavar="PATH", help="redraw the page and plots from a saved run (run_all.json)")
    # Children (one benchmark part per process):
    ap.add_argument("--memory-child", choices=sorted(MEMORY_VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--calls", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sql-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.size, args.calls, args.traced)))
        return
    if args.sql_child:
        print(json.dumps(sql_child(args.n, args.rounds, args.postgres)))
        return

    quick = args.quick
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.out:
        out_dir = img_dir = Path(args.out).resolve()
        md = out_dir / "results.md"
    elif quick:
        out_dir = img_dir = _common.OUT / "quick"
        md = out_dir / "results.md"
    else:
        out_dir, img_dir, md = _common.OUT, DOCS_IMG, RESULTS_MD
    out_dir.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    raw_dir = out_dir if quick or args.out else _common.OUT
    cmd = "python benchmarks/run_all.py" + (" --quick" if quick else "")
    if args.only != ap.get_default("only"):
        cmd += f" --only {args.only}"

    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
        cmd = "python benchmarks/run_all.py" + (" --quick" if res["quick"] else "")
        report(res, img_dir, md, cmd)
        return
    t0 = time.perf_counter()
    res: dict[str, Any] = {"quick": quick, "machine": _common.machine(), "load_start": _common.load(),
                           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    import historymw

    res["versions"] = {"historymw": historymw.__version__, "python": platform.python_version(),
                       **_common.versions("pydantic", "structlog", "litellm", "dspy", "opentelemetry-sdk",
                                          "openinference-instrumentation-litellm", "sqlalchemy", "psycopg",
                                          "matplotlib")}
    _common.eprint(f"historymw benchmarks ({'quick' if quick else 'full'}): {', '.join(sections)}")
    if "hot" in sections:
        res["hot"] = hot_section(raw_dir, quick)
    if "instructions" in sections:
        res["instructions"] = instructions_section(raw_dir, quick)
    if "sql" in sections:
        res["sql"] = sql_section(args.sql_n or (3_000 if quick else 100_000), 1 if quick else 3, args.postgres)
    if "import" in sections:
        res["import"] = import_section(raw_dir, quick)
    if "memory" in sections:
        res["memory"] = memory_section(args.memory_calls or (150 if quick else 50_000),
                                       args.memory_traced_calls or (100 if quick else 11_000), quick)
    res["load_end"] = _common.load()
    res["elapsed_s"] = time.perf_counter() - t0
    (raw_dir / ("results.json" if raw_dir != _common.OUT else "run_all.json")).write_text(json.dumps(res, indent=1))
    report(res, img_dir, md, cmd)


def report(res: dict[str, Any], img_dir: Path, md: Path, cmd: str) -> None:
    images: dict[str, str] = {}
    desc = f"{_common.machine_line(res['machine'])}; {res['date']}"
    if _common.pyplot() is None:
        _common.eprint("matplotlib is not installed (pip install -e '.[bench]'): the page has tables only")
    else:
        plots = {"hot": plot_hot, "memory": plot_memory, "sql": plot_sql, "import": plot_import}
        for name, fn in plots.items():
            if name in res:
                path = img_dir / f"bench_{name}.png"
                fn(res, path, desc, cmd)
                images[name] = os.path.relpath(path, md.parent)
    md.write_text(page(res, images, cmd, kept_notes(md)))
    print(page(res, images, cmd, kept_notes(md)).split(NOTES_BEGIN)[0])
    _common.eprint(f"wrote {md} and {len(images)} plots in {img_dir} ({res['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
