"""One settings model, filled from `configure(...)` keywords, then HISTORYMW_* variables,
then defaults.

Every value is parsed here, at the boundary, so that the hot path never meets a
bad setting. A bad value raises `ConfigError` naming where it came from (the
variable or the keyword), the value, and what is allowed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .errors import ConfigError
from .policy import Policy, parse_policy

ENV_PREFIX = "HISTORYMW_"

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0,
                   "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
BUILTIN_BACKENDS = ("ring", "sql", "otel", "log")


def parse_size(value: object) -> int:
    """`16MiB`, `512k`, `1048576` -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 16MiB, 512KiB or a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("expected a size >= 0")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ValueError("expected a size such as 16MiB, 512KiB, 2MB or a number of bytes")


def parse_duration(value: object) -> float:
    """`30d`, `12h`, `15m`, `10s`, `500ms`, `2.5` (seconds) -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0 or value != value:
            raise ValueError("expected a duration >= 0")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m and m.group(2).lower() in _DURATION_UNITS:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
    raise ValueError("expected a duration such as 500ms, 10s, 15m, 12h, 30d or a number of seconds")


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected true or false (also 1/0, yes/no, on/off)")


def _parse_int(value: object, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number >= {minimum}")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"expected a whole number >= {minimum}")
    return value


class Settings(BaseModel):
    """The whole configuration. Field names are the lower-case variable names."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    policy: Policy = parse_policy("bounded")
    maxlen: int = 1000
    max_bytes: int = 16 * 2**20
    sample_rate: float = 1.0
    backends: tuple[Any, ...] = ("ring",)
    sql_url: str = "sqlite:///historymw.db"
    capture_content: bool = True
    # Scan prompts and outputs for secret-shaped text when a record is sealed
    # (params, headers, metadata and error messages are always scanned).
    redact_content: bool = True
    max_field_chars: int = 20000
    redactor: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    # Export pipeline (I/O backends): bounded by records and by bytes.
    queue_size: int = 10000
    queue_bytes: int = 16 * 2**20
    batch_size: int = 512
    flush_interval: float = 1.0
    shutdown_timeout: float = 5.0
    # SQL retention, applied by the export worker.
    sql_max_rows: int | None = None
    sql_max_age: float | None = None
    # OpenTelemetry content opt-in; None follows OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT.
    otel_capture_content: bool | None = None

    @field_validator("policy", mode="before")
    @classmethod
    def _v_policy(cls, v: object) -> Policy:
        return v if isinstance(v, Policy) else parse_policy(v)

    @field_validator("maxlen", "queue_size", mode="before")
    @classmethod
    def _v_count(cls, v: object) -> int:
        return _parse_int(v, 0)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _v_batch(cls, v: object) -> int:
        return _parse_int(v, 1)

    @field_validator("max_field_chars", mode="before")
    @classmethod
    def _v_field_chars(cls, v: object) -> int:
        return _parse_int(v, 16)

    @field_validator("max_bytes", "queue_bytes", mode="before")
    @classmethod
    def _v_size(cls, v: object) -> int:
        return parse_size(v)

    @field_validator("sample_rate", mode="before")
    @classmethod
    def _v_rate(cls, v: object) -> float:
        try:
            rate = float(v) if isinstance(v, (str, int, float)) and not isinstance(v, bool) else None
        except ValueError:
            rate = None
        if rate is None or not 0.0 <= rate <= 1.0:
            raise ValueError("expected a number from 0.0 to 1.0")
        return rate

    @field_validator("backends", mode="before")
    @classmethod
    def _v_backends(cls, v: object) -> tuple[Any, ...]:
        items: list[Any]
        if isinstance(v, str):
            items = [p.strip() for p in v.split(",") if p.strip()]
        elif isinstance(v, (list, tuple)):
            items = list(v)
        else:
            raise ValueError("expected a comma-separated list of ring, sql, otel, log")
        from .backends import is_known, known_backend_names

        for item in items:
            if isinstance(item, str):
                if not is_known(item):  # built-in names first: entry points are scanned only for others
                    raise ValueError(f"unknown backend {item!r}; expected names from "
                                     f"{', '.join(known_backend_names())}")
            elif not all(callable(getattr(item, m, None)) for m in ("export", "flush", "shutdown")):
                raise ValueError(
                    f"backend {item!r} has no export/flush/shutdown methods (the historymw.Backend protocol)"
                )
        if len([i for i in items if isinstance(i, str)]) != len({i for i in items if isinstance(i, str)}):
            raise ValueError("a backend name is listed twice")
        return tuple(items)

    @field_validator("sql_url", mode="before")
    @classmethod
    def _v_url(cls, v: object) -> str:
        if not isinstance(v, str) or not re.match(r"^[a-zA-Z][a-zA-Z0-9+]*://", v):
            raise ValueError("expected a SQLAlchemy URL such as sqlite:///historymw.db "
                             "or postgresql+psycopg://user@host/db")
        return v

    @field_validator("capture_content", "redact_content", mode="before")
    @classmethod
    def _v_bool(cls, v: object) -> bool:
        return _parse_bool(v)

    @field_validator("otel_capture_content", mode="before")
    @classmethod
    def _v_opt_bool(cls, v: object) -> bool | None:
        return None if v is None else _parse_bool(v)

    @field_validator("flush_interval", "shutdown_timeout", mode="before")
    @classmethod
    def _v_duration(cls, v: object) -> float:
        return parse_duration(v)

    @field_validator("sql_max_age", mode="before")
    @classmethod
    def _v_opt_duration(cls, v: object) -> float | None:
        return None if v is None or v == "" else parse_duration(v)

    @field_validator("sql_max_rows", mode="before")
    @classmethod
    def _v_opt_count(cls, v: object) -> int | None:
        return None if v is None or v == "" else _parse_int(v, 1)

    @field_validator("redactor", mode="before")
    @classmethod
    def _v_redactor(cls, v: object) -> object:
        if v is not None and not callable(v):
            raise ValueError("expected a callable taking the record as a dict and returning a dict")
        return v


SETTING_NAMES: tuple[str, ...] = tuple(Settings.model_fields)
# Settings that only code can give (a callable has no environment spelling).
_CODE_ONLY = {"redactor"}


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def load_settings(overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings: keyword overrides win over the environment, which wins over defaults."""
    overrides = dict(overrides or {})
    environ = os.environ if environ is None else environ
    unknown = sorted(set(overrides) - set(SETTING_NAMES))
    if unknown:
        raise ConfigError(
            f"configure() got unknown setting(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(SETTING_NAMES)}"
        )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in SETTING_NAMES:
        if name in overrides:
            values[name] = overrides[name]
            sources[name] = f"configure({name}=...)"
        elif name not in _CODE_ONLY and env_name(name) in environ:
            values[name] = environ[env_name(name)]
            sources[name] = env_name(name)
    try:
        return Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        ctx_error = (err.get("ctx") or {}).get("error")
        allowed = str(ctx_error) if ctx_error is not None else err["msg"]
        where = sources.get(name, name)
        raise ConfigError(f"{where}={values.get(name)!r} is not valid: {allowed}") from None
