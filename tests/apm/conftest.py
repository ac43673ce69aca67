"""Real APM servers for tests/apm/: Arize Phoenix and MLflow, each from its own virtual
environment (tests/apm/servers.sh installs them), on free loopback ports, stopped by pid
at the end of the session. Without HISTORYMW_TEST_PHOENIX_PYTHON / HISTORYMW_TEST_MLFLOW_PYTHON
their tests skip, saying how to enable them; once set, a server that does not start fails them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apm_helpers import MLFLOW_VAR, PHOENIX_VAR, Server, free_port, python_for, start


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    python = python_for(PHOENIX_VAR)
    workdir = tmp_path_factory.mktemp("phoenix")
    port, grpc = free_port(), free_port()
    env = {"PHOENIX_WORKING_DIR": str(workdir), "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port),
           "PHOENIX_GRPC_PORT": str(grpc), "PHOENIX_TELEMETRY_ENABLED": "false"}
    server = start("Phoenix", python, ["-m", "phoenix.server.main", "serve"], env, workdir,
                   f"http://127.0.0.1:{port}", "/healthz")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    python = python_for(MLFLOW_VAR)
    workdir = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    args = ["-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{workdir}/mlflow.db",
            "--default-artifact-root", str(workdir / "artifacts")]
    server = start("MLflow", python, args, {"MLFLOW_TRACKING_URI": ""}, workdir,
                   f"http://127.0.0.1:{port}", "/health")
    yield server
    server.stop()
