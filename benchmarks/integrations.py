"""What each SDK/framework integration adds to a real call, beside OpenInference's instrumentor.

    python benchmarks/integrations.py                 # CPU, interleaved rounds (a few minutes)
    python benchmarks/integrations.py --quick
    python benchmarks/integrations.py --callgrind     # + instructions under valgrind (OpenAI/Anthropic rows)

Every row makes the same real call over HTTP to the bundled local server
(historymw.localllm, run in its own process so its work is not counted):
`client.chat.completions.create` (OpenAI SDK), `client.messages.create`
(Anthropic SDK), `ChatOpenAI.invoke` (LangChain) and `OpenAI.chat` (LlamaIndex),
each with a ~2 KB prompt. Per integration the rows are: nothing installed (the
baseline), historymw's integration recording into the ring, and OpenInference's
instrumentor for the same SDK or framework exporting to an in-memory exporter
through a SimpleSpanProcessor (OpenInference's own quick-start setup, minus the
network). Rows take turns round by round in a rotating order; the figure is
the median over rounds of (row - baseline) process CPU per call, with its range.

--callgrind also counts instructions: one child process per row under
`valgrind --tool=callgrind --instr-atstart=no`, instrumentation switched on
(callgrind_control -i on) only around N calls after warm-up, and the same for
0 calls; added instructions per call = ((N calls - 0 calls) of the row minus the
same of the baseline) / N.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

random.seed(11)
PROMPT = "".join(random.choice(string.ascii_lowercase + "    ") for _ in range(2048))
MESSAGES = [{"role": "user", "content": PROMPT}]
KEY = "sk-bench-not-a-real-key-0000000000000000"
warnings.filterwarnings("ignore")  # SDK deprecation notices about model names
INTEGRATIONS = ("openai", "anthropic", "langchain", "llamaindex")


# -- the calls ---------------------------------------------------------------------------


def make_call(integration: str, url: str) -> Callable[[], Any]:
    """The one call a row makes, on objects built once (clients are long-lived in real code)."""
    if integration == "openai":
        import openai

        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        return lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    if integration == "anthropic":
        import anthropic

        aclient = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)
        return lambda: aclient.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
    if integration == "langchain":
        from langchain_openai import ChatOpenAI

        model = ChatOpenAI(model="gpt-4o-mini", base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        return lambda: model.invoke(PROMPT)
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    llm = OpenAI(model="gpt-4o-mini", api_base=f"{url}/v1", api_key=KEY, max_retries=0)
    messages = [ChatMessage(role="user", content=PROMPT)]
    return lambda: llm.chat(messages)


def contender(integration: str, who: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """(install, uninstall) for a row: nothing, historymw's integration, or OpenInference's instrumentor."""
    if who == "baseline":
        return (lambda: None), (lambda: None)
    if who == "historymw":
        import importlib

        module = importlib.import_module(f"historymw.integrations.{integration}")
        return module.install, module.uninstall
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if integration == "openai":
        from openinference.instrumentation.openai import OpenAIInstrumentor as Instrumentor
    elif integration == "anthropic":
        from openinference.instrumentation.anthropic import AnthropicInstrumentor as Instrumentor
    elif integration == "langchain":
        from openinference.instrumentation.langchain import LangChainInstrumentor as Instrumentor
    else:
        from openinference.instrumentation.llama_index import LlamaIndexInstrumentor as Instrumentor
    inst = Instrumentor()

    def install() -> None:
        inst.instrument(tracer_provider=provider)

    def uninstall() -> None:
        inst.uninstrument()
        exporter.clear()
    return install, uninstall


def openinference_available(integration: str) -> bool:
    import importlib.util

    name = {"openai": "openai", "anthropic": "anthropic", "langchain": "langchain",
            "llamaindex": "llama_index"}[integration]
    return importlib.util.find_spec(f"openinference.instrumentation.{name}") is not None


# -- the local server, in its own process ----------------------------------------------------


@contextlib.contextmanager
def server_process() -> Any:
    code = ("import sys, time\nfrom historymw.localllm import LocalLLM\ns = LocalLLM().start()\n"
            "print(s.url, flush=True)\nsys.stdin.read()\ns.stop()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError("the local LLM server did not start")
        yield url
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- CPU, interleaved ------------------------------------------------------------------------


def cpu_rows(integration: str, url: str, rounds: int, calls: int) -> dict[str, dict[str, float]]:
    import historymw as hm

    hm.configure(backends=["ring"], maxlen=1000)
    call = make_call(integration, url)
    whos = ["baseline", "historymw"] + (["openinference"] if openinference_available(integration) else [])
    hooks = {who: contender(integration, who) for who in whos}
    for _ in range(5):  # warm-up: connections, lazy imports, caches
        call()
    per_round: dict[str, list[float]] = {who: [] for who in whos}
    for r in range(rounds):
        order = whos[r % len(whos):] + whos[:r % len(whos)]
        for who in order:
            install, uninstall = hooks[who]
            install()
            try:
                for _ in range(2):
                    call()
                gc.collect()
                t0 = time.process_time()
                for _ in range(calls):
                    call()
                per_round[who].append((time.process_time() - t0) / calls)
            finally:
                uninstall()
    out: dict[str, dict[str, float]] = {}
    base = per_round["baseline"]
    for who in whos:
        added = [x - b for x, b in zip(per_round[who], base, strict=True)]
        out[who] = {"per_call_us": statistics.median(per_round[who]) * 1e6,
                    "added_us": statistics.median(added) * 1e6,
                    "added_min_us": min(added) * 1e6, "added_max_us": max(added) * 1e6}
    return out


# -- instructions, under callgrind -----------------------------------------------------------

CHILD = r"""
import os, sys, time
sys.path.insert(0, {bench!r})
import integrations as b
import historymw as hm
hm.configure(backends=["ring"], maxlen=1000)
integration, who, url, n, sync = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
call = b.make_call(integration, url)
install, _ = b.contender(integration, who)
install()
for _ in range(5):
    call()
