"""historymw against its peers on identical LiteLLM calls, interleaved in one run.

    python benchmarks/peers.py                 # full run (~2 minutes)
    python benchmarks/peers.py --quick         # a few seconds
    python benchmarks/peers.py --json out.json

Every contender makes the same real call, `litellm.completion(model="gpt-4o-mini",
messages=..., mock_response=...)` with a ~4 KB prompt (no network), with one
instrumentation installed:

  none (the baseline) · historymw's LiteLLM integration under `history(disable=True)` ·
  sampled out (`policy="sample", sample_rate=0`) · recorded into the ring · ring + sql ·
  ring + otel · LiteLLM with an empty CustomLogger (the floor of LiteLLM's callback
  machinery) · LiteLLM's own "otel" callback · OpenInference's LiteLLM instrumentor.

A second group compares history paths on cache-hit `dspy.LM` calls (same prompt, LiteLLM
mock underneath): DSPy with `disable_history=True` (the baseline), DSPy as shipped with its
lists at their 10,000-entry steady state, and DSPy with `historymw.integrations.dspy.install()`.

Contenders take turns, round by round, in a rotating order, so machine noise hits all
alike. Per round and row: the caller thread's CPU time (time.thread_time) over the timed
loop, its wall time, and the whole process's CPU time for the loop plus draining what it
queued (LiteLLM's logging threads done, export workers flushed). LiteLLM reports
outcomes on background logging threads, so "caller" is what the calling thread pays and
"total" is all the work, wherever it ran. Added cost = row minus the group's baseline in
the same round; the figure is the median over rounds, with the min..max.

The harness (rows, rounds, draining) is benchmarks/otel_overhead.py's, reused.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import tempfile
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore")

import _common  # noqa: E402
import otel_overhead as oo  # noqa: E402

import historymw as hm  # noqa: E402

random.seed(7)
PROMPT = "".join(random.choice(string.ascii_lowercase + "     ") for _ in range(4096))
MESSAGES = [{"role": "system", "content": "You are a careful assistant."}, {"role": "user", "content": PROMPT}]
ANSWER = "Paris."

# otel_overhead's LiteLLM rows call litellm.completion with its module-level MESSAGES: give every row the
# same ~4 KB prompt as the core hot-path benchmark.
oo.MESSAGES = MESSAGES

# Stable keys for otel_overhead's rows (matched on its names, so a renamed row fails loudly here).
OO_ROWS = {
    "bare": ("none (baseline)", "litellm.completion(mock_response), bare"),
    "litellm_noop": ("LiteLLM + empty CustomLogger", "no-op LiteLLM CustomLogger"),
    "hm_ring": ("historymw: recorded (ring)", "historymw LiteLLM integration, ring only"),
    "hm_otel": ("historymw: recorded (ring + otel)", "historymw LiteLLM integration, ring + otel"),
    "litellm_otel": ("LiteLLM's own OpenTelemetry callback", "LiteLLM's own OpenTelemetry callback"),
    "openinference": ("OpenInference LiteLLM instrumentor", "OpenInference LiteLLM instrumentation"),
}
ORDER = ["bare", "hm_disabled", "hm_sampled_out", "hm_ring", "hm_sql", "hm_otel", "litellm_noop", "litellm_otel",
         "openinference"]


class Scope:
    """A context manager held open from a round's setup to its teardown (the timed loop runs inside it)."""

    def __init__(self, make: Callable[[], AbstractContextManager[Any]]) -> None:
        self.make = make
        self.cm: AbstractContextManager[Any] | None = None

    def enter(self) -> None:
        self.cm = self.make()
        self.cm.__enter__()

    def exit(self) -> None:
        if self.cm is not None:
            self.cm.__exit__(None, None, None)
            self.cm = None


def litellm_rows(sql_url: str) -> list[tuple[str, str, oo.Config]]:
    from historymw.integrations import litellm as hm_litellm

    theirs = oo.litellm_configs()
    by_key: dict[str, oo.Config] = {}
    for key, (_, needle) in OO_ROWS.items():
        match = [c for c in theirs if needle in c.name]
        if match:
            by_key[key] = match[0]
    missing = {"bare", "litellm_noop", "hm_ring", "hm_otel", "litellm_otel"} - set(by_key)
    if missing:
        raise SystemExit(f"benchmarks/otel_overhead.py no longer has the rows {sorted(missing)}")
    completion = by_key["bare"].call

    def drain() -> int:
        oo._litellm_idle()
        hm_litellm.flush(60.0)
        return 0

    def teardown() -> None:
        hm_litellm.uninstall()
        hm.shutdown(60.0)
        hm.configure(policy="off")

    disabled = Scope(lambda: hm.history(disable=True))

    def disabled_setup() -> None:
        hm.configure()
        hm_litellm.install()
        disabled.enter()

    def disabled_teardown() -> None:
        disabled.exit()
        teardown()

    def sampled_setup() -> None:
        hm.configure(policy="sample", sample_rate=0.0)
        hm_litellm.install()

    def sql_setup() -> None:
        hm.configure(backends=["ring", "sql"], sql_url=sql_url, queue_size=10**6, queue_bytes="1GiB")
        hm_litellm.install()

    by_key["hm_disabled"] = oo.Config("disabled", completion, setup=disabled_setup, drain=drain,
                                      teardown=disabled_teardown)
    by_key["hm_sampled_out"] = oo.Config("sampled out", completion, setup=sampled_setup, drain=drain,
                                         teardown=teardown)
    by_key["hm_sql"] = oo.Config("ring + sql", completion, setup=sql_setup, drain=drain, teardown=teardown)
    names = {**{k: v[0] for k, v in OO_ROWS.items()},
             "hm_disabled": "historymw: disabled (history(disable=True))",
             "hm_sampled_out": "historymw: sampled out (sample_rate=0)",
             "hm_sql": "historymw: recorded (ring + sql)"}
    return [(key, names[key], by_key[key]) for key in ORDER if key in by_key]


