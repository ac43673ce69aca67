"""Instructions per call, counted by callgrind: the measure that stays put on a loaded machine.

    python benchmarks/instructions.py                          # every scenario (a few minutes)
    python benchmarks/instructions.py --groups core            # core, dspy, litellm
    python benchmarks/instructions.py --scenarios recorded_keyword,bare_keyword --calls 500
    python benchmarks/instructions.py --scenarios mymod:setup  # any `module:function` (see below)
    python benchmarks/instructions.py --json out.json

Times on a shared 2-core machine move by more than the microseconds compared here;
instruction counts do not. Each scenario runs twice, each time in a fresh process
under `valgrind --tool=callgrind`: once with N calls, once with 0. Both processes
do the same otherwise: imports, setup and warm-up calls run uninstrumented;
then `callgrind_control -i on` switches counting on, the process makes its N (or
0) calls, drains what they queued (LiteLLM's logging threads idle, historymw's
export workers flushed), and `callgrind_control -i off` switches it off before
the interpreter exits. Every thread is counted while instrumentation is on.

    instructions per call = (count with N calls - count with 0 calls) / N

LiteLLM scenarios start all of LiteLLM's logging threads before counting and wait
(blocking, no timer) for its logging threads after each call, so that every run
does the same work in the same order (see `_litellm`). On a loaded machine two runs
of one tree still differed by up to 25k instructions per call (of ~9.3M); the
`litellm_hooks` row (historymw's two hooks handed a captured LiteLLM report, no
LiteLLM work) counts historymw's own share alone, the same from run to run.

The subtraction removes everything the two runs share (switching, draining, the
wait for callgrind_control). A scenario's "added" is its per-call figure minus
its baseline scenario's (the same call without the instrumentation under test).

A scenario is a function that sets everything up and returns the call to count
(no arguments) and a drain (or None). Other benchmarks use the harness with their
own scenarios: `count("hot_path:my_setup", calls)` imports `my_setup` from
benchmarks/hot_path.py in the child process.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
from hot_path import MESSAGES, PROMPT, dspy_history
from hot_path import bare as _bare

Setup = Callable[[], tuple[Callable[[], Any], Callable[[], Any] | None]]

WARMUP = 50  # calls before counting starts: caches, lazy imports (the core's ring: see _steady)


# -- scenarios: core (the calls, prompt and DSPy setup of benchmarks/hot_path.py) ----------------------


def _positional(fn: Callable[..., Any]) -> Callable[[], Any]:
    return lambda: fn("gpt-4o-mini", MESSAGES, temperature=0.0)


def _keyword(fn: Callable[..., Any]) -> Callable[[], Any]:
    return lambda: fn(model="gpt-4o-mini", messages=MESSAGES, temperature=0.0)


def _recorded(**config: Any) -> Callable[..., Any]:
    import historymw as hm

    hm.configure(**config)
    return hm.recorded(provider="openai")(_bare)  # type: ignore[no-any-return]


def _steady(call: Callable[[], Any]) -> Callable[[], Any]:
    """`call` made until the ring is full: each counted call then evicts the oldest record,
    as in a long-running program (and in hot_path.py's rounds of 20,000 calls)."""
    import historymw as hm

    for _ in range(hm.settings().maxlen + WARMUP):
        call()
    return call


def bare() -> tuple[Callable[[], Any], None]:
    return _positional(_bare), None


def bare_keyword() -> tuple[Callable[[], Any], None]:
    return _keyword(_bare), None


def recorded_positional() -> tuple[Callable[[], Any], None]:
    return _steady(_positional(_recorded())), None


def recorded_keyword() -> tuple[Callable[[], Any], None]:
    return _steady(_keyword(_recorded())), None


def disabled() -> tuple[Callable[[], Any], None]:
    import historymw as hm

    fn = _recorded()
    hm.history(disable=True).__enter__()  # for the rest of this process
    return _positional(fn), None


def sampled_out() -> tuple[Callable[[], Any], None]:
    return _positional(_recorded(policy="sample", sample_rate=0.0)), None


def dspy_history_path() -> tuple[Callable[[], Any], None]:
    """DSPy's own history path after an LM call (`_record_response`), its lists full at 10,000 entries."""
    fn, scope = dspy_history()
    scope().__enter__()  # for the rest of this process
    return _positional(fn), None


# -- scenarios: a cache-hit dspy.LM call ---------------------------------------------------------


def _dspy_lm(history: bool, install: bool, prompt: bool = False) -> tuple[Callable[[], Any], None]:
    """Two short messages, `lm(messages=[system, user])`; with `prompt`, benchmarks/peers.py's call:
    `lm(PROMPT)`, one ~4 KB prompt string (hot_path's PROMPT, which peers.py makes the same way),
    which DSPy renders as one user message."""
    os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="historymw-instructions-")
    import dspy
    from dspy.clients import base_lm

    if install:
        from historymw.integrations import dspy as hm_dspy

        hm_dspy.install()
    dspy.configure(disable_history=not history)
    lm = dspy.LM("openai/gpt-4o-mini", mock_response="Paris." if prompt else "4", cache=True, num_retries=0)
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+2?"}]
    call = (lambda: lm(PROMPT)) if prompt else (lambda: lm(messages=messages))
    call()  # the miss that fills the cache: every counted call is a hit
    if history and not install:  # DSPy as shipped in a long-running program: its lists are full
        filler = lm.history[-1]
        base_lm.GLOBAL_HISTORY[:] = [filler] * base_lm.MAX_HISTORY_SIZE
        lm.history[:] = [filler] * base_lm.MAX_HISTORY_SIZE
    return call, None


