"""What the otel backend costs the caller, next to OpenTelemetry peers on the same calls.

    python benchmarks/otel_overhead.py [--n 4000] [--rounds 7] [--litellm-n 300] [--no-litellm]

Two groups, each against its own baseline measured in the same run:

1. A local LM function returning an OpenAI-style response (no framework):
   bare, `@hm.recorded` with the ring only, and with the ring plus the otel
   backend (a TracerProvider with a BatchSpanProcessor and an in-memory
   exporter, a MeterProvider with an in-memory reader).
2. `litellm.completion(mock_response=...)` (real LiteLLM, no network): bare;
   a no-op LiteLLM CustomLogger (what LiteLLM's callback machinery costs by
   itself); historymw's LiteLLM integration with the ring only and with the ring plus
   the otel backend; LiteLLM's own
   OpenTelemetry callback; OpenInference's LiteLLM instrumentation (when
   installed). All three export to the same kind of provider as in 1.

Three numbers per row, medians over interleaved rounds, µs per call:
- caller CPU: CPU time of the calling thread (time.thread_time), what the call
  itself pays; work handed to background threads is not in it;
- wall: elapsed time of the loop of calls on the caller's thread;
- total CPU: CPU time of the whole process (every thread) for the loop plus
  draining everything queued (spans exported, LiteLLM's logging threads done):
  all the work, wherever it ran.
The "+caller" column is caller CPU minus the group's bare caller CPU: the
caller's cost of recording. Target: at most 15 µs with the otel backend on, and
less than either peer.

`measure(n)` returns (row name, caller CPU µs per call) pairs for other
benchmark tables (benchmarks/hot_path.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the cost map
warnings.filterwarnings("ignore")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

import historymw as hm  # noqa: E402
from historymw import otel as hm_otel  # noqa: E402

MESSAGES = [{"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "What is the capital of France?"}]
RESPONSE = {"id": "chatcmpl-1", "model": "gpt-4o-mini-2024-07-18", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 24, "completion_tokens": 2, "total_tokens": 26}}


@dataclass
class Sample:
    caller_us: float
    wall_us: float
    total_us: float


class Pipeline:
    """A real SDK setup: BatchSpanProcessor + in-memory exporter, in-memory metric reader."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def drain(self) -> int:
        self.tracer_provider.force_flush()
        n = len(self.spans.get_finished_spans())
        self.spans.clear()
        return n


class Config:
    """One row: how to set up, the call to time, how to drain what it queued, how to tear down."""

    def __init__(self, name: str, call: Callable[[], Any], setup: Callable[[], None] = lambda: None,
                 drain: Callable[[], int] = lambda: 0, teardown: Callable[[], None] = lambda: None) -> None:
        self.name, self.call, self.setup, self.drain, self.teardown = name, call, setup, drain, teardown
        self.samples: list[Sample] = []
        self.spans_per_call: list[float] = []


def _round(cfg: Config, n: int, warmup: int) -> None:
    cfg.setup()
    try:
        call = cfg.call
        for _ in range(warmup):
            call()
        cfg.drain()
        proc0, thread0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
        for _ in range(n):
            call()
        wall, thread = time.perf_counter() - wall0, time.thread_time() - thread0
        spans = cfg.drain()
        total = time.process_time() - proc0
        cfg.samples.append(Sample(thread / n * 1e6, wall / n * 1e6, total / n * 1e6))
        cfg.spans_per_call.append(spans / n)
    finally:
        cfg.teardown()


def run(configs: list[Config], n: int, rounds: int, warmup: int) -> None:
    for r in range(rounds):  # interleaved, in a rotating order: drift hits every row alike
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for cfg in order:
            _round(cfg, n, warmup)


def median(cfg: Config, field: str) -> float:
    return statistics.median(getattr(s, field) for s in cfg.samples)


# -- group 1: a local LM function -------------------------------------------------------


