"""Configuration: code over environment over defaults; a bad value is one clear error."""

from __future__ import annotations

import subprocess
import sys

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


def test_a_bad_environment_fails_at_import_with_a_clear_message() -> None:
    proc = subprocess.run([sys.executable, "-c", "import historymw"], capture_output=True, text=True,
                          env={"HISTORYMW_SAMPLE_RATE": "2", "PATH": ""}, timeout=60)
    assert proc.returncode != 0
    assert "ConfigError: HISTORYMW_SAMPLE_RATE='2' is not valid: expected a number from 0.0 to 1.0" in proc.stderr