def dspy_off() -> tuple[Callable[[], Any], None]:
    return _dspy_lm(history=False, install=False)


def dspy_shipped() -> tuple[Callable[[], Any], None]:
    return _dspy_lm(history=True, install=False)


def dspy_historymw() -> tuple[Callable[[], Any], None]:
    return _dspy_lm(history=True, install=True)


def dspy_prompt_off() -> tuple[Callable[[], Any], None]:
    return _dspy_lm(history=False, install=False, prompt=True)


def dspy_prompt_shipped() -> tuple[Callable[[], Any], None]:
    return _dspy_lm(history=True, install=False, prompt=True)


def dspy_prompt_historymw() -> tuple[Callable[[], Any], None]:
    return _dspy_lm(history=True, install=True, prompt=True)


# -- scenarios: litellm.completion(mock_response=...) --------------------------------------------


def _litellm_idle() -> None:
    """Wait until LiteLLM's logging threads have run everything the calls handed them.

    Blocks on the executor's pending-task slots (each queued or running task holds one and
    releases it when it ends), woken by each release: no timer. A poll on a timer would be
    counted, as often as the threads took timer periods to finish, and that moves between runs."""
    from litellm.litellm_core_utils.thread_pool_executor import executor

    slots = executor._pending_slots  # a threading.Semaphore: release() notifies its condition
    with slots._cond:
        slots._cond.wait_for(lambda: slots._value >= executor._max_pending_tasks)


def _litellm_threads() -> None:
    """Start every one of LiteLLM's logging threads now, before counting. The pool starts a thread
    when a task finds none idle (up to its maximum): one started while counting is counted (about
    a million instructions), and how many start depends on timing."""
    from litellm.litellm_core_utils.thread_pool_executor import executor

    n = executor._max_workers
    barrier = threading.Barrier(n + 1, timeout=600)  # each task holds its thread until all have one
    for _ in range(n):
        executor.submit(barrier.wait)
    barrier.wait()
    _litellm_idle()


def _litellm(callbacks: list[Any] | None = None) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import litellm

    if callbacks:
        litellm.callbacks = callbacks
    _litellm_threads()

    def call() -> Any:
        """One call, and the logging threads' work for it done before the next: the same work in the
        same order in every run. With a backlog, how much LiteLLM's threads and queues do (a worker
        waking or finding the next task, a collection of the cyclic GC walking the payloads held in
        the queue) depends on their timing: counts moved by 10-30k instructions per call."""
        response = litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="Paris.",
                                      temperature=0.2)
        _litellm_idle()
        return response
    return call, _litellm_idle


def litellm_bare() -> tuple[Callable[[], Any], Callable[[], Any]]:
    return _litellm()


def litellm_custom_logger() -> tuple[Callable[[], Any], Callable[[], Any]]:
    from litellm.integrations.custom_logger import CustomLogger

    return _litellm([CustomLogger()])


def litellm_historymw() -> tuple[Callable[[], Any], Callable[[], Any]]:
    import historymw as hm
    from historymw.integrations import litellm as hm_litellm

    hm.configure()
    hm_litellm.install()
    call, _ = _litellm()

    def drain() -> None:
        _litellm_idle()
        hm_litellm.flush(120.0)
    return call, drain


