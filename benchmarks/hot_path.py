"""What recording costs the caller, per call, measured in one run.

    python benchmarks/hot_path.py            # full run (~1 minute)
    python benchmarks/hot_path.py --quick    # a few seconds (CI runs this so it never rots)

Every contender wraps the same bare function, called with the same ~4 KB prompt;
contenders are interleaved round by round so machine noise hits all alike, and
each figure is the median over rounds of the calling thread's CPU time per call
minus the bare call's in the same round ("added"); wall time is shown beside it
(with an export worker on, it includes waiting for the interpreter lock). Rows:

- bare: the function itself.
- disabled: `@hm.recorded` under `hm.history(disable=True)`.
- sampled out: `policy="sample", sample_rate=0` (a head decision that says no).
- recorded (ring): the default configuration, model and messages by position.
- recorded (ring), keyword call: the same, called as `ask(model=..., messages=...)`
  (its "added" is over the bare function called the same way).
- recorded (ring + sql queue): with the SQL backend on, the caller pays the queue hand-off.
- recorded (otel backend) and OpenTelemetry peers: rows from benchmarks/otel_overhead.py.
- DSPy history path: DSPy's own `_record_response` + `record_history` at steady state
  (GLOBAL_HISTORY, lm.history and two module histories full at 10,000 entries).
- pydantic model: building a small validated pydantic model, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import historymw as hm

random.seed(7)
PROMPT = "".join(random.choice(string.ascii_lowercase + "     ") for _ in range(4096))
MESSAGES = [{"role": "system", "content": "You are a careful assistant."}, {"role": "user", "content": PROMPT}]
ANSWER = "The answer is 42."


def bare(model: str, messages: list[dict[str, str]], **params: Any) -> str:
    return ANSWER


recorded = hm.recorded(provider="openai")(bare)


class Contender:
    """One row: a callable, and the setup it runs under."""

    def __init__(self, name: str, fn: Callable[..., Any],
                 scope: Callable[[], AbstractContextManager[Any]] = nullcontext,
                 configure: dict[str, Any] | None = None, keyword: bool = False) -> None:
        self.name, self.fn, self.scope, self.configure = name, fn, scope, configure
        self.keyword = keyword  # called as fn(model=..., messages=...), else by position
        self.samples: list[float] = []  # the calling thread's CPU µs per call
        self.wall: list[float] = []  # elapsed µs per call

    def run(self, n: int) -> tuple[float, float]:
        """(caller-thread CPU, wall) µs per call over n calls.

        CPU time of the calling thread is what the call pays; wall time adds waiting
        for the interpreter lock while an export worker runs on the other core."""
        if self.configure is not None:
            hm.configure(**self.configure)
        fn, msgs = self.fn, MESSAGES
        with self.scope():
            c0, t0 = time.thread_time(), time.perf_counter()
            if self.keyword:
                for _ in range(n):
                    fn(model="gpt-4o-mini", messages=msgs, temperature=0.0)
            else:
                for _ in range(n):
                    fn("gpt-4o-mini", msgs, temperature=0.0)
            return (time.thread_time() - c0) / n * 1e6, (time.perf_counter() - t0) / n * 1e6


def dspy_history() -> tuple[Callable[..., str], Callable[[], AbstractContextManager[Any]]]:
    """DSPy's own history path, as DSPy runs it after each LM call, at its steady state: (a function
    called like `bare` that also runs it, the scope to call it in). GLOBAL_HISTORY, lm.history and
    two modules' histories are full at 10,000 entries; the modules are the callers in that scope.
    benchmarks/instructions.py counts the same function. ImportError without dspy."""
    import dspy
    from dspy.clients import base_lm

    lm = dspy.LM("openai/gpt-4o-mini", cache=False)
    modules = [dspy.ChainOfThought("question -> answer"), dspy.Predict("question -> answer")]

    class Response:  # what DSPy reads off a provider response
        def __init__(self) -> None:
            self.model = "gpt-4o-mini-2024-07-18"
            self.usage = {"prompt_tokens": 1000, "completion_tokens": 8, "total_tokens": 1008}
            self._hidden_params = {"response_cost": 0.00015}

    response = Response()
    filler = {"messages": MESSAGES, "outputs": [ANSWER]}
    base_lm.GLOBAL_HISTORY[:] = [filler] * base_lm.MAX_HISTORY_SIZE
    for owner in (lm, *modules):
        owner.history[:] = [filler] * base_lm.MAX_HISTORY_SIZE

    def with_dspy_history(model: str, messages: list[dict[str, str]], **params: Any) -> str:
        result = bare(model, messages, **params)
        lm._record_response(response, None, messages, [result], params)
        return result

    return with_dspy_history, lambda: dspy.context(caller_modules=modules)


def dspy_contender() -> Contender | None:
    try:
        fn, scope = dspy_history()
    except ImportError:
        return None
    return Contender("DSPy history path (10k full)", fn, scope=scope, configure={})


def pydantic_contender() -> Contender:
    from pydantic import BaseModel

    class Call(BaseModel):
        model: str
        prompt: str
        temperature: float
        answer: str

    def build(model: str, messages: list[dict[str, str]], **params: Any) -> str:
        result = bare(model, messages, **params)
        Call(model=model, prompt=messages[-1]["content"], temperature=params["temperature"], answer=result)
        return result

    return Contender("pydantic model (for scale)", build, configure={})


def contenders(sql_url: str) -> list[Contender]:
    rows = [
        Contender("bare", bare, configure={}),
        Contender("disabled", recorded, scope=lambda: hm.history(disable=True), configure={}),
        Contender("sampled out", recorded, configure={"policy": "sample", "sample_rate": 0.0}),
        Contender("recorded (ring)", recorded, configure={}),
        Contender("bare, keyword call", bare, configure={}, keyword=True),
        Contender("recorded (ring), keyword call", recorded, configure={}, keyword=True),
    ]
    try:
        import sqlalchemy  # noqa: F401

        rows.append(Contender("recorded (ring + sql queue)", recorded,
                              configure={"backends": ["ring", "sql"], "sql_url": sql_url,
                                         "queue_size": 10**6, "queue_bytes": "1GiB"}))
    except ImportError:
        pass
    rows.append(pydantic_contender())
    dspy_row = dspy_contender()
    if dspy_row is not None:
        rows.append(dspy_row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    rounds, n = (5, 2_000) if args.quick else (15, 20_000)

    with tempfile.TemporaryDirectory() as tmp:
        rows = contenders(f"sqlite:///{tmp}/bench.db")
        for row in rows:  # warm up: caches, lazy imports, ring and lists at steady state
            row.run(n // 4 + 1000)
        for _ in range(rounds):
            order = rows[:]
            random.shuffle(order)
            for row in order:
                cpu, wall = row.run(n)
                row.samples.append(cpu)
                row.wall.append(wall)
                if row.configure and row.configure.get("backends"):
                    hm.flush(30)  # the worker drains between rounds, off the clock
        hm.configure()
    otel_rows: list[tuple[str, float]] = []
    if not args.quick or "--with-otel" in sys.argv:
        try:
            sys.path.insert(0, os.path.dirname(__file__))
            from otel_overhead import measure  # type: ignore[import-not-found]

            otel_rows = measure(n)
        except ImportError:
            pass

    results = []
    for row in rows:
        # Each shape over the bare function called the same way, in the same round.
        base_row = next(r for r in rows if r.fn is bare and r.keyword == row.keyword)
        base, base_wall = base_row.samples, base_row.wall
        added = [s - b for s, b in zip(row.samples, base, strict=True)]
        added_wall = [s - b for s, b in zip(row.wall, base_wall, strict=True)]
        results.append({"name": row.name, "per_call_us": statistics.median(row.samples),
                        "added_us": statistics.median(added),
                        "spread_us": (min(added), max(added)),
                        "wall_added_us": statistics.median(added_wall)})
    dspy_added = next((r["added_us"] for r in results if r["name"].startswith("DSPy")), None)
    print(f"historymw hot path — {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.machine()}; {rounds} rounds x {n} calls, 4 KB prompt; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("caller-thread CPU per call, median over rounds; 'added' is over the bare call in the same round")
    print(f"{'contender':34} {'per call':>10} {'added':>10} {'added min..max':>18} {'+wall':>9} {'vs DSPy':>9}")
    for r in results:
        lo, hi = r["spread_us"]
        ratio = f"{dspy_added / r['added_us']:.1f}x" if dspy_added and r["added_us"] > 0 else ""
        print(f"{r['name']:34} {r['per_call_us']:8.3f}µs {r['added_us']:8.3f}µs {lo:8.3f}..{hi:<8.3f} "
              f"{r['wall_added_us']:8.3f} {ratio:>9}")
    for name, us in otel_rows:
        print(f"{name:34} {'':>10} {us:8.3f}µs")
    by_name = {r["name"]: r["added_us"] for r in results}
    rec, kw = by_name["recorded (ring)"], by_name["recorded (ring), keyword call"]
    print()
    print(f"recorded call adds {rec:.2f} µs positional, {kw:.2f} µs by keyword (target ≤ 2.5 µs); "
          f"disabled {by_name['disabled']:.3f} µs, sampled out {by_name['sampled out']:.3f} µs (target ≤ 0.3 µs)")
    if dspy_added:
        print(f"recorded call is {dspy_added / rec:.1f}x (positional), {dspy_added / kw:.1f}x (keyword) cheaper "
              "than DSPy's history path (target ≥ 8x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": results, "otel": otel_rows, "rounds": rounds, "calls": n,
                       "python": platform.python_version(), "cores": os.cpu_count()}, fh, indent=2)


if __name__ == "__main__":
    main()
