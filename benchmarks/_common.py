"""Helpers shared by benchmarks/run_all.py, peers.py and import_cost.py: the machine, statistics, plots."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
OUT = BENCH / "out"

# LiteLLM fetches its model cost map from the network at import unless told not to; every
# benchmark process (and every child it starts) must work offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a benchmark subprocess: offline LiteLLM, deterministic hashing, this repo first."""
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(BENCH), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """What a reader needs to compare our numbers with theirs."""
    return {"cores": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "implementation": platform.python_implementation(), "platform": platform.platform(terse=True),
            "load": load()}


def machine_line(m: dict[str, Any]) -> str:
    return f"{m['cores']} cores ({m['cpu']}), {m['implementation']} {m['python']}, {m['platform']}"


def spread(added: Sequence[float]) -> dict[str, float]:
    """Median and the min..max over rounds: the median is the figure, the range says how much to trust it."""
    return {"median": statistics.median(added), "min": min(added), "max": max(added)}


def versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def pyplot() -> Any:
    """matplotlib's pyplot on a file-only backend, or None when matplotlib is not installed (the `dev` extra
    CI installs does not have it: the quick run then writes its tables without plots)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def footer(fig: Any, machine_desc: str, command: str) -> None:
    """Every figure names the machine and the command that reproduces it."""
    fig.text(0.005, 0.005, f"{machine_desc}\nreproduce: {command}", fontsize=7, color="#555555",
             ha="left", va="bottom")


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)
