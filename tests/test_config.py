"""Configuration: code over environment over defaults; a bad value is one clear error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import historymw as hm


def test_defaults() -> None:
    s = hm.settings()
    assert (s.policy.name, s.maxlen, s.max_bytes, s.sample_rate) == ("bounded", 1000, 16 * 2**20, 1.0)
    assert (s.backends, s.sql_url, s.capture_content, s.max_field_chars) == (
        ("ring",), "sqlite:///historymw.db", True, 20000)


def test_environment_is_read_and_code_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTORYMW_POLICY", "sample+errors")
    monkeypatch.setenv("HISTORYMW_MAXLEN", "50")
    monkeypatch.setenv("HISTORYMW_MAX_BYTES", "2MiB")
    monkeypatch.setenv("HISTORYMW_SAMPLE_RATE", "0.25")
    monkeypatch.setenv("HISTORYMW_CAPTURE_CONTENT", "false")
    monkeypatch.setenv("HISTORYMW_MAX_FIELD_CHARS", "500")
    monkeypatch.setenv("HISTORYMW_BACKENDS", "ring")
    s = hm.configure(maxlen=7)
    assert s.policy.name == "sample+errors" and s.policy.sample and s.policy.keep_errors
    assert (s.maxlen, s.max_bytes, s.sample_rate, s.capture_content, s.max_field_chars) == (
        7, 2 * 2**20, 0.25, False, 500)
    assert hm.ring().maxlen == 7 and hm.ring().max_bytes == 2 * 2**20


@pytest.mark.parametrize(("text", "expected"), [
    ("16MiB", 16 * 2**20), ("512KiB", 512 * 1024), ("2MB", 2_000_000), ("1048576", 1048576),
    ("1.5GiB", int(1.5 * 2**30)), (" 64 kib ", 64 * 1024),
])
def test_sizes_accept_units(monkeypatch: pytest.MonkeyPatch, text: str, expected: int) -> None:
    monkeypatch.setenv("HISTORYMW_MAX_BYTES", text)
    assert hm.configure().max_bytes == expected


@pytest.mark.parametrize(("var", "value", "allowed"), [
    ("HISTORYMW_POLICY", "always", "expected one of off, bounded, sample, errors"),
    ("HISTORYMW_POLICY", "off+errors", "'+' combination of sample and errors"),
    ("HISTORYMW_MAXLEN", "many", "whole number >= 0"),
    ("HISTORYMW_MAXLEN", "-5", "whole number >= 0"),
    ("HISTORYMW_MAX_BYTES", "16 parsecs", "size such as 16MiB"),
    ("HISTORYMW_SAMPLE_RATE", "1.5", "number from 0.0 to 1.0"),
    ("HISTORYMW_SAMPLE_RATE", "half", "number from 0.0 to 1.0"),
    ("HISTORYMW_BACKENDS", "ring,kafka", "unknown backend 'kafka'"),
    ("HISTORYMW_SQL_URL", "historymw.db", "SQLAlchemy URL"),
    ("HISTORYMW_CAPTURE_CONTENT", "maybe", "true or false"),
    ("HISTORYMW_MAX_FIELD_CHARS", "3", "whole number >= 16"),
    ("HISTORYMW_SQL_MAX_AGE", "a week", "duration such as"),
])
def test_each_bad_environment_value_names_variable_value_and_what_is_allowed(
        monkeypatch: pytest.MonkeyPatch, var: str, value: str, allowed: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(hm.ConfigError) as info:
        hm.configure()
    message = str(info.value)
    assert var in message and repr(value) in message and allowed in message


def test_bad_keyword_names_the_keyword() -> None:
    with pytest.raises(hm.ConfigError, match=r"configure\(maxlen=\.\.\.\)='x' is not valid"):
        hm.configure(maxlen="x")
    with pytest.raises(hm.ConfigError, match=r"unknown setting.*max_len"):
        hm.configure(max_len=5)
    with pytest.raises(hm.ConfigError, match="export/flush/shutdown"):
        hm.configure(backends=[object()])


def test_a_failed_configure_keeps_the_previous_configuration() -> None:
    hm.configure(maxlen=3)
    with pytest.raises(hm.ConfigError):
        hm.configure(policy="never")
    assert hm.settings().maxlen == 3


def test_backend_objects_are_accepted() -> None:
    class Memory:
        def __init__(self) -> None:
            self.records: list[hm.LMCall] = []

        def export(self, records: list[hm.LMCall]) -> None:
            self.records.extend(records)

        def flush(self, timeout: float | None = None) -> bool:
            return True

        def shutdown(self) -> None:
            pass

    mine = Memory()
    hm.configure(backends=["ring", mine])

    @hm.recorded
    def ask(model: str, messages: list[dict[str, str]]) -> str:
        return "ok"

    ask("m", [{"role": "user", "content": "q"}])
    assert hm.flush(5)
    assert [r.model for r in mine.records] == ["m"] and isinstance(mine.records[0], hm.LMCall)
    assert isinstance(mine, hm.Backend)


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter whose only HISTORYMW_* variables are `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HISTORYMW_")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**base, **env}, timeout=120)


def test_a_bad_environment_value_never_breaks_the_import_it_is_logged_counted_and_defaulted() -> None:
    # An application that imports historymw through a library keeps working (as the OpenTelemetry SDK does).
    proc = _run("""
        import historymw as hm

        @hm.recorded
        def ask(model, messages):
            return "ok"

        assert ask("m", [{"role": "user", "content": "q"}]) == "ok"
        s = hm.settings()
        print("SETTINGS", s.sample_rate, s.policy.name, s.max_bytes)
        print("ERRORS", hm.stats().errors, "RECORDED", hm.stats().recorded)
    """, HISTORYMW_SAMPLE_RATE="2", HISTORYMW_POLICY="bogus", HISTORYMW_MAX_BYTES="lots")
    assert proc.returncode == 0, proc.stderr
    assert "SETTINGS 1.0 bounded 16777216" in proc.stdout  # the defaults, in force
    assert "ERRORS {'config': 3} RECORDED 1" in proc.stdout
    logged = proc.stdout + proc.stderr
    for var, value, allowed, default in [
        ("HISTORYMW_SAMPLE_RATE", "value=2 ", "expected a number from 0.0 to 1.0", "using the default 1.0"),
        ("HISTORYMW_POLICY", "value=bogus ", "expected one of off, bounded, sample, errors",
         "using the default bounded"),
        ("HISTORYMW_MAX_BYTES", "value=lots ", "expected a size such as 16MiB", "using the default 16777216"),
    ]:
        lines = [ln for ln in logged.splitlines() if var in ln]
        assert len(lines) == 1, logged  # once, however often the configuration is read
        assert value in lines[0] and allowed in lines[0] and default in lines[0]


@pytest.mark.parametrize(("var", "value", "allowed"), [
    ("HISTORYMW_SAMPLE_RATE", "2", "expected a number from 0.0 to 1.0"),
    ("HISTORYMW_BACKENDS", "ring,kafka", "unknown backend 'kafka'"),
])
def test_configure_stays_strict_about_the_environment_it_reads(var: str, value: str, allowed: str) -> None:
    proc = _run("""
        import historymw as hm
        try:
            hm.configure(maxlen=10)
        except hm.ConfigError as exc:
            print("RAISED", exc)
    """, **{var: value})
    assert proc.returncode == 0, proc.stderr
    raised = [ln for ln in proc.stdout.splitlines() if ln.startswith("RAISED")]
    assert raised and f"{var}={value!r} is not valid: {allowed}" in raised[0]


def test_import_builds_no_settings_model_until_first_use() -> None:
    proc = _run("""
        import sys
        import historymw as hm
        pydantic_main = sys.modules.get("pydantic.main")
        models = [c.__module__ + "." + c.__name__ for c in pydantic_main.BaseModel.__subclasses__()] \
            if pydantic_main else []
        print("AT IMPORT", [m for m in models if m.startswith("historymw.config")])
        s = hm.settings()
        print("LATER", type(s).__name__, isinstance(s, hm.Settings), s.maxlen)
    """, HISTORYMW_MAXLEN="7")
    assert proc.returncode == 0, proc.stderr
    assert "AT IMPORT []" in proc.stdout
    assert "LATER Settings True 7" in proc.stdout


def test_a_settings_model_built_by_hand_is_checked_like_configure() -> None:
    assert hm.Settings(maxlen="5", max_bytes="1KiB").max_bytes == 1024
    with pytest.raises(ValueError, match=r"number from 0\.0 to 1\.0"):
        hm.Settings(sample_rate=3)


def test_sql_retention_zero_is_refused_alike_for_rows_and_age(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0 would delete every stored call at the next export: neither setting takes it; unset means no limit.
    for kw, text in [("sql_max_rows", "no row limit"), ("sql_max_age", "no age limit")]:
        for zero in (0, "0", "0s"):
            if kw == "sql_max_rows" and zero == "0s":
                continue
            with pytest.raises(hm.ConfigError, match=rf"configure\({kw}=\.\.\.\)={zero!r} is not valid.*{text}"):
                hm.configure(**{kw: zero})
        assert getattr(hm.configure(**{kw: None}), kw) is None
        monkeypatch.setenv(f"HISTORYMW_{kw.upper()}", "0")
        with pytest.raises(hm.ConfigError, match=rf"HISTORYMW_{kw.upper()}='0' is not valid.*{text}"):
            hm.configure()
        monkeypatch.setenv(f"HISTORYMW_{kw.upper()}", "")
        assert getattr(hm.configure(), kw) is None
        monkeypatch.delenv(f"HISTORYMW_{kw.upper()}")
    s = hm.configure(sql_max_rows="500", sql_max_age="30d")
    assert (s.sql_max_rows, s.sql_max_age) == (500, 30 * 86400.0)


SECRET_URL = "postgresql+psycopg://alice:s3cr3t-pw@db.example:5432/history"


def test_the_database_password_never_shows_in_repr_str_or_errors() -> None:
    s = hm.configure(sql_url=SECRET_URL)
    for text in (repr(s), str(s), repr(hm.settings()), f"{s}"):
        assert "s3cr3t-pw" not in text
        assert "postgresql+psycopg://alice:***@db.example:5432/history" in text
    assert s.sql_url == SECRET_URL  # the value itself is intact: the backend needs it
    with pytest.raises(hm.ConfigError) as info:
        hm.configure(sql_url="mysql://alice:s3cr3t-pw@db.example/history")
    assert "s3cr3t-pw" not in str(info.value) and "mysql://alice:***@db.example/history" in str(info.value)
    with pytest.raises(hm.ConfigError) as info:  # a URL SQLAlchemy cannot parse is quoted in its error
        hm.configure(backends=["ring", "sql"], sql_url="postgresql+psycopg://alice:s3cr3t-pw@db:notaport/h")
    assert "s3cr3t-pw" not in str(info.value) and "alice:***@db:notaport" in str(info.value)


def test_the_database_password_never_shows_in_the_import_log_nor_in_flush() -> None:
    proc = _run("""
        import historymw as hm
        print("SETTINGS", repr(hm.settings()))
        print("FLUSH", hm.flush(1))
    """, HISTORYMW_BACKENDS="ring,sql", HISTORYMW_SQL_URL="mysql://alice:s3cr3t-pw@db.example/history")
    assert proc.returncode == 0, proc.stderr
    assert "s3cr3t-pw" not in proc.stdout + proc.stderr
    assert "mysql://alice:***@db.example/history" in proc.stdout
    # A URL that passes the import's check but that SQLAlchemy cannot parse: found when the runtime starts.
    proc = _run("""
        import historymw as hm
        print("FLUSH", hm.flush(1))
    """, HISTORYMW_BACKENDS="ring,sql", HISTORYMW_SQL_URL="postgresql+psycopg://alice:s3cr3t-pw@db:notaport/h")
    assert proc.returncode == 0, proc.stderr
    assert "s3cr3t-pw" not in proc.stdout + proc.stderr
    assert "alice:***@db:notaport" in proc.stdout and "backend_start:sql" in proc.stdout
