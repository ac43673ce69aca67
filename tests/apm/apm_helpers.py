"""Starting and reading the real APM servers of tests/apm/: Arize Phoenix and MLflow, each run from its own
virtual environment (tests/apm/servers.sh installs them), on free loopback ports,
stopped by pid at the end of the session.

Enable with the interpreters servers.sh prints:
    HISTORYMW_TEST_PHOENIX_PYTHON=.apm/phoenix/bin/python
    HISTORYMW_TEST_MLFLOW_PYTHON=.apm/mlflow/bin/python
Once a variable is set, a server that does not come up fails the tests (never a skip).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PHOENIX_VAR = "HISTORYMW_TEST_PHOENIX_PYTHON"
MLFLOW_VAR = "HISTORYMW_TEST_MLFLOW_PYTHON"
# Both are slow to import (hundreds of modules) and the CI machine is shared.
START_TIMEOUT = float(os.environ.get("HISTORYMW_TEST_APM_START_TIMEOUT", "300"))
HOW = "run tests/apm/servers.sh and set {var} to the interpreter it installed (see tests/apm/conftest.py)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    python: str

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.workdir / "server.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """By pid (the server's own process group: its workers go too), politely first."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start(name: str, python: str, args: list[str], env: dict[str, str], workdir: Path, url: str,
          ready_path: str) -> Server:
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen([python, *args], cwd=workdir, env={**os.environ, **env}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, url, proc, workdir, python)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode} while starting:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(url + ready_path, timeout=5) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    server.stop()
    pytest.fail(f"{name} was not ready at {url}{ready_path} within {START_TIMEOUT:.0f} s:\n{server.log_tail()}")


def python_for(var: str) -> str:
    python = os.environ.get(var)
    if not python:
        pytest.skip(f"{var} is not set: " + HOW.format(var=var))
    if not os.access(python, os.X_OK):
        pytest.fail(f"{var}={python} is not an executable interpreter")
    return python


# Read back through MLflow's own client, run by the MLflow venv's interpreter (its
# dependencies never meet historymw's). Prints the traces of one experiment as JSON.
_MLFLOW_READER = """
import json, sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
out = []
for t in mlflow.search_traces(locations=[sys.argv[2]], return_type="list", max_results=500):
    spans = []
    for s in t.data.spans:
        spans.append({"name": s.name, "span_id": s.span_id, "parent_id": s.parent_id,
                      "trace_id": s.trace_id, "span_type": s.span_type,
                      "status": str(s.status.status_code), "attributes": s.attributes,
                      "events": [{"name": e.name, "attributes": e.attributes} for e in s.events]})
    out.append({"trace_id": t.info.trace_id, "spans": spans})
json.dump(out, sys.stdout, default=str)
"""


def mlflow_traces(server: Server, experiment_id: str) -> list[dict[str, Any]]:
    done = subprocess.run([server.python, "-c", _MLFLOW_READER, server.url, experiment_id],
                          capture_output=True, timeout=300, check=False)
    if done.returncode != 0:
        raise AssertionError(f"mlflow.search_traces failed:\n{done.stderr.decode(errors='replace')[-3000:]}")
    return list(json.loads(done.stdout))


def mlflow_experiment(server: Server, name: str) -> str:
    created = http("POST", f"{server.url}/api/2.0/mlflow/experiments/create", {"name": name})
    return str(created["experiment_id"])


def phoenix_spans(server: Server, project: str) -> list[dict[str, Any]]:
    """Every span of a Phoenix project, through its REST API (paged)."""
    spans: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(50):  # bounded: 50 pages of 1000
        query = "limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = http("GET", f"{server.url}/v1/projects/{project}/spans?{query}")
        spans.extend(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return spans

