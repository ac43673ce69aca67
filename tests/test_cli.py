"""The `historymw` command line, run as a user types it, on a real SQLite file."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import historymw as hm

EXE = str(Path(sys.executable).with_name("historymw"))
ROOT = Path(__file__).resolve().parent.parent
MSGS = [{"role": "user", "content": "What is six times seven?"}]


def run(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HISTORYMW_")}
    full_env.update(env or {})
    return subprocess.run([EXE, *argv], capture_output=True, text=True, timeout=60, env=full_env, cwd=cwd)


@pytest.fixture
def db(sqlite_url: str) -> str:
    """A store with 6 calls: 4 to model a (one failing, with cost), 2 to model b in session s1."""
    hm.configure(backends=["sql"], sql_url=sqlite_url)
    base = time.time() - 3600
    for i in range(6):
        with hm.history(session="s1" if i >= 4 else None):
            with hm.call(provider="p", model="a" if i < 4 else "b", messages=MSGS, started_at=base + i) as c:
                c.output(text=f"answer {i}", usage={"prompt_tokens": 10, "completion_tokens": 2}, cost=0.002)
                c.end(error=ValueError("bad input") if i == 3 else None, ended_at=base + i + 0.25 * (i + 1))
    assert hm.flush(timeout=10)
    return sqlite_url


def _ids(url: str) -> list[str]:
    from historymw.store import Store

    with Store(url) as s:
        return [c.id for c in s.recent(100)]


def test_tail_prints_aligned_columns_newest_last(db: str) -> None:
    p = run("--db", db, "tail", "-n", "3")
    assert p.returncode == 0 and p.stderr == ""
    lines = p.stdout.splitlines()
    assert lines[0].split()[:3] == ["TIME", "(UTC)", "ID"] and len(lines) == 4
    assert [ln.split()[-1] for ln in lines[1:]] == ["input", "4", "5"]  # "ValueError: bad input", answers 4, 5
    assert len({ln.index(ln.split()[2]) for ln in lines[1:]}) == 1  # the id column is aligned
    assert "1.50s" in lines[-1] and "$0.002" in lines[-1] and " s1 " in lines[-1]


def test_tail_json_and_filters_from_the_environment(db: str) -> None:
    p = run("tail", "--json", "--model", "a", "--status", "error", env={"HISTORYMW_SQL_URL": db})
    assert p.returncode == 0
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert [(r["model"], r["status"], r["error_type"]) for r in records] == [("a", "error", "ValueError")]


def test_tail_follow_prints_new_calls_until_interrupted(db: str) -> None:
    proc = subprocess.Popen([EXE, "--db", db, "tail", "-n", "1", "--follow", "--interval", "100ms"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("TIME")
        assert "answer 5" in proc.stdout.readline()
        with hm.history(session="late"):
            with hm.call(provider="p", model="c", messages=MSGS) as c:
                c.output(text="a new call")
        assert hm.flush(timeout=10)
        assert "a new call" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err


def test_show_by_id_and_by_prefix(db: str) -> None:
    call_id = _ids(db)[-1]
    p = run("--db", db, "show", call_id)
    assert p.returncode == 0
    assert "User message:" in p.stdout and "What is six times seven?" in p.stdout and "answer 5" in p.stdout
    p = run("--db", db, "show", call_id[:24], "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["id"] == call_id


def test_show_unknown_id_is_exit_1(db: str) -> None:
    p = run("--db", db, "show", "0123456789abcdef")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip().count("\n") == 0 and "no call with id '0123456789abcdef'" in p.stderr


def test_stats_table_and_json(db: str) -> None:
    p = run("--db", db, "stats", "--by", "model")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "CALLS", "ERRORS", "ERR%", "TOKENS", "COST", "MEAN", "P50", "P95"]
    assert lines[1].split() == ["a", "4", "1", "25.0%", "48", "$0.008", "625ms", "500ms", "1.00s"]
    assert lines[2].split()[:3] == ["b", "2", "0"]
    assert "6 calls from" in p.stdout
    p = run("--db", db, "stats", "--json", "--since", "2h")
    overall = json.loads(p.stdout)
    assert p.returncode == 0 and len(overall) == 1 and overall[0]["calls"] == 6 and overall[0]["errors"] == 1
    p = run("--db", db, "stats", "--by", "session", "--json")
    assert {g["group"]: g["calls"] for g in json.loads(p.stdout)} == {None: 4, "s1": 2}


def test_export_jsonl_and_csv(db: str, tmp_path: Path) -> None:
    p = run("--db", db, "export", "--format", "jsonl")
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 0 and [r["output_text"] for r in lines] == [f"answer {i}" for i in range(6)]
    out = tmp_path / "calls.csv"
    p = run("--db", db, "export", "--format", "csv", "--since", "2000-01-01", "--status", "ok", "-o", str(out))
    assert p.returncode == 0 and "exported 5 calls" in p.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 5 and json.loads(rows[0]["messages"]) == MSGS and rows[0]["cost"] == "0.002"
    p = run("--db", db, "export", "--format", "jsonl", "--since", "30m")
    assert p.returncode == 0 and p.stdout == ""


def test_prune_by_age_then_by_count(db: str) -> None:
    p = run("--db", db, "prune", "--older-than", "2h", "--yes")  # the calls are an hour old
    assert p.returncode == 0 and p.stdout.strip() == "deleted 0 calls older than 2h"
    p = run("--db", db, "prune", "--keep", "2", "--yes")
    assert p.returncode == 0 and p.stdout.strip() == "deleted 4 calls beyond the newest 2"
    assert len(_ids(db)) == 2
    p = run("--db", db, "prune", "--older-than", "1s", "--yes")
    assert p.returncode == 0 and p.stdout.strip() == "deleted 2 calls older than 1s"


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["--db", "mysql://u@h/db", "stats"], 2, "unsupported database URL scheme 'mysql'"),
    (["--db", "sqlite+nosuch:///x.db", "stats"], 2, "unsupported SQLite driver"),
    (["prune", "--older-than", "3 fortnights"], 2, "bad duration '3 fortnights'"),
    (["prune"], 2, "one of the arguments --older-than --keep is required"),
    (["prune", "--older-than", "1d", "--keep", "3"], 2, "not allowed with argument"),
    (["tail", "-n", "many"], 2, "expected a whole number"),
    (["stats", "--since", "last tuesday"], 2, "bad time 'last tuesday'"),
    (["stats", "--by", "colour"], 2, "invalid choice: 'colour'"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    (["export"], 2, "the following arguments are required: --format"),
])
def test_bad_input_is_one_line_and_exit_2(db: str, argv: list[str], code: int, message: str) -> None:
    p = run(*argv, env={"HISTORYMW_SQL_URL": db})
    assert p.returncode == code, p.stderr
    assert message in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_a_missing_database_is_exit_3_and_is_not_created(tmp_path: Path) -> None:
    p = run("tail", cwd=tmp_path)  # the default sqlite:///historymw.db, relative to the current directory
    assert p.returncode == 3 and p.stderr.startswith("historymw: no history database at historymw.db")
    assert p.stderr.count("\n") == 1 and not (tmp_path / "historymw.db").exists()


def test_an_unreachable_server_is_exit_3() -> None:
    p = run("--db", "postgresql+psycopg://postgres:secret@127.0.0.1:9/test", "stats")
    assert p.returncode == 3 and p.stderr.count("\n") == 1
    assert "database error at postgresql+psycopg://postgres:***@127.0.0.1:9/test" in p.stderr
    assert "secret" not in p.stderr


def test_help_documents_the_exit_codes() -> None:
    p = run("--help")
    assert p.returncode == 0
    for line in ("0  success", "1  not found", "2  usage error", "3  database error", "HISTORYMW_SQL_URL"):
        assert line in p.stdout


def test_quickstart_records_into_sqlite_and_shows_stats_and_tail(tmp_path: Path) -> None:
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("HISTORYMW_")}
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "$ historymw --db sqlite:///historymw.db stats --by model" in p.stdout
    assert "fake-large      4       2  50.0%" in p.stdout and "TimeoutError: the fake model timed out" in p.stdout
    assert (tmp_path / "historymw.db").stat().st_mode & 0o777 == 0o600
    p = run("stats", "--json", cwd=tmp_path)  # the file it wrote is what the CLI reads by default
    assert p.returncode == 0 and json.loads(p.stdout)[0]["calls"] == 8
    assert b"sk-not-a-real-key" not in (tmp_path / "historymw.db").read_bytes()


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["-h"], ["sessions"], ["sessions", "--help"], ["--db", "x.db", "sessions", "u-1", "--json"],
    ["--db=x.db", "tail", "-n", "3"], ["--d", "sessions", "tail", "-f"], ["--db", "tail"],
    ["--", "stats", "--by", "model"], ["show"], ["show", "abcd", "--json"], ["prune", "--keep", "5", "-y"], ["prune"],
    ["export", "--format", "csv", "-o", "f.csv", "--since", "2026-05-01"], ["ui", "--port", "0"], ["bogus"],
    ["-5", "tail"], ["-", "tail"], ["tail", "--bogus"], ["stats", "--by", "nope"], ["sessions", "-n", "x"], ["--db"],
    ["tail", "sessions"]])
def test_the_command_line_parses_as_with_every_commands_arguments_declared(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # main() declares the arguments of the command it finds in argv alone (each costs the command
    # time); what it parses, and what it prints for help or a mistake, is what the whole parser gives.
    from historymw import cli

    def parse(parser: Any) -> tuple[Any, ...]:
        try:
            ns = vars(parser.parse_args(argv))
        except SystemExit as exc:  # --help
            return "exit", exc.code, capsys.readouterr()
        except cli._UsageError as exc:
            return "usage", str(exc)
        ns.pop("fn", None)  # `ui`'s is a lambda made per parser
        return "parsed", ns

    assert parse(cli.build_parser(cli._command_in(argv))) == parse(cli.build_parser())