def wait(name):
    deadline = time.monotonic() + 600
    while not os.path.exists(os.path.join(sync, name)) and time.monotonic() < deadline:
        time.sleep(0.005)
open(os.path.join(sync, "ready"), "w").close()
wait("go")
for _ in range(n):
    call()
open(os.path.join(sync, "done"), "w").close()
wait("stop")
"""


def callgrind_once(integration: str, who: str, url: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "child.py")
        script.write_text(CHILD.format(bench=str(Path(__file__).resolve().parent)))
        out = Path(tmp, "cg.out")
        env = dict(os.environ, PYTHONHASHSEED="0")
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                                 sys.executable, str(script), integration, who, url, str(n), tmp],
                                stdout=subprocess.DEVNULL, stderr=open(Path(tmp, "log"), "w"), env=env)

        def wait(name: str) -> None:
            deadline = time.monotonic() + 1200
            while not Path(tmp, name).exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = Path(tmp, "log").read_text()[-2000:]
                    raise RuntimeError(f"callgrind child for {integration}/{who} stopped early:\n{tail}")
                time.sleep(0.05)

        wait("ready")
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        Path(tmp, "go").touch()
        wait("done")
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
        Path(tmp, "stop").touch()
        proc.wait(600)
        total = 0
        for line in out.read_text().splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
        return total


def callgrind_rows(integration: str, url: str, n: int) -> dict[str, float]:
    whos = ["baseline", "historymw"] + (["openinference"] if openinference_available(integration) else [])
    per: dict[str, float] = {}
    for who in whos:
        per[who] = (callgrind_once(integration, who, url, n) - callgrind_once(integration, who, url, 0)) / n
    return {who: per[who] - per["baseline"] for who in whos}


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions (valgrind)")
    parser.add_argument("--only", choices=INTEGRATIONS, action="append")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rounds, calls = (3, 10) if args.quick else (9, 40)
    chosen = args.only or list(INTEGRATIONS)
    results: dict[str, Any] = {}
    with server_process() as url:
        for integration in chosen:
            results[integration] = {"cpu": cpu_rows(integration, url, rounds, calls)}
        if args.callgrind and shutil.which("valgrind"):
            for integration in [i for i in chosen if i in ("openai", "anthropic")]:
                results[integration]["instructions"] = callgrind_rows(integration, url, 20 if args.quick else 50)
    print(f"\nCPU per call added to a local-server call (median of {rounds} rounds x {calls} calls; "
          "process CPU, server in another process)\n")
    print(f"{'integration':<12} {'contender':<14} {'call (us)':>10} {'added (us)':>11} {'range':>19}"
          f" {'added instr/call':>17}")
    for integration, res in results.items():
        for who, row in res["cpu"].items():
            instr = res.get("instructions", {}).get(who)
            rng = f"{row['added_min_us']:.0f}..{row['added_max_us']:.0f}"
            print(f"{integration:<12} {who:<14} {row['per_call_us']:>10.0f} {row['added_us']:>11.0f} {rng:>19}"
                  f" {'' if instr is None else f'{instr:,.0f}':>17}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
