"""Run DSPy's own tests plain and with historymw's DSPy integration installed; print what changed.

    python benchmarks/dspy_suite.py /path/to/dspy/tests [MODULE ...] [--pytest-args "..."]

The path is the `tests/` directory of a DSPy checkout you already have (this script fetches
nothing; the published sdists carry no tests). Use the checkout whose version matches the
installed DSPy, or the nearest. MODULEs are test files relative to that directory
(default: the modules that exercise LM history, listed below). Each module set runs twice
with pytest from the checkout's root: plain, and with `historymw.integrations.dspy.install()`
called at pytest start by a small plugin. The report lists every test that passed plain and
did not pass installed (and the reverse), from the two runs' JUnit XML.

Not part of the project's test run: it needs a DSPy checkout and minutes of CPU.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

DEFAULT_MODULES = [
    "clients/test_lm.py",
    "clients/test_inspect_global_history.py",
    "clients/test_cache.py",
    "callback/test_callback.py",
    "utils/test_usage_tracker.py",
    "utils/test_parallelizer.py",
    "predict/test_predict.py",
    "predict/test_chain_of_thought.py",
    "predict/test_parallel.py",
    "predict/test_react.py",
    "predict/test_react_v2.py",
    "streaming/test_streaming.py",
    "primitives/test_module.py",
    "primitives/test_base_module.py",
    "evaluate/test_evaluate.py",
    "adapters/test_chat_adapter.py",
    "adapters/test_json_adapter.py",
    "adapters/test_xml_adapter.py",
    "adapters/test_two_step_adapter.py",
    "signatures/test_adapter_file.py",
    "signatures/test_adapter_image.py",
    "teleprompt/test_bootstrap.py",
    "teleprompt/test_copro_optimizer.py",
    "teleprompt/test_utils.py",
    "teleprompt/test_random_search.py",
    "teleprompt/test_gepa_instruction_proposer.py",
]

PLUGIN = '''"""pytest plugin: historymw's DSPy integration, installed before DSPy's tests are collected."""

import json
import os

RECORDED = []


def pytest_configure(config):
    from historymw.integrations import dspy as hm_dspy

    hm_dspy.install()


def pytest_runtest_teardown(item):
    import historymw as hm

    RECORDED.append(hm.stats().recorded)  # DSPy's conftest reconfigures nothing of historymw's


def pytest_unconfigure(config):
    # Proof that the run was the installed one: DSPy's global list was a view, calls were recorded.
    from dspy.clients import base_lm

    with open(os.environ["HISTORYMW_SUITE_REPORT"], "w") as f:
        json.dump({"global_history": type(base_lm.GLOBAL_HISTORY).__name__,
                   "recorded": max(RECORDED, default=0)}, f)
'''


def outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed / failed / error / skipped, from a JUnit XML report."""
    results: dict[str, str] = {}
    if not junit.exists():
        return results
    for case in ET.parse(junit).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
                break
        results[test_id] = outcome
    return results


def run(tests_dir: Path, modules: list[str], installed: bool, work: Path, extra: list[str],
        historymw_path: str = "") -> dict[str, str]:
    junit = work / ("installed.xml" if installed else "plain.xml")
    env = dict(os.environ)
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *extra]
    if installed:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(work), historymw_path, env.get("PYTHONPATH", "")) if p)
        env["HISTORYMW_SUITE_REPORT"] = str(work / "installed.json")
        cmd += ["-p", "historymw_dspy_suite_plugin"]
    cmd += [str(Path(tests_dir.name) / m) for m in modules]
    print(f"$ (cd {tests_dir.parent} && {shlex.join(cmd)})", flush=True)
    proc = subprocess.run(cmd, cwd=tests_dir.parent, env=env, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1:] or proc.stderr.strip().splitlines()[-3:]
    print("   ", *tail, flush=True)
    report = work / "installed.json"
    if installed and report.exists():
        print(f"    installed run: {report.read_text()}", flush=True)
    return outcomes(junit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tests_dir", type=Path, help="the tests/ directory of a DSPy checkout")
    parser.add_argument("modules", nargs="*", help="test files relative to tests_dir (default: a history-heavy set)")
    parser.add_argument("--pytest-args", default="", help="more pytest arguments, as one shell-quoted string")
    parser.add_argument("--historymw-path", default="", help="another historymw tree (put first on PYTHONPATH)")
    args = parser.parse_args(argv)
    tests_dir = args.tests_dir.resolve()
    if not tests_dir.is_dir():
        parser.error(f"{tests_dir} is not a directory (give the tests/ directory of a DSPy checkout)")
    modules = args.modules or DEFAULT_MODULES
    missing = [m for m in modules if not (tests_dir / m).exists()]
    if missing:
        print(f"skipping modules this checkout does not have: {', '.join(missing)}", file=sys.stderr)
        modules = [m for m in modules if m not in missing]
    if not modules:
        parser.error("no test modules to run")
    extra = shlex.split(args.pytest_args)

    with tempfile.TemporaryDirectory(prefix="historymw-dspy-suite-") as tmp:
        work = Path(tmp)
        (work / "historymw_dspy_suite_plugin.py").write_text(PLUGIN)
        plain = run(tests_dir, modules, False, work, extra)
        installed = run(tests_dir, modules, True, work, extra, args.historymw_path)

    broke = sorted(t for t, o in plain.items() if o == "passed" and installed.get(t, "missing") != "passed")
    fixed = sorted(t for t, o in installed.items() if o == "passed" and plain.get(t, "missing") != "passed")
    by_module: dict[str, tuple[int, int, int]] = {}
    for test_id, outcome in plain.items():
        module = test_id.split("::")[0]
        p, i, b = by_module.get(module, (0, 0, 0))
        by_module[module] = (p + (outcome == "passed"), i + (installed.get(test_id) == "passed"),
                             b + (test_id in broke))
    print(f"\n{'module':<60} {'plain':>6} {'inst.':>6} {'p→f':>5}")
    for module, (p, i, b) in sorted(by_module.items()):
        print(f"{module:<60} {p:>6} {i:>6} {b:>5}")
    total = [sum(v[k] for v in by_module.values()) for k in range(3)]
    print(f"{'total':<60} {total[0]:>6} {total[1]:>6} {total[2]:>5}")
    print(f"\npassed plain, not installed ({len(broke)}):")
    for test_id in broke:
        print(f"  {test_id}  [{installed.get(test_id, 'missing')}]")
    if fixed:
        print(f"\npassed installed, not plain ({len(fixed)}):")
        for test_id in fixed:
            print(f"  {test_id}  [{plain.get(test_id, 'missing')}]")
    return 1 if broke else 0


if __name__ == "__main__":
    sys.exit(main())
