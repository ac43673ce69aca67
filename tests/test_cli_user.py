"""What a new user types at the `historymw` command: where --db goes, what reading may touch,
confirmation before deleting, short ids, bad input, and recorded text that tries to drive the
terminal. Every command runs the installed console script in a subprocess."""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli import EXE, MSGS, _ids, run

import historymw as hm
from historymw.sql.ids import short_id

ESCAPES = "\x1b]0;pwned\x07 \x1b]52;c;ZXZpbA==\x07 \x1b[2J\x1b[H \x9b31m \x1b[31mred\r\x08"
RAW_CONTROL = ("\x1b", "\x07", "\x9b", "\r", "\x08")


def _record(url: str, n: int, *, text: str = "answer {i}", session: str | None = None, ago: float = 3600) -> None:
    hm.configure(backends=["sql"], sql_url=url)
    base = time.time() - ago
    with hm.history(session=session):
        for i in range(n):
            with hm.call(provider="p", model="m", messages=MSGS, started_at=base + i * 1e-6) as c:
                c.output(text=text.format(i=i))
    assert hm.flush(timeout=10)
    hm.configure(backends=["ring"])


def _one_line_error(p: subprocess.CompletedProcess[str], code: int) -> str:
    assert p.returncode == code, (p.returncode, p.stderr)
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    return p.stderr


# -- issue 12 item 1: only the SQL URL is read, and a bad one is one line ------------------------------


def test_a_bad_sql_url_in_the_environment_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    for value in ("mysql://x/y", "sqlite+nosuch:///x.db"):
        err = _one_line_error(run("stats", env={"HISTORYMW_SQL_URL": value}, cwd=tmp_path), 2)
        assert f"HISTORYMW_SQL_URL={value!r} is not valid" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("env", [
    {"HISTORYMW_POLICY": "bogus"}, {"HISTORYMW_MAX_BYTES": "lots"}, {"HISTORYMW_SAMPLE_RATE": "2"},
    {"HISTORYMW_SQL_URL": "no scheme here"},
])
def test_a_bad_recording_setting_never_crashes_the_cli(sqlite_url: str, env: dict[str, str]) -> None:
    """The CLI reads only the database URL; a bad value of another variable concerns recording."""
    _record(sqlite_url, 2)
    if "HISTORYMW_SQL_URL" in env:
        _one_line_error(run("stats", env=env), 2)
    else:
        p = run("--db", sqlite_url, "stats", "--json", env=env)
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
        assert json.loads(p.stdout)[0]["calls"] == 2


# -- item 6: --db before or after the command; a bare path --------------------------------------------


def test_db_goes_before_or_after_the_command_and_may_be_a_bare_path(sqlite_url: str, tmp_path: Path) -> None:
    _record(sqlite_url, 3)
    path = sqlite_url.removeprefix("sqlite:///")
    for argv in (["--db", sqlite_url, "stats", "--json"], ["stats", "--db", sqlite_url, "--json"],
                 ["stats", "--json", "--db", path], ["--db", "elsewhere.db", "stats", "--json", "--db", path]):
        p = run(*argv, cwd=tmp_path)
        assert p.returncode == 0, (argv, p.stderr)
        assert json.loads(p.stdout)[0]["calls"] == 3
    p = run("stats", "--json", "--db", "history.db", cwd=tmp_path)  # relative to the current directory
    assert p.returncode == 0 and json.loads(p.stdout)[0]["calls"] == 3


# -- item 7: readers never write ----------------------------------------------------------------------


def _foreign_sqlite(path: Path) -> bytes:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('not historymw')")
    conn.commit()
    conn.close()
    return path.read_bytes()