def dspy_rows() -> list[tuple[str, str, oo.Config]]:
    # The yardstick is a cache-hit call (an optimizer's inner loop): DSPy's disk cache in a fresh directory.
    os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="historymw-peers-dspy-"))
    try:
        import dspy
        from dspy.clients import base_lm
    except ImportError:
        _common.eprint("(dspy not installed: the DSPy rows are skipped)")
        return []
    from historymw.integrations import dspy as hm_dspy

    lm = dspy.LM("openai/gpt-4o-mini", mock_response=ANSWER, cache=True, num_retries=0)
    lm(PROMPT)  # the miss that fills the cache: every timed call is a hit
    filler = lm.history[-1]  # a real entry: what DSPy's lists hold at steady state

    def call() -> Any:
        return lm(PROMPT)

    def no_history() -> None:
        hm.configure(policy="off")
        dspy.settings.configure(disable_history=True)

    def shipped() -> None:
        hm.configure(policy="off")
        dspy.settings.configure(disable_history=False)
        # A long-running program: GLOBAL_HISTORY and lm.history are full, every call pops the oldest.
        base_lm.GLOBAL_HISTORY[:] = [filler] * base_lm.MAX_HISTORY_SIZE
        lm.history[:] = [filler] * base_lm.MAX_HISTORY_SIZE

    def with_historymw() -> None:
        dspy.settings.configure(disable_history=False)
        hm.configure()
        hm_dspy.install()

    def historymw_teardown() -> None:
        hm_dspy.uninstall()
        hm.configure(policy="off")

    def clear_lists() -> None:
        base_lm.GLOBAL_HISTORY.clear()
        lm.history.clear()

    return [
        ("dspy_off", "DSPy, disable_history=True (baseline)",
         oo.Config("dspy off", call, setup=no_history, drain=lambda: (oo._litellm_idle(), 0)[1],
                   teardown=lambda: dspy.settings.configure(disable_history=False))),
        ("dspy_shipped", "DSPy as shipped (lists full at 10,000)",
         oo.Config("dspy shipped", call, setup=shipped, drain=lambda: (oo._litellm_idle(), 0)[1],
                   teardown=clear_lists)),
        ("dspy_historymw", "DSPy + historymw (dspy.install(), ring)",
         oo.Config("dspy historymw", call, setup=with_historymw, drain=lambda: (oo._litellm_idle(), 0)[1],
                   teardown=historymw_teardown)),
    ]


def summarize(rows: list[tuple[str, str, oo.Config]]) -> list[dict[str, Any]]:
    base = rows[0][2]
    out = []
    for key, name, cfg in rows:
        entry: dict[str, Any] = {"key": key, "name": name}
        for field in ("caller_us", "wall_us", "total_us"):
            added = [s.__dict__[field] - b.__dict__[field] for s, b in zip(cfg.samples, base.samples, strict=True)]
            entry[field.removesuffix("_us")] = _common.spread(added)
            entry[f"{field}_per_call"] = oo.median(cfg, field)
        entry["spans_per_call"] = sorted(cfg.spans_per_call)[len(cfg.spans_per_call) // 2]
        out.append(entry)
    return out


def measure(quick: bool = False, rounds: int | None = None, n: int | None = None) -> dict[str, Any]:
    rounds = rounds or (3 if quick else 15)
    n = n or (20 if quick else 300)
    warmup = 5 if quick else 30
    with tempfile.TemporaryDirectory() as tmp:
        lite = litellm_rows(f"sqlite:///{tmp}/peers.db")
        dsp = dspy_rows()
        # One interleaved run for both groups: each round visits every row of both, in a rotating order.
        oo.run([cfg for _, _, cfg in lite + dsp], n, rounds, warmup)
        hm.configure()
    return {"machine": _common.machine(), "rounds": rounds, "calls_per_round": n,
            "prompt_chars": len(PROMPT),
            "versions": _common.versions("litellm", "dspy", "opentelemetry-sdk",
                                         "openinference-instrumentation-litellm"),
            "litellm": summarize(lite), "dspy": summarize(dsp) if dsp else []}


def print_table(res: dict[str, Any]) -> None:
    print(f"historymw vs peers on litellm.completion(mock_response=...) — {_common.machine_line(res['machine'])}; "
          f"{res['rounds']} interleaved rounds x {res['calls_per_round']} calls, {res['prompt_chars']}-char prompt")
    for group in ("litellm", "dspy"):
        rows = res[group]
        if not rows:
            continue
        print(f"\n{'µs per call':46} {'caller CPU':>10} {'+caller (min..max)':>24} {'+total CPU':>11} {'+wall':>8}")
        for r in rows:
            c = r["caller"]
            print(f"{r['name']:46} {r['caller_us_per_call']:10.1f} {c['median']:+9.1f} "
                  f"({c['min']:+7.1f}..{c['max']:+7.1f}) {r['total']['median']:+11.1f} {r['wall']['median']:+8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few seconds (CI)")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--n", type=int, help="calls per row per round")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args()
    res = measure(args.quick, args.rounds, args.n)
    print_table(res)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
