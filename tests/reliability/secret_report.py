"""Print the secret suite's figures: families x places x sinks checked, leaks, false-positive rate.

    python -m tests.reliability.secret_report

Runs tests/reliability/test_secret_matrix.py (PostgreSQL too when HISTORYMW_TEST_POSTGRES_URL is
set) and prints what it measured; docs/redaction.md quotes these figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "secrets.json"
        env = {**os.environ, "HISTORYMW_SECRET_REPORT": str(report), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        test = Path(__file__).with_name("test_secret_matrix.py")
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)], env=env,
                             capture_output=True, text=True)
        if not report.exists():
            print(run.stdout[-3000:], run.stderr[-3000:])
            return 2
        data = json.loads(report.read_text())
    m, fp = data.get("matrix"), data.get("false_positives")
    if m:
        print(f"secret matrix (seed {m['seed']}): {m['families']} families x {m['places']} places x {m['sinks']} sinks"
              f" = {m['cells']} checks over {m['records']} records; leaks: {m['leaks']}")
        print(f"  sinks: {', '.join(m['sink_names'])}")
        print(f"  places: {', '.join(m['place_names'])}")
        print(f"  families: {', '.join(m['family_names'])}")
        for leak in m["leaked"]:
            print(f"  LEAK {leak}")
    if fp:
        print(f"false positives: {fp['texts']} ordinary texts, {fp['checked']} fields checked, {fp['damaged']} damaged"
              f" (rate {fp['rate']:.3f})")
        for example in fp["examples"]:
            print(f"  DAMAGED {example}")
    print(f"pytest: {run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.returncode}")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