@pytest.mark.parametrize("command", [["stats"], ["tail"], ["show", "abcd1234"], ["export", "--format", "jsonl"]])
def test_reading_a_foreign_sqlite_file_leaves_it_byte_for_byte(tmp_path: Path, command: list[str]) -> None:
    foreign = tmp_path / "other.db"
    before = _foreign_sqlite(foreign)
    err = _one_line_error(run("--db", f"sqlite:///{foreign}", *command), 3)
    assert "no historymw tables" in err
    assert foreign.read_bytes() == before  # not switched to WAL (header bytes 18-19), nothing created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_reading_an_empty_file_leaves_it_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    err = _one_line_error(run("--db", str(empty), "tail"), 3)
    assert "no historymw tables" in err
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_reading_an_older_store_does_not_migrate_it(sqlite_url: str) -> None:
    """A store of schema version 2 (before short ids) is read as it is; the next writer migrates."""
    import sqlite3

    _record(sqlite_url, 3)
    path = sqlite_url.removeprefix("sqlite:///")
    _downgrade_to_v2(path)
    before = Path(path).read_bytes()
    ids = _ids(sqlite_url)
    p = run("--db", path, "tail")
    assert p.returncode == 0 and all(short_id(i) in p.stdout for i in ids), p.stderr
    p = run("--db", path, "show", short_id(ids[1]).upper(), "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["id"] == ids[1], p.stderr
    assert Path(path).read_bytes() == before
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM historymw_schema").fetchone() == (2,)
    conn.close()


def _downgrade_to_v2(path: str) -> None:
    """The store as the release before short ids wrote it: no short_id column, version 2."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX ix_historymw_calls_short_id")
    conn.execute("ALTER TABLE historymw_calls DROP COLUMN short_id")
    conn.execute("UPDATE historymw_schema SET version = 2")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


# -- item 8: prune counts, asks, refuses --------------------------------------------------------------


def test_prune_dry_run_counts_and_deletes_nothing(sqlite_url: str) -> None:
    _record(sqlite_url, 5)
    p = run("--db", sqlite_url, "prune", "--keep", "2", "--dry-run")
    assert p.returncode == 0
    assert p.stdout.strip() == "would delete 3 calls beyond the newest 2 (dry run: nothing deleted)"
    p = run("--db", sqlite_url, "prune", "--older-than", "30m", "--dry-run")
    assert p.returncode == 0 and p.stdout.startswith("would delete 5 calls older than 30m")
    assert len(_ids(sqlite_url)) == 5


def test_prune_without_a_terminal_needs_yes(sqlite_url: str) -> None:
    """Decided: a script (no terminal to ask on) must say --yes; without it nothing is deleted."""
    _record(sqlite_url, 5)
    err = _one_line_error(run("--db", sqlite_url, "prune", "--keep", "0"), 2)
    assert "pass --yes" in err and len(_ids(sqlite_url)) == 5
    err = _one_line_error(run("--db", sqlite_url, "prune", "--older-than", "30d"), 2)  # nothing to delete: same
    assert "pass --yes" in err
    p = run("--db", sqlite_url, "prune", "--keep", "0", "--yes")
    assert p.returncode == 0 and p.stdout.strip() == "deleted 5 calls beyond the newest 0"
    assert _ids(sqlite_url) == []


def _on_a_terminal(argv: list[str], answer: str) -> tuple[int, str]:
    """Run with stdin/stdout/stderr on a pseudo-terminal, answer the question, return (code, output)."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTORYMW_")}
    proc = subprocess.Popen([EXE, *argv], stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + 60
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if not answered and b"[y/N]" in out:
                os.write(leader, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=30)
    os.close(leader)
    return code, out.decode(errors="replace")


def test_prune_on_a_terminal_asks_first(sqlite_url: str) -> None:
    _record(sqlite_url, 4)
    code, out = _on_a_terminal(["--db", sqlite_url, "prune", "--keep", "1"], "n")
    assert "delete 3 calls beyond the newest 1 from" in out and "[y/N]" in out
    assert code == 2 and "nothing deleted" in out and len(_ids(sqlite_url)) == 4
    code, out = _on_a_terminal(["--db", sqlite_url, "prune", "--keep", "1"], "y")
    assert code == 0 and "deleted 3 calls" in out and len(_ids(sqlite_url)) == 1


@pytest.mark.parametrize("argv", [["--older-than=-5m"], ["--older-than", "-1d"]])
def test_prune_refuses_a_negative_duration(sqlite_url: str, argv: list[str]) -> None:
    _record(sqlite_url, 2)
    err = _one_line_error(run("--db", sqlite_url, "prune", *argv, "--yes"), 2)
    assert "--older-than" in err
    assert len(_ids(sqlite_url)) == 2


# -- issue 15 item 13: out-of-range numbers are usage errors ------------------------------------------


@pytest.mark.parametrize("argv", [
    ["prune", "--keep", "99999999999999999999", "--yes"], ["tail", "-n", "99999999999999999999"],
    ["stats", "--since", "99999999999d"], ["tail", "--until", "9" * 400 + "d"],
    ["prune", "--older-than", "99999999999d", "--yes"], ["tail", "-f", "--interval", "0s"],
])
def test_out_of_range_numbers_are_exit_2(sqlite_url: str, argv: list[str]) -> None:
    _record(sqlite_url, 2)
    err = _one_line_error(run("--db", sqlite_url, *argv), 2)
    assert "out of range" in err and "internal error" not in err


def test_out_of_range_since_on_postgresql_is_exit_2(pg: tuple[str, Any]) -> None:
    url, _ = pg
    _record(url, 2)
    err = _one_line_error(run("--db", url, "stats", "--since", "99999999999d"), 2)
    assert "out of range" in err
    p = run("--db", url, "stats", "--json", "--since", "0001-01-02")
    assert p.returncode == 0 and json.loads(p.stdout)[0]["calls"] == 2, p.stderr


# -- item 9: short ids --------------------------------------------------------------------------------


def test_tail_shows_short_ids_that_tell_a_burst_apart_and_show_takes_them(sqlite_url: str) -> None:
    from historymw.store import Store

    _record(sqlite_url, 200)
    with Store(sqlite_url) as store:
        ids = [c.id for c in store.recent(1000)]
    assert len({i[:24] for i in ids}) <= 2  # one burst: the full ids share their first 24 digits
    p = run("--db", sqlite_url, "tail", "-n", "200")
    shown = [line.split()[2] for line in p.stdout.splitlines()[1:]]
    assert shown == [short_id(i) for i in ids]
    assert len(set(shown)) == 200 and all(len(s) == 8 for s in shown)
    for arg, want in ((shown[7], ids[7]), (shown[8].upper(), ids[8]), (ids[9].upper(), ids[9])):
        p = run("--db", sqlite_url, "show", arg, "--json")
        assert p.returncode == 0 and json.loads(p.stdout)["id"] == want, p.stderr
    prefix = shown[-1][:7]  # a prefix of a short id: consecutive calls share it
    sharing = {s for s in shown if s.startswith(prefix)}
    p = run("--db", sqlite_url, "show", prefix)
    if len(sharing) == 1:
        assert p.returncode == 0
    else:  # the candidates, up to 10 of them
        listed = set(p.stderr.split("calls: ", 1)[1].split(";")[0].removesuffix(" (and more)").split(", "))
        assert p.returncode == 2 and listed <= sharing and len(listed) == min(len(sharing), 10), p.stderr
        assert ("(and more)" in p.stderr) == (len(sharing) > 10)


def test_an_ambiguous_id_lists_the_candidates(sqlite_url: str) -> None:
    _record(sqlite_url, 3)
    ids = _ids(sqlite_url)
    err = _one_line_error(run("--db", sqlite_url, "show", ids[0][:20]), 2)
    assert "matches several calls" in err and all(short_id(i) in err for i in ids)
    from historymw.store import Store

    with Store(sqlite_url) as store, pytest.raises(hm.AmbiguousIdError) as info:
        store.get(ids[0][:20])
    assert sorted(info.value.candidates) == sorted(ids) and short_id(ids[0]) in str(info.value)


def test_short_ids_differ_within_a_process() -> None:
    from historymw.record import new_id

    one = [short_id(new_id(1.0)) for _ in range(100_000)]
    assert len(set(one)) == len(one)
    assert {len(s) for s in one} == {8}


# -- item 10: small things a user notices -------------------------------------------------------------


def test_stats_without_by_has_no_group_column_and_tail_n_0_prints_nothing(sqlite_url: str) -> None:
    _record(sqlite_url, 2)
    p = run("--db", sqlite_url, "stats")
    assert p.returncode == 0
    assert p.stdout.splitlines()[0].split() == ["CALLS", "ERRORS", "ERR%", "TOKENS", "COST", "MEAN", "P50", "P95"]
    assert p.stdout.splitlines()[1].split()[:2] == ["2", "0"]
    p = run("--db", sqlite_url, "tail", "-n", "0")
    assert p.returncode == 0 and p.stdout == "" and p.stderr == ""


def test_tail_cuts_the_output_at_a_word_boundary(sqlite_url: str) -> None:
    _record(sqlite_url, 1, text="the quick brown fox jumps over the lazy dogs and then keeps running far away")
    line = run("--db", sqlite_url, "tail").stdout.splitlines()[1]
    preview = line[line.index("the quick"):]
    assert preview == "the quick brown fox jumps over the lazy dogs…"  # not "... dogs an…"


def test_recent_and_inspect_history_refuse_bad_arguments_clearly() -> None:
    hm.configure(backends=["ring"])
    with pytest.raises(ValueError, match="expected 'ok', 'error' or None, not 'bogus'"):
        hm.recent(status="bogus")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n must be a whole number"):
        hm.inspect_history("x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be >= 0"):
        hm.inspect_history(-1)


# -- issue 15 item 12: recorded text never drives the terminal ----------------------------------------


def test_tail_and_show_print_escape_sequences_inert(sqlite_url: str) -> None:
    _record(sqlite_url, 1, text="before " + ESCAPES + " after", session="s\x1b]0;t\x07")
    call_id = _ids(sqlite_url)[0]
    for argv in (["tail"], ["show", call_id]):
        p = run("--db", sqlite_url, *argv)
        assert p.returncode == 0
        for ch in RAW_CONTROL:
            assert ch not in p.stdout, (argv, ch)
        assert "\\x1b]0;pwned\\x07" in p.stdout  # shown, as text
    for argv in (["show", call_id, "--json"], ["tail", "--json"]):
        p = run("--db", sqlite_url, *argv)
        for ch in RAW_CONTROL:
            assert ch not in p.stdout, (argv, ch)
        assert json.loads(p.stdout)["output_text"] == "before " + ESCAPES + " after"  # escaped, not changed


def test_show_on_a_terminal_prints_escape_sequences_inert(sqlite_url: str) -> None:
    _record(sqlite_url, 1, text=ESCAPES)
    code, out = _on_a_terminal(["--db", sqlite_url, "show", _ids(sqlite_url)[0]], "")
    assert code == 0 and "Response:" in out
    assert "\x1b]" not in out and "\x9b" not in out and "\x07" not in out


# -- issue 15 item 10: export -o ----------------------------------------------------------------------


def test_export_refuses_the_database_itself_however_it_is_named(sqlite_url: str, tmp_path: Path) -> None:
    _record(sqlite_url, 3)
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    before = db.read_bytes()
    (tmp_path / "link.db").symlink_to(db)
    for target, cwd in ((str(db), None), ("history.db", tmp_path), ("link.db", tmp_path),
                        (f"{tmp_path}/./sub/../history.db", None), (f"{db}-wal", None)):
        (tmp_path / "sub").mkdir(exist_ok=True)
        err = _one_line_error(run("--db", sqlite_url, "export", "--format", "jsonl", "-o", target, "--force",
                                  cwd=cwd), 2)
        assert "is the history database itself" in err
    assert db.read_bytes() == before and len(_ids(sqlite_url)) == 3


def test_export_never_overwrites_without_force_and_writes_owner_only(sqlite_url: str, tmp_path: Path) -> None:
    _record(sqlite_url, 3)
    out = tmp_path / "calls.jsonl"
    out.write_text("keep me")
    err = _one_line_error(run("--db", sqlite_url, "export", "--format", "jsonl", "-o", str(out)), 2)
    assert "exists" in err and "--force" in err and out.read_text() == "keep me"
    old = os.umask(0)  # the child inherits a umask that would make files world-writable
    try:
        p = run("--db", sqlite_url, "export", "--format", "jsonl", "-o", str(out), "--force")
        fresh = tmp_path / "fresh.csv"
        q = run("--db", sqlite_url, "export", "--format", "csv", "-o", str(fresh))
    finally:
        os.umask(old)
    assert p.returncode == 0 and q.returncode == 0, (p.stderr, q.stderr)
    assert len(out.read_text().splitlines()) == 3 and len(fresh.read_text().splitlines()) == 4
    for f in (out, fresh):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("history.db")) == [
        "calls.jsonl", "fresh.csv"]  # no temporary file left behind


