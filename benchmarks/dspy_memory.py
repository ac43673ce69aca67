"""DSPy's global history against historymw, on the same DSPy program, in one run.

    python benchmarks/dspy_memory.py              # 20,000 LM calls per variant (several minutes)
    python benchmarks/dspy_memory.py --quick      # 1,000 calls (CI runs this so it never rots)
    python benchmarks/dspy_memory.py --calls 5000

The program is a `dspy.ChainOfThought` inside a small module, on `dspy.LM` with
LiteLLM's `mock_response=` (offline, `cache=False`), asked a distinct ~4 KB
question per call. Variants, each in a fresh Python process so that one does
not inherit the other's heap:

- dspy: DSPy as it ships (GLOBAL_HISTORY, lm.history and module histories, 10,000 entries each).
- historymw: `historymw.integrations.dspy.install()` with the default configuration
  (ring of 1,000 records within 16 MiB).
- historymw maxlen=10000: as many records as DSPy keeps, so that the byte budget (16 MiB) binds.

DSPy's program trace (`settings.trace`, another list of up to 10,000 entries
that pins every input; not history, and historymw leaves it alone) is off in
every variant so that the curves show history alone; `--keep-trace` keeps it.

Each variant runs the calls plain (`--repeat` times, interleaved, fastest kept),
for the time per call and the process RSS, then once under tracemalloc, for the
Python memory held, sampled along the way. "Retained by history" is what clearing the history frees at the end
(DSPy's lists, or historymw's ring), measured with tracemalloc.

A last section times the history path alone, per call, on a real entry:
DSPy's `record_history` with its lists full at 10,000, against historymw's
replacement of it.

Writes benchmarks/out/dspy_memory.json and benchmarks/out/dspy_memory.png;
a full run (not --quick) also writes docs/img/dspy_memory.png for the README.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
DOCS_IMG = ROOT / "docs" / "img" / "dspy_memory.png"
REPLY = "[[ ## reasoning ## ]]\nThe text repeats a pattern.\n\n[[ ## answer ## ]]\n42\n\n[[ ## completed ## ]]"
VARIANTS = {
    "dspy": {"label": "DSPy as shipped", "install": False, "configure": {}},
    "historymw": {"label": "historymw (default: 1,000 records, 16 MiB)", "install": True, "configure": {}},
    "historymw-10k": {"label": "historymw maxlen=10000 (16 MiB budget binds)", "install": True,
                      "configure": {"maxlen": 10_000}},
}


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is the best the stdlib offers
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def question(i: int) -> str:
    # ~4 KB and distinct per call, as real prompts are (a shared string would be kept once).
    line = f"Record {i}: the quick brown fox jumps over the lazy dog while the history grows. "
    return (line * (4096 // len(line) + 1))[:4096]


# -- one variant, in a child process --------------------------------------------------------


def child(variant: str, calls: int, traced: bool, keep_trace: bool) -> dict[str, Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy
    from dspy.clients import base_lm

    import historymw as hm

    spec = VARIANTS[variant]
    if spec["install"]:
        from historymw.integrations import dspy as hm_dspy

        hm.configure(**spec["configure"])
        hm_dspy.install()

    class Program(dspy.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.think = dspy.ChainOfThought("document, question -> answer")

        def forward(self, document: str) -> Any:
            return self.think(document=document, question="What number does the text imply?")

    lm = dspy.LM("openai/gpt-4o-mini", mock_response=REPLY, cache=False, num_retries=0)
    # DSPy's program trace (settings.trace) is another list of up to 10,000 entries that pins
    # every input; it is not history and historymw leaves it alone, so it is off in every
    # variant (--keep-trace puts it back) and the curves show history alone.
    dspy.configure(lm=lm, **({} if keep_trace else {"max_trace_size": 0}))
    program = Program()
    for i in range(20):  # warm-up: imports, caches, LiteLLM's first-call setup
        program(document=question(-i))
    base_lm.GLOBAL_HISTORY.clear()
    lm.history.clear()
    for m in (program, program.think, program.think.predict):
        m.history.clear()
    if spec["install"]:
        hm.configure(**spec["configure"])
    gc.collect()

    import tracemalloc

    if traced:
        tracemalloc.start()
    base_traced = tracemalloc.get_traced_memory()[0] if traced else 0
    base_rss = rss_bytes()
    every = max(calls // 50, 1)
    samples: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for i in range(calls):
        program(document=question(i))
        if (i + 1) % every == 0 or i + 1 == calls:
            samples.append({"calls": i + 1, "elapsed_s": time.perf_counter() - t0,
                            "rss_mib": (rss_bytes() - base_rss) / 2**20,
                            "traced_mib": ((tracemalloc.get_traced_memory()[0] - base_traced) / 2**20
                                           if traced else 0.0)})
    elapsed = time.perf_counter() - t0
    result: dict[str, Any] = {"variant": variant, "calls": calls, "traced": traced,
                              "us_per_call": elapsed / calls * 1e6, "samples": samples,
                              "rss_growth_mib": (rss_bytes() - base_rss) / 2**20,
                              "dspy_lists": {"GLOBAL_HISTORY": len(base_lm.GLOBAL_HISTORY),
                                             "lm.history": len(lm.history),
                                             "module histories": [len(m.history) for m in
                                                                  (program, program.think,
                                                                   program.think.predict)]}}
    if spec["install"]:
        stats = hm.stats()
        result["historymw"] = {"records_held": stats.records_held, "bytes_held": stats.bytes_held,
                               "max_bytes": stats.max_bytes, "evicted": stats.evicted,
                               "recorded": stats.recorded}
    if traced:
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        if spec["install"]:
            hm.ring().clear()
        else:
            base_lm.GLOBAL_HISTORY.clear()
            lm.history.clear()
            for m in (program, program.think, program.think.predict):
                m.history.clear()
        gc.collect()
        result["retained_by_history_mib"] = (held - tracemalloc.get_traced_memory()[0]) / 2**20
        tracemalloc.stop()
    return result



def _best_us(step: Any, rounds: int) -> float:
    """Best of 5 timings of `rounds` calls of step(), in µs per call."""
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(rounds):
            step()
        best = min(best, (time.perf_counter() - t) / rounds * 1e6)
    return best

def history_path(rounds: int) -> dict[str, float]:
    """µs per call of the history path alone, on a real entry: DSPy's lists full, then historymw."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy
    from dspy.clients import base_lm
    from dspy.dsp.utils.settings import settings

    import historymw as hm
    from historymw.integrations import dspy as hm_dspy

    lm = dspy.LM("openai/gpt-4o-mini", mock_response=REPLY, cache=False, num_retries=0)
    cot = dspy.ChainOfThought("document, question -> answer")
    with dspy.context(lm=lm):
        cot(document=question(0), question="q")
    entry = lm.history[-1]
    out: dict[str, float] = {}
    with settings.context(caller_modules=[cot, cot.predict]):
        for _ in range(base_lm.MAX_HISTORY_SIZE):
            base_lm.record_history(lm, entry)
        out["dspy_record_history_us"] = _best_us(lambda: base_lm.record_history(lm, entry), rounds)
        hm.configure()
        hm_dspy.install()
        for _ in range(hm.settings().maxlen):
            base_lm.record_history(lm, entry)  # the ring full too: every call evicts
        out["historymw_route_us"] = _best_us(lambda: base_lm.record_history(lm, entry), rounds)
        hm_dspy.uninstall()
    return out


