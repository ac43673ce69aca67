"""Instructions a cache-hit `dspy.LM` call executes, per configuration, counted by callgrind.

    python benchmarks/dspy_call_cost.py                 # all modes, 300 calls each
    python benchmarks/dspy_call_cost.py --calls 100 --modes installed,dspy-off
    python benchmarks/dspy_call_cost.py --historymw-path /tmp/old   # another historymw tree

Instruction counts, unlike wall time, do not depend on what else the machine runs. Each
mode runs in its own process under `valgrind --tool=callgrind`, uninstrumented until the
warm-up calls (`callgrind_control -i on`), collecting only inside the timed loop
(`--toggle-collect=starmap_next`: the loop is `itertools.starmap` over the calls); the
figure is collected instructions / calls. Modes:

- dspy-off: DSPy as shipped with `disable_history=True` (the yardstick: no history at all).
- dspy: DSPy as shipped (GLOBAL_HISTORY and lm.history appended to).
- installed: `historymw.integrations.dspy.install()`, default configuration (ring).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from itertools import repeat, starmap
from pathlib import Path

MODES = ("dspy-off", "dspy", "installed")


def child(mode: str, calls: int) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="historymw-dspy-cost-")
    import dspy

    if mode == "installed":
        from historymw.integrations import dspy as hm_dspy

        hm_dspy.install()
    dspy.configure(disable_history=mode == "dspy-off")
    lm = dspy.LM("openai/gpt-4o-mini", mock_response="4", cache=True, num_retries=0)
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+2?"}]

    def call() -> object:
        return lm(messages=messages)

    for _ in range(50):  # the miss that fills the cache, then hits until every lazy path has run
        call()
    # Imports ran uninstrumented (minutes faster); instrumentation starts now, and the
    # warm-up calls below run while valgrind picks the request up.
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True)
    for _ in range(200):
        call()
    for _ in starmap(call, repeat((), calls)):
        pass


def measure(mode: str, calls: int, pythonpath: str | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ, PYTHONHASHSEED="0")
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
               "--toggle-collect=starmap_next",
               f"--callgrind-out-file={out}", sys.executable, __file__, "--child", mode, "--calls", str(calls)]
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        if match is None:
            raise RuntimeError(f"no instruction total in {out}")
        return int(match.group(1)) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--historymw-path", help="put this directory first on PYTHONPATH (another historymw tree)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls)
        return
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    results = {m: measure(m, args.calls, args.historymw_path) for m in modes}
    base = results.get("dspy-off")
    for mode, per_call in results.items():
        extra = f"  ({per_call - base:+,.0f} over dspy-off)" if base is not None and mode != "dspy-off" else ""
        print(f"{mode:<10} {per_call:>12,.0f} instructions per cache-hit call{extra}")


if __name__ == "__main__":
    main()