def lm(model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
    return RESPONSE


recorded_lm = hm.recorded(provider="openai")(lm)


def local_configs() -> list[Config]:
    otel = Pipeline()

    def with_otel() -> None:
        hm.configure(backends=["ring", hm_otel.backend(tracer_provider=otel.tracer_provider,
                                                         meter_provider=otel.meter_provider)])

    def drain_otel() -> int:
        assert hm.flush(30.0)
        return otel.drain()

    return [
        Config("bare function", lambda: lm("gpt-4o-mini", MESSAGES, temperature=0.2)),
        Config("historymw, ring", lambda: recorded_lm("gpt-4o-mini", MESSAGES, temperature=0.2),
               setup=lambda: hm.configure(backends=["ring"]) and None),
        Config("historymw, ring + otel backend", lambda: recorded_lm("gpt-4o-mini", MESSAGES, temperature=0.2),
               setup=with_otel, drain=drain_otel, teardown=lambda: hm.shutdown(30.0) and None),
    ]


# -- group 2: LiteLLM ------------------------------------------------------------------


def _litellm_idle(timeout: float = 60.0) -> None:
    """Wait for LiteLLM's logging threads to finish what the calls handed them."""
    from litellm.litellm_core_utils.thread_pool_executor import executor

    deadline = time.monotonic() + timeout
    while executor._pending_slots._value < executor._max_pending_tasks and time.monotonic() < deadline:
        time.sleep(0.002)


def _clear_litellm_callbacks(litellm: Any) -> None:
    for name in ("callbacks", "input_callback", "success_callback", "failure_callback", "service_callback",
                 "_async_input_callback", "_async_success_callback", "_async_failure_callback"):
        lst = getattr(litellm, name, None)
        if isinstance(lst, list):
            lst.clear()


def litellm_configs() -> list[Config]:
    import litellm
    from litellm.integrations.opentelemetry import OpenTelemetry, OpenTelemetryConfig

    from historymw.integrations import litellm as hm_litellm

    def completion() -> Any:
        return litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="Paris.", temperature=0.2)

    ours, theirs, oi = Pipeline(), Pipeline(), Pipeline()

    def hm_setup() -> None:
        hm.configure(backends=["ring", hm_otel.backend(tracer_provider=ours.tracer_provider,
                                                         meter_provider=ours.meter_provider)])
        hm_litellm.install()

    def hm_drain() -> int:
        _litellm_idle()
        assert hm_litellm.flush(30.0)
        return ours.drain()

    def hm_teardown() -> None:
        hm_litellm.uninstall()
        hm.shutdown(30.0)
        hm.configure(backends=["ring"], policy="off")

    from litellm.integrations.custom_logger import CustomLogger

    noop = CustomLogger()  # what LiteLLM itself costs once any callback is registered

    def noop_setup() -> None:
        hm.configure(policy="off")
        litellm.callbacks = [noop]

    def hm_ring_setup() -> None:
        hm.configure(backends=["ring"])
        hm_litellm.install()

    def hm_ring_drain() -> int:
        _litellm_idle()
        assert hm_litellm.flush(30.0)
        return 0

    litellm_otel = OpenTelemetry(config=OpenTelemetryConfig(exporter=theirs.spans, skip_set_global=True),
                                 tracer_provider=theirs.tracer_provider, meter_provider=theirs.meter_provider)

    def lo_setup() -> None:
        hm.configure(policy="off")
        litellm.callbacks = [litellm_otel]

    def lo_drain() -> int:
        _litellm_idle()
        return theirs.drain()

    configs = [
        Config("litellm.completion(mock_response), bare", completion,
               setup=lambda: hm.configure(policy="off") and None, drain=lambda: (_litellm_idle(), 0)[1]),
        Config("  + a no-op LiteLLM CustomLogger (LiteLLM's callback floor)", completion, setup=noop_setup,
               drain=lambda: (_litellm_idle(), 0)[1], teardown=lambda: _clear_litellm_callbacks(litellm)),
        Config("  + historymw LiteLLM integration, ring only", completion, setup=hm_ring_setup,
               drain=hm_ring_drain, teardown=hm_teardown),
        Config("  + historymw LiteLLM integration, ring + otel", completion, setup=hm_setup, drain=hm_drain,
               teardown=hm_teardown),
        Config("  + LiteLLM's own OpenTelemetry callback", completion, setup=lo_setup, drain=lo_drain,
               teardown=lambda: _clear_litellm_callbacks(litellm)),
    ]
    try:
        from openinference.instrumentation.litellm import LiteLLMInstrumentor
    except ImportError:
        print("(openinference-instrumentation-litellm not installed: its row is skipped)", file=sys.stderr)
        return configs
    instrumentor = LiteLLMInstrumentor()

    def oi_setup() -> None:
        hm.configure(policy="off")
        instrumentor.instrument(tracer_provider=oi.tracer_provider, meter_provider=oi.meter_provider)

    def oi_drain() -> int:
        _litellm_idle()
        return oi.drain()

    configs.append(Config("  + OpenInference LiteLLM instrumentation", completion, setup=oi_setup, drain=oi_drain,
                          teardown=instrumentor.uninstrument))
    return configs


