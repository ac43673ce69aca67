"""Exact accounting across configurations, and backends the environment cannot start:
nothing vanishes uncounted, and each configuration keeps its own tally."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence

import pytest

import historymw as hm


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HISTORYMW_")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**base, **env}, timeout=120)


_CALLS = """
    import historymw as hm

    @hm.recorded
    def ask(model, messages):
        return "ok"

    for _ in range(3):
        assert ask("m", [{"role": "user", "content": "q"}]) == "ok"
    result = hm.flush(2)
    s = hm.stats()
    print("FLUSH", bool(result), "|", result.detail)
    print("STATS", s.recorded, s.exported, s.dropped_by_reason, len(hm.ring()))
"""


@pytest.mark.parametrize(("url", "reported_at_import"), [
    ("mysql://x/y", True),  # a scheme historymw does not store into: reported at import
    ("sqlite:////nonexistent/dir/x.db", False),  # a database that cannot be opened: found at first use
])
def test_a_sql_backend_the_environment_cannot_start_counts_every_record_it_misses(
        url: str, reported_at_import: bool) -> None:
    proc = _run(_CALLS, HISTORYMW_BACKENDS="ring,sql", HISTORYMW_SQL_URL=url)
    assert proc.returncode == 0, proc.stderr  # the application never sees it
    assert "FLUSH False | sql: backend unavailable" in proc.stdout
    assert "3 records dropped as backend_unavailable" in proc.stdout
    assert "STATS 3 0 {'backend_unavailable': 3} 3" in proc.stdout  # the ring still has them
    logged = proc.stdout + proc.stderr
    if reported_at_import:
        line = next(ln for ln in logged.splitlines() if "historymw.bad_environment_value" in ln)
        assert "HISTORYMW_SQL_URL" in line and "mysql://x/y" in line and "backend_unavailable" in line
    else:
        assert "backend_start:sql" in logged and "nonexistent" in logged


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite:////nonexistent/dir/x.db"])
def test_configure_refuses_a_sql_url_it_cannot_use(url: str) -> None:
    with pytest.raises(hm.ConfigError):
        hm.configure(backends=["ring", "sql"], sql_url=url)


class Refusing:
    """A destination that is down: every export fails."""

    def __init__(self) -> None:
        self.attempts = threading.Event()

    def export(self, records: Sequence[hm.LMCall]) -> None:
        self.attempts.set()
        raise ConnectionError("down")

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self) -> None:
        pass


class Keeping:
    def __init__(self) -> None:
        self.records: list[hm.LMCall] = []

    def export(self, records: Sequence[hm.LMCall]) -> None:
        self.records.extend(records)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self) -> None:
        pass


@hm.recorded
def ask(model: str, messages: object) -> str:
    return "ok"


MSGS = [{"role": "user", "content": "q"}]


def test_replacing_a_configuration_keeps_each_tally_to_itself() -> None:
    down = Refusing()
    hm.configure(backends=["ring", down], queue_size=10_000, batch_size=100, flush_interval=0.01,
                 shutdown_timeout=0.5)
    for _ in range(2000):
        ask("m", MSGS)
    assert down.attempts.wait(30)
    keeping = Keeping()
    hm.configure(backends=["ring", keeping])  # stops the old worker: its queue is dropped at shutdown
    new = hm.stats()
    assert (new.recorded, new.dropped, new.queued, new.exported) == (0, 0, 0, 0)
    old = hm.stats(previous=True)
    assert old is not None
    assert old.recorded == 2000 and old.queued == 0
    assert old.exported + old.dropped == 2000 and old.dropped == 2000
    assert set(old.dropped_by_reason) <= {"shutdown", "export_failed"}
    for _ in range(5):
        ask("m", MSGS)
    assert hm.flush(5)
    new = hm.stats()
    assert (new.recorded, new.exported, new.dropped) == (5, 5, 0) and len(keeping.records) == 5


def test_the_environment_configuration_gets_its_final_tally_too() -> None:
    proc = _run("""
        import historymw as hm

        @hm.recorded
        def ask(model, messages):
            return "ok"

        print("BEFORE", hm.stats(previous=True))
        ask("m", [])
        ask("m", [])
        hm.configure(maxlen=5)
        print("AFTER", hm.stats(previous=True).recorded, hm.stats().recorded)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "BEFORE None" in proc.stdout and "AFTER 2 0" in proc.stdout