def test_export_does_not_write_through_a_symlink(sqlite_url: str, tmp_path: Path) -> None:
    _record(sqlite_url, 2)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.jsonl"
    link.symlink_to(victim)
    err = _one_line_error(run("--db", sqlite_url, "export", "--format", "jsonl", "-o", str(link)), 2)
    assert "symlink" in err
    p = run("--db", sqlite_url, "export", "--format", "jsonl", "-o", str(link), "--force")
    assert p.returncode == 0, p.stderr
    assert victim.read_text() == "precious"  # the link was replaced, its target untouched
    assert not link.is_symlink() and len(link.read_text().splitlines()) == 2
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere" / "x.jsonl")
    _one_line_error(run("--db", sqlite_url, "export", "--format", "jsonl", "-o", str(dangling)), 2)
    assert not (tmp_path / "nowhere").exists()


# -- docs/CLI.md ----------------------------------------------------------------------------------------


def test_the_synopsis_in_docs_is_what_help_prints() -> None:
    from historymw.cli import build_parser

    doc = (Path(__file__).resolve().parent.parent / "docs" / "CLI.md").read_text()
    synopsis = doc.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[union-attr]
    expected = []
    for argv in [[], *([name] for name in commands)]:
        p = run(*argv, "--help", env={"COLUMNS": "200"})
        expected.append(" ".join(p.stdout.split("\n\n")[0].split()))
    missing = [line for line in expected if line not in synopsis]
    assert not missing, f"docs/CLI.md's synopsis lacks (or differs from) these --help lines: {missing}"
    assert len(synopsis) == len(expected)