# -- reporting ---------------------------------------------------------------------------


def table(title: str, configs: list[Config]) -> str:
    base = configs[0]
    b_caller, b_wall, b_total = (median(base, f) for f in ("caller_us", "wall_us", "total_us"))
    lines = [title, f"{'':50} {'caller CPU':>11} {'+caller':>8} {'wall':>9} {'+wall':>8} {'total CPU':>10} "
             f"{'+total':>8} {'ratio':>6} {'spans/call':>10}"]
    for cfg in configs:
        c, w, t = (median(cfg, f) for f in ("caller_us", "wall_us", "total_us"))
        lines.append(f"{cfg.name:50} {c:11.2f} {c - b_caller:8.2f} {w:9.2f} {w - b_wall:8.2f} {t:10.2f} "
                     f"{t - b_total:8.2f} {c / b_caller:6.2f} {statistics.median(cfg.spans_per_call):10.2f}")
    return "\n".join(lines)


def measure(n: int = 4000, *, rounds: int = 5, litellm_n: int | None = None,
            with_litellm: bool = True) -> list[tuple[str, float]]:
    """(row name, caller CPU µs per call) for each configuration; LiteLLM rows when LiteLLM is installed."""
    local = local_configs()
    run(local, n, rounds, warmup=min(500, n))
    rows = [(f"otel: {c.name}", median(c, "caller_us")) for c in local]
    if with_litellm:
        try:
            peers = litellm_configs()
        except ImportError:
            return rows
        run(peers, litellm_n or max(50, n // 20), rounds, warmup=30)
        rows += [(f"otel: {c.name.strip().lstrip('+ ')}", median(c, "caller_us")) for c in peers]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="calls per round, local function")
    parser.add_argument("--litellm-n", type=int, default=300, help="calls per round, LiteLLM")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-litellm", action="store_true")
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; µs per call, medians of {args.rounds} "
          "interleaved rounds\n")
    local = local_configs()
    run(local, args.n, args.rounds, warmup=500)
    print(table(f"1. local LM function, {args.n} calls per round", local))
    ours = median(local[2], "caller_us") - median(local[0], "caller_us")
    verdict = [f"\nhistorymw otel backend, caller's cost: {ours:.2f} µs per call (target <= 15 µs): "
               f"{'OK' if ours <= 15 else 'MISSED'}"]
    if not args.no_litellm:
        peers = litellm_configs()
        run(peers, args.litellm_n, args.rounds, warmup=30)
        print()
        print(table(f"2. litellm.completion(mock_response=...), {args.litellm_n} calls per round", peers))
        base = median(peers[0], "caller_us")
        extra = {c.name.strip(): median(c, "caller_us") - base for c in peers[1:]}
        extra.pop("+ historymw LiteLLM integration, ring only")
        extra.pop("+ a no-op LiteLLM CustomLogger (LiteLLM's callback floor)")
        mine = extra.pop("+ historymw LiteLLM integration, ring + otel")
        for name, cost in extra.items():
            verdict.append(f"  via LiteLLM: historymw +{mine:.1f} µs vs {name[2:]} +{cost:.1f} µs: "
                           f"{'less' if mine < cost else 'NOT less'}")
    print("\n".join(verdict))


if __name__ == "__main__":
    main()
