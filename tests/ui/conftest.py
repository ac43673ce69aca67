"""Fixtures for the viewer: one history of 1,001 calls written through historymw, the real
`historymw ui` serving it on a free loopback port, and the system's headless Chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._data import write_history
from ._server import CHROMIUM, CHROMIUM_ARGS, Server

pytest.importorskip("starlette", reason="the viewer needs the ui extra: pip install -e '.[ui]'")


@pytest.fixture(scope="session")
def history_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite history of 1,000 calls over 36 hours plus one hostile call (the newest)."""
    path = tmp_path_factory.mktemp("ui") / "history.db"
    url = f"sqlite:///{path}"
    write_history(url, 1000)
    return url


@pytest.fixture(scope="session")
def server(history_db: str) -> Iterator[Server]:
    s = Server(history_db)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("the browser tests need the system Chromium: apt-get install -y chromium (.ci/run does)")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in the dev extra)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.console_errors = errors
    yield pg
    context.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.timeout(120))