def litellm_openinference() -> tuple[Callable[[], Any], Callable[[], Any]]:
    from openinference.instrumentation.litellm import LiteLLMInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(spans))
    LiteLLMInstrumentor().instrument(tracer_provider=provider)
    call, _ = _litellm()

    def drain() -> None:
        _litellm_idle()
        provider.force_flush()
        spans.clear()
    return call, drain


def _litellm_report() -> tuple[tuple[Any, Any, dict[str, Any]], dict[str, Any]]:
    """What LiteLLM hands a logger's pre-call hook and success event for the benchmark's call, captured
    from one real call: (model, messages, kwargs) and the success event's kwargs."""
    import litellm
    from litellm.integrations.custom_logger import CustomLogger

    got: dict[str, Any] = {}

    class Capture(CustomLogger):  # type: ignore[misc]
        def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
            got["pre"] = (model, messages, dict(kwargs))

        def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
            got["end"] = dict(kwargs)

    litellm.callbacks = [Capture()]
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="Paris.", temperature=0.2)
    _litellm_idle()  # the logging thread has reported it
    return got["pre"], got["end"]


def _hooks(pre_call: Callable[..., Any], success: Callable[..., Any]) -> Callable[[], Any]:
    """The captured report handed to two hooks as LiteLLM hands it (by keyword), under a new call id
    each time: the LiteLLM scenarios' logger work with none of LiteLLM's, the same from run to run."""
    import uuid

    (model, messages, pre), end = _litellm_report()

    def call() -> None:
        key = str(uuid.uuid4())
        pre["litellm_call_id"] = key
        pre_call(model=model, messages=messages, kwargs=pre)
        kwargs = dict(end)  # LiteLLM hands each report its own dict
        kwargs["litellm_call_id"] = key
        success(kwargs=kwargs, response_obj=None, start_time=None, end_time=None)
    return call


def litellm_hooks_none() -> tuple[Callable[[], Any], None]:
    def nothing(**kwargs: Any) -> None:
        pass
    return _hooks(nothing, nothing), None


def litellm_hooks() -> tuple[Callable[[], Any], None]:
    import historymw as hm
    from historymw.integrations import litellm as hm_litellm

    hm.configure()
    hm_litellm.install()
    logger = hm_litellm._logger
    return _steady(_hooks(logger.log_pre_api_call, logger.log_success_event)), None


# (name, group, baseline scenario or None, what it is)
SCENARIOS: list[tuple[str, str, str | None, str]] = [
    ("bare", "core", None, "bare function, positional call"),
    ("recorded_positional", "core", "bare", "@recorded, positional call, ring"),
    ("bare_keyword", "core", None, "bare function, keyword call"),
    ("recorded_keyword", "core", "bare_keyword", "@recorded, keyword call, ring"),
    ("disabled", "core", "bare", "@recorded under history(disable=True)"),
    ("sampled_out", "core", "bare", "@recorded, sample_rate=0"),
    ("dspy_history_path", "core", "bare", "DSPy's history path (lists full at 10,000)"),
    ("dspy_off", "dspy", None, "cache-hit dspy.LM call, disable_history=True"),
    ("dspy_shipped", "dspy", "dspy_off", "cache-hit dspy.LM call, DSPy's history (lists full)"),
    ("dspy_historymw", "dspy", "dspy_off", "cache-hit dspy.LM call, historymw dspy.install()"),
    ("dspy_prompt_off", "dspy", None, "cache-hit lm(4 KB prompt), disable_history=True"),
    ("dspy_prompt_shipped", "dspy", "dspy_prompt_off", "cache-hit lm(4 KB prompt), DSPy's history (lists full)"),
    ("dspy_prompt_historymw", "dspy", "dspy_prompt_off", "cache-hit lm(4 KB prompt), historymw dspy.install()"),
    ("litellm_bare", "litellm", None, "litellm.completion(mock_response=...), no callback"),
    ("litellm_custom_logger", "litellm", "litellm_bare", "+ an empty LiteLLM CustomLogger"),
    ("litellm_historymw", "litellm", "litellm_bare", "+ historymw litellm.install() (ring)"),
    ("litellm_openinference", "litellm", "litellm_bare", "+ OpenInference's LiteLLM instrumentor"),
    ("litellm_hooks_none", "litellm", None, "a captured LiteLLM report to no-op hooks"),
    ("litellm_hooks", "litellm", "litellm_hooks_none", "+ historymw's LiteLLM hooks alone (ring)"),
]
BY_NAME = {s[0]: s for s in SCENARIOS}
CALLS = {"core": 2000, "dspy": 300, "litellm": 100}


