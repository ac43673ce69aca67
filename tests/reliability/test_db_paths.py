"""However a SQLite path is spelled (`~`, a symlink, a dangling symlink), historymw writes one
file, the one it created owner-only; and a reader never creates one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import historymw as hm


def _record_one(url: str) -> None:
    old = os.umask(0)  # a permissive umask: only historymw's own mode keeps the file private
    try:
        hm.configure(backends=["sql"], sql_url=url)
        hm.recorded(provider="p")(lambda model, messages: "ok")("m", [{"role": "user", "content": "q"}])
        assert hm.flush(timeout=10)
    finally:
        hm.configure(backends=["ring"])
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_a_tilde_is_the_home_directory_for_sqlite_and_for_the_mode(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    (cwd / "~").mkdir(parents=True)  # a directory named "~" where SQLite alone would have written
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    _record_one("sqlite:///~/t.db")
    assert list((cwd / "~").iterdir()) == []
    assert (home / "t.db").stat().st_size > 0 and _mode(home / "t.db") == 0o600
    from historymw.store import Store

    with Store("sqlite:///~/t.db") as store:
        assert store.count() == 1


@pytest.mark.parametrize("kind", ["dangling", "live"])
def test_a_symlinked_path_is_one_private_file(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "data" / "history.db"
    target.parent.mkdir()
    if kind == "live":
        target.touch(mode=0o600)
    link = tmp_path / "link.db"
    link.symlink_to(target)
    _record_one(f"sqlite:///{link}")
    assert link.is_symlink() and target.stat().st_size > 0
    for f in target.parent.iterdir():  # the database and whatever journal files remain
        assert _mode(f) == 0o600, f"{f.name} is {oct(_mode(f))}"


def test_a_store_reader_never_creates_a_file(tmp_path: Path) -> None:
    from historymw.store import Store, StoreError

    link = tmp_path / "link.db"
    link.symlink_to(tmp_path / "nowhere.db")
    for url in (f"sqlite:///{tmp_path}/missing.db", f"sqlite:///{link}"):
        with pytest.raises(StoreError, match="no history database"):
            Store(url)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.db"]
