"""Memory stays bounded over a long run: 200,000 recorded calls with 4 KB prompts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import gc, json, random, string, sys
    import historymw as hm

    if "nogc" in sys.argv[1]:
        gc.disable()
    if "bytes" in sys.argv[1]:
        hm.configure(maxlen=10_000_000)  # the 16 MiB byte budget is what binds

    def rss() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    @hm.recorded(provider="openai")
    def ask(model, messages, **params):
        return {"id": "r", "choices": [{"message": {"role": "assistant", "content": messages[-1]["content"][:64]},
                                        "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 16}}

    rnd = random.Random(1)
    bases = ["".join(rnd.choice(string.ascii_lowercase + "    ") for _ in range(4096)) for _ in range(32)]
    max_bytes = hm.settings().max_bytes
    worst = 0
    after_warmup = None
    for i in range(200_000):
        # a fresh 4 KB prompt each call, dropped by the caller right after
        ask("gpt-4o-mini", [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": bases[i % 32] + str(i)}], temperature=0.2)
        if i % 1000 == 0:
            worst = max(worst, hm.stats().bytes_held)
            if i % 20_000 == 0:
                list(hm.ring()[-10:])  # people read it now and then: sealing must not leak either
        if i == 20_000:
            after_warmup = rss()
    s = hm.stats()
    print(json.dumps({"worst_bytes_held": worst, "max_bytes": max_bytes, "recorded": s.recorded,
                      "evicted": s.evicted, "held": s.records_held, "rss_after_20k": after_warmup,
                      "rss_end": rss(), "errors": s.errors}))
""")


@pytest.mark.parametrize("mode", ["gc", "nogc", "bytes-bound", "bytes-bound-nogc"])
def test_200k_recorded_calls_stay_within_the_byte_budget_and_rss_plateaus(mode: str) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["recorded"] == 200_000 and r["errors"] == {}
    assert r["worst_bytes_held"] <= r["max_bytes"]
    if "bytes" in mode:
        assert r["worst_bytes_held"] > r["max_bytes"] * 0.9  # the budget, not maxlen, was the bound
    assert r["evicted"] == 200_000 - r["held"]
    growth = r["rss_end"] - r["rss_after_20k"]
    assert growth < 8 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB after the first 20,000 calls ({mode})"