def _resolve(spec: str) -> Setup:
    module, _, name = spec.rpartition(":")
    return getattr(importlib.import_module(module) if module else sys.modules[__name__], name)  # type: ignore[no-any-return]


def _control(flag: str) -> None:
    """Switch callgrind's instrumentation of this process on or off (returns once it has taken effect)."""
    subprocess.run(["callgrind_control", "-i", flag, str(os.getpid())], check=True, capture_output=True)


def child(spec: str, calls: int) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import warnings

    warnings.filterwarnings("ignore")
    call, drain = _resolve(spec)()
    for _ in range(WARMUP):
        call()
    if drain is not None:
        drain()
    _control("on")
    for _ in range(calls):
        call()
    if drain is not None:
        drain()
    _control("off")
    sys.stdout.flush()
    os._exit(0)  # nothing of the interpreter's exit is counted anyway; skip it


def available() -> str | None:
    """None when callgrind can run here, else why not."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            return f"{tool} not found (install valgrind)"
    return None


def total(spec: str, calls: int, timeout: float = 1800) -> int:
    """Instructions callgrind counted in one child process making `calls` calls."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
               sys.executable, os.path.abspath(__file__), "--child", spec, "--calls", str(calls)]
        proc = subprocess.run(cmd, env=_common.child_env(), capture_output=True, text=True, timeout=timeout,
                              check=False)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"callgrind run failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
        text = out.read_text()  # "summary:" counts only from the start; "totals:" every event collected
        match = re.search(r"^totals: (\d+)", text, re.M) or re.search(r"^summary: (\d+)", text, re.M)
        if match is None:
            raise RuntimeError(f"no instruction total in {out}")
        return int(match.group(1))


def count(spec: str, calls: int) -> dict[str, Any]:
    """Instructions per call of one scenario: (N calls - 0 calls) / N, each in its own callgrind process."""
    t = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # the two processes are independent: run them side by side
        full, empty = pool.map(lambda n: total(spec, n), (calls, 0))
    return {"calls": calls, "total_n": full, "total_0": empty, "per_call": (full - empty) / calls,
            "seconds": time.perf_counter() - t}


def measure(names: list[str], calls: int | None = None) -> dict[str, Any]:
    """Every named scenario (and the baselines they need), with "added" over each baseline."""
    wanted = list(dict.fromkeys(n for name in names if name in BY_NAME for n in (BY_NAME[name][2], name) if n))
    wanted += [n for n in names if n not in BY_NAME and n not in wanted]  # module:function specs
    results: dict[str, Any] = {}
    for name in wanted:
        group = BY_NAME[name][1] if name in BY_NAME else "core"
        _common.eprint(f"  callgrind: {name} ...")
        results[name] = count(name, calls or CALLS[group])
        _common.eprint(f"    {results[name]['per_call']:,.0f} instructions per call "
                       f"({results[name]['seconds']:.0f} s)")
    for name, res in results.items():
        base = BY_NAME[name][2] if name in BY_NAME else None
        res["baseline"] = base
        res["added"] = res["per_call"] - results[base]["per_call"] if base in results else None
        res["what"] = BY_NAME[name][3] if name in BY_NAME else name
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"{'scenario':58} {'instr/call':>12} {'added':>10} {'calls':>6}")
    for r in results.values():
        added = f"{r['added']:+,.0f}" if r["added"] is not None else "baseline"
        print(f"{r['what']:58} {r['per_call']:12,.0f} {added:>10} {r['calls']:6}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", default="core,dspy,litellm", help="comma list of core, dspy, litellm")
    ap.add_argument("--scenarios", help="comma list of scenario names or module:function (overrides --groups)")
    ap.add_argument("--calls", type=int, help="calls per counted run (default per group: "
                    + ", ".join(f"{g} {n}" for g, n in CALLS.items()) + ")")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.calls or 0)
        return
    why = available()
    if why:
        raise SystemExit(f"instruction counts need callgrind: {why}")
    if args.scenarios:
        names = [s for s in args.scenarios.split(",") if s]
    else:
        groups = {g for g in args.groups.split(",") if g}
        names = [s[0] for s in SCENARIOS if s[1] in groups]
    results = measure(names, args.calls)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
