"""Fixtures of the reliability suite: a fresh PostgreSQL schema per test, and the figures each test
reports (calls made, stored, dropped, faults injected, examples tried), printed at the end of the run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

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