# -- the parent: run everything, print, plot ----------------------------------------------------


def run_child(*args: str) -> Any:
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONHASHSEED="0")
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {args} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plot(results: dict[str, dict[str, Any]], path: Path, calls: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    colours = {"dspy": "#d62728", "historymw": "#1f77b4", "historymw-10k": "#2ca02c"}
    for variant, res in results.items():
        mem = res["memory"]["samples"]
        plain = res["timing"]["samples"]
        label = VARIANTS[variant]["label"]
        ax1.plot([s["calls"] for s in mem], [s["traced_mib"] for s in mem], label=label, color=colours[variant])
        ax2.plot([s["calls"] for s in plain], [s["rss_mib"] for s in plain], label=label, color=colours[variant])
    for ax, title in ((ax1, "Python memory held (tracemalloc), MiB"), (ax2, "process RSS growth, MiB")):
        ax.set_xlabel("DSPy LM calls (~4 KB prompts)")
        ax.set_title(title)
        ax.axhline(16, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    ax1.text(calls * 0.55, 19, "historymw's byte budget: 16 MiB", color="grey", fontsize=8)
    ax1.legend(fontsize=8, loc="upper left")
    fig.suptitle("DSPy ChainOfThought: memory against calls, DSPy's history vs historymw")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000, help="LM calls per variant (default 20000)")
    parser.add_argument("--quick", action="store_true", help="1,000 calls per variant, no docs image")
    parser.add_argument("--repeat", type=int, default=2, help="timing runs per variant, fastest kept (default 2)")
    parser.add_argument("--keep-trace", action="store_true",
                        help="leave DSPy's program trace on (another 10,000-entry list, not history)")
    parser.add_argument("--replot", action="store_true",
                        help="redraw the plot(s) from benchmarks/out/dspy_memory.json without running anything")
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--history-path", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    calls = 1_000 if args.quick else args.calls
    if args.quick:
        args.repeat = 1

    if args.child:
        print(json.dumps(child(args.child, calls, args.traced, args.keep_trace)))
        return
    if args.history_path:
        print(json.dumps(history_path(2_000 if args.quick else 20_000)))
        return
    if args.replot:
        saved = json.loads((OUT / "dspy_memory.json").read_text())
        plot(saved["results"], OUT / "dspy_memory.png", saved["calls"])
        if saved["calls"] >= 20_000:
            shutil.copyfile(OUT / "dspy_memory.png", DOCS_IMG)
        return

    print(f"DSPy memory benchmark: {calls} LM calls per variant, ~4 KB prompts, "
          f"Python {platform.python_version()} on {platform.machine()}")
    trace_flag = ["--keep-trace"] if args.keep_trace else []
    results: dict[str, dict[str, Any]] = {v: {} for v in VARIANTS}
    # Timing runs interleaved, each variant `--repeat` times, the fastest kept: noise
    # from other processes on the machine then hits every variant alike.
    for round_ in range(args.repeat):
        for variant in VARIANTS:
            t = time.perf_counter()
            timing = run_child("--child", variant, "--calls", str(calls), *trace_flag)
            best = results[variant].get("timing")
            if best is None or timing["us_per_call"] < best["us_per_call"]:
                results[variant]["timing"] = timing
            print(f"  timing {variant} (round {round_ + 1}): {timing['us_per_call'] / 1000:.3f} ms/call, "
                  f"{time.perf_counter() - t:.0f}s", flush=True)
    for variant in VARIANTS:
        t = time.perf_counter()
        results[variant]["memory"] = run_child("--child", variant, "--calls", str(calls), "--traced", *trace_flag)
        print(f"  tracemalloc run {variant}: {time.perf_counter() - t:.0f}s", flush=True)
    path_times = run_child("--history-path", *(["--quick"] if args.quick else []))

    base = results["dspy"]["timing"]["us_per_call"]
    print()
    print(f"{'variant':46} {'retained by history':>20} {'RSS growth':>11} {'time per call':>14} {'vs DSPy':>8}")
    for variant, res in results.items():
        t = res["timing"]["us_per_call"]
        print(f"{VARIANTS[variant]['label']:46} {res['memory']['retained_by_history_mib']:>16.1f} MiB "
              f"{res['timing']['rss_growth_mib']:>7.1f} MiB {t / 1000:>11.3f} ms {t / base:>8.3f}")
    print()
    for variant, res in results.items():
        hmw = res["timing"].get("historymw")
        lists = res["timing"]["dspy_lists"]
        held = (f"historymw holds {hmw['records_held']} records, {hmw['bytes_held'] / 2**20:.1f} MiB "
                f"of {hmw['max_bytes'] / 2**20:.0f} MiB (evicted {hmw['evicted']})") if hmw else ""
        print(f"  {variant:14} DSPy lists: GLOBAL_HISTORY={lists['GLOBAL_HISTORY']} lm.history={lists['lm.history']}"
              f" modules={lists['module histories']}  {held}")
    print()
    print("history path alone, per call (DSPy's lists full at 10,000 entries; historymw's ring full):")
    print(f"  DSPy record_history:       {path_times['dspy_record_history_us']:6.2f} µs")
    print(f"  historymw (replacing it):  {path_times['historymw_route_us']:6.2f} µs  "
          f"({path_times['historymw_route_us'] / path_times['dspy_record_history_us']:.2f}x)")

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dspy_memory.json").write_text(json.dumps({"calls": calls, "results": results,
                                                      "history_path_us": path_times}, indent=1))
    plot(results, OUT / "dspy_memory.png", calls)
    print(f"\nwrote {OUT / 'dspy_memory.json'} and {OUT / 'dspy_memory.png'}")
    if not args.quick:
        DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(OUT / "dspy_memory.png", DOCS_IMG)
        print(f"wrote {DOCS_IMG}")


if __name__ == "__main__":
    main()
