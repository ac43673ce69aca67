"""Fixtures of the reliability suite: a fresh PostgreSQL schema per test, and the figures each test
reports (calls made, stored, dropped, faults injected, examples tried), printed at the end of the run."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

_FIGURES: dict[str, dict[str, Any]] = {}


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    """`figures(made=..., stored=..., dropped=..., faults=..., examples=...)`: what this test proved,
    for the summary at the end of the run (README's closing note quotes it)."""

    def report(**values: Any) -> None:
        _FIGURES.setdefault(request.node.nodeid, {}).update(values)

    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for nodeid, values in _FIGURES.items():
        name = nodeid.split("::", 1)[-1]
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def _with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def pg(postgres_url: str) -> Iterator[tuple[str, sa.Engine]]:
    """A fresh schema on the real server: the store's URL, and an engine for the test's own checks."""
    schema = f"hmrel_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = _with_search_path(postgres_url, schema)
    check = sa.create_engine(url)
    yield url, check
    import historymw as hm

    hm.shutdown(timeout=2)
    check.dispose()
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
