"""Shared fixtures: every test starts from a fresh default configuration."""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

# LiteLLM fetches its model cost map from the network at import unless told not to;
# whichever test module imports it first, the suite stays offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest

import historymw as hm

# Variables a developer's shell may set that would change what tests see.
_OWN_VARS = [k for k in os.environ if k.startswith("HISTORYMW_") and not k.startswith("HISTORYMW_TEST_")]


@pytest.fixture(autouse=True)
def fresh_historymw(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Default settings (ring only) before each test; export workers stopped after it."""
    for name in _OWN_VARS:
        monkeypatch.delenv(name, raising=False)
    hm.configure()
    yield
    hm.shutdown(timeout=2.0)
    monkeypatch.undo()  # a test's bad HISTORYMW_* value must not fail the next configure()
    for name in _OWN_VARS:
        os.environ.pop(name, None)
    hm.configure()


# The server the project's machines run (trust auth, a database named "test").
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@functools.lru_cache(maxsize=1)
def _postgres() -> tuple[str | None, str]:
    """(URL, why): HISTORYMW_TEST_POSTGRES_URL if set; otherwise the default server when it accepts a
    connection (so `pytest` on a machine running PostgreSQL runs those tests); otherwise (None, why not)."""
    url = os.environ.get("HISTORYMW_TEST_POSTGRES_URL")
    if url:
        return url, "HISTORYMW_TEST_POSTGRES_URL"
    how = "start one on 127.0.0.1:5432 (trust auth, a database named test) or set HISTORYMW_TEST_POSTGRES_URL"
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1.0).close()
    except OSError:
        return None, f"PostgreSQL tests need a server: {how}"
    try:
        import psycopg

        psycopg.connect(DEFAULT_POSTGRES_URL.replace("+psycopg", ""), connect_timeout=5).close()
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable as is
        return None, (f"a server answers on 127.0.0.1:5432 but {DEFAULT_POSTGRES_URL} does not connect "
                      f"({type(exc).__name__}); set HISTORYMW_TEST_POSTGRES_URL")
    return DEFAULT_POSTGRES_URL, "found on 127.0.0.1:5432"


def _postgres_line() -> str:
    url, why = _postgres()
    return f"historymw: PostgreSQL tests run against {url} ({why})" if url else f"historymw: {why}"


def pytest_report_header() -> str:
    return _postgres_line()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    # Also at the end: `-q` hides the header, and a skipped PostgreSQL run must say why.
    terminalreporter.write_line(_postgres_line())


@pytest.fixture
def postgres_url() -> str:
    """The real PostgreSQL server's URL; tests that use it skip (saying how to enable) without it."""
    url, why = _postgres()
    if not url:
        pytest.skip(why)
    return url


@pytest.fixture
def sqlite_url(tmp_path: pytest.TempPathFactory) -> str:
    """A real SQLite file in a temporary directory."""
    return f"sqlite:///{tmp_path}/history.db"  # type: ignore[str-bytes-safe]


@pytest.fixture
def pg(postgres_url: str) -> Iterator[tuple[str, Any]]:
    """A fresh schema on the real PostgreSQL server: the URL historymw writes to (its
    search_path set to the schema), and an engine for the test's own checks."""
    import sqlalchemy as sa

    schema = f"hmtest_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{sep}options={quote(f'-csearch_path={schema}')}"
    check = sa.create_engine(url)
    yield url, check
    hm.shutdown(timeout=2)
    check.dispose()
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
