"""The configuration: `configure(...)` keywords, then HISTORYMW_* variables, then defaults.

Every value is parsed here, at the boundary, so that the hot path never meets a
bad setting. The parsers are plain functions: `import historymw` checks the
environment with them and builds no pydantic model (the `Settings` model, in
`config_model`, is built on first use).

Two ways to meet a bad value, as the OpenTelemetry SDK does it:
- `configure()` is strict: a bad keyword or a bad variable it reads raises
  `ConfigError` naming the variable or keyword, the value and what is allowed.
- The environment, read when the recorder is first used (`hm.recorded`,
  `hm.history`, `hm.configure`, an integration's `install()`...), is lenient:
  a library that records through historymw must not break the application
  that imports it. Each bad value is reported as a `Problem`, which `runtime`
  logs once and counts; the default is used instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .policy import Policy, parse_policy
from .sql import DEFAULT_SQL_URL

if TYPE_CHECKING:
    from .config_model import Settings as Settings  # re-exported: `config.Settings` is the public home

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
_URL_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+]*)://")
# user:password@ in a URL's authority (the password may hold anything but '@' and '/').
_URL_PASSWORD_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)([^@/\s]+)(@)")
# The dialects the SQL store supports, as `engine.parse_url` accepts them.
_SQL_SCHEMES = {"sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg", "postgres+psycopg"}
_SQL_URL_ALLOWED = ("expected a SQLAlchemy URL such as sqlite:///historymw.db "
                    "or postgresql+psycopg://user@host/db")


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


def mask_url(url: object) -> str:
    """The text with every URL's password replaced by `***` (as SQLAlchemy renders it), for messages
    and repr."""
    return _URL_PASSWORD_RE.sub(r"\1***\3", str(url))


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected true or false (also 1/0, yes/no, on/off)")


def _optional_bool(value: object) -> bool | None:
    return None if value is None else _bool(value)


def _int(value: object, minimum: int, extra: str = "") -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number >= {minimum}{extra}")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"expected a whole number >= {minimum}{extra}")
    return value


def _count(value: object) -> int:
    return _int(value, 0)


def _batch(value: object) -> int:
    return _int(value, 1)


def _field_chars(value: object) -> int:
    return _int(value, 16)


def _rate(value: object) -> float:
    try:
        rate = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    except ValueError:
        rate = None
    if rate is None or not 0.0 <= rate <= 1.0:
        raise ValueError("expected a number from 0.0 to 1.0")
    return rate


def _policy(value: object) -> Policy:
    return value if isinstance(value, Policy) else parse_policy(value)


def _backends(value: object) -> tuple[Any, ...]:
    items: list[Any]
    if isinstance(value, str):
        items = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
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
    names = [i for i in items if isinstance(i, str)]
    if len(names) != len(set(names)):
        raise ValueError("a backend name is listed twice")
    return tuple(items)


def _sql_url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(_SQL_URL_ALLOWED)
    m = _URL_RE.match(value)
    if m is None:
        raise ValueError(_SQL_URL_ALLOWED)
    if m.group(1).lower() not in _SQL_SCHEMES:
        raise ValueError(f"unsupported database URL scheme {m.group(1)!r}; expected sqlite:///path/to/history.db "
                         "or postgresql+psycopg://user@host:5432/dbname")
    return value


def _positive_duration_or_unset(value: object) -> float | None:
    if value is None or value == "":
        return None
    allowed = "expected a duration such as 12h or 30d (more than 0), or unset for no age limit"
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(allowed) from None
    if seconds <= 0:  # 0 would delete every call at the next export, not switch retention off
        raise ValueError(allowed)
    return seconds


def _positive_count_or_unset(value: object) -> int | None:
    if value is None or value == "":
        return None
    return _int(value, 1, ", or unset for no row limit")


def _redactor(value: object) -> object:
    if value is not None and not callable(value):
        raise ValueError("expected a callable taking the record as a dict and returning a dict")
    return value


def _duration(value: object) -> float:
    return parse_duration(value)


def _positive_duration(value: object) -> float:
    allowed = "expected a duration such as 30s, 10m or 1h (more than 0)"
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(allowed) from None
    if seconds <= 0:  # 0 would release every session as soon as it is written
        raise ValueError(allowed)
    return seconds


def _otel_compat(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or value.strip().lower() != "openinference":
        raise ValueError("expected openinference (or unset)")
    return "openinference"


# name -> (default, parser). The parser takes what a user may give (a keyword's value or a variable's
# text) and returns the setting's value, or raises ValueError saying what is allowed. The defaults are
# values the parsers return.
SPEC: dict[str, tuple[Any, Callable[[object], Any]]] = {
    "policy": (parse_policy("bounded"), _policy),
    "maxlen": (1000, _count),
    "max_bytes": (16 * 2**20, parse_size),
    "sample_rate": (1.0, _rate),
    "backends": (("ring",), _backends),
    "sql_url": (DEFAULT_SQL_URL, _sql_url),
    "capture_content": (True, _bool),
    "redact_content": (True, _bool),
    "max_field_chars": (20000, _field_chars),
    "redactor": (None, _redactor),
    "queue_size": (10000, _count),
    "queue_bytes": (16 * 2**20, parse_size),
    "batch_size": (512, _batch),
    "flush_interval": (1.0, _duration),
    "shutdown_timeout": (5.0, _duration),
    "sql_max_rows": (None, _positive_count_or_unset),
    "sql_max_age": (None, _positive_duration_or_unset),
    "otel_capture_content": (None, _optional_bool),
    "otel_compat": (None, _otel_compat),
    "session_maxlen": (100, _count),  # 0: no per-session windows (a session is only a field)
    "session_idle": (600.0, _positive_duration),
}
SETTING_NAMES: tuple[str, ...] = tuple(SPEC)
# Settings that only code can give (a callable has no environment spelling).
_CODE_ONLY = {"redactor"}


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def shown(name: str, value: object) -> str:
    """A value as messages show it: repr'd, a URL's password masked."""
    return repr(mask_url(value)) if name == "sql_url" and isinstance(value, str) else repr(value)


def _invalid(where: str, name: str, value: object, exc: ValueError) -> ConfigError:
    return ConfigError(f"{where}={shown(name, value)} is not valid: {exc}")


class Problem:
    """A bad environment value met by the lenient read: what was wrong and what is used instead."""

    # A plain class, not a dataclass: building a dataclass at import costs more than this whole module.
    __slots__ = ("allowed", "default", "setting", "value", "variable")

    def __init__(self, setting: str, variable: str, value: str, allowed: str, default: Any) -> None:
        self.setting, self.variable, self.value, self.allowed, self.default = setting, variable, value, allowed, default

    @property
    def message(self) -> str:
        return f"{self.variable}={shown(self.setting, self.value)} is not valid: {self.allowed}"


def parse_values(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
                 *, strict: bool = True) -> tuple[dict[str, Any], list[Problem]]:
    """Every setting's value: keyword overrides win over the environment, which wins over defaults.

    Strict (configure()): a bad keyword or variable raises ConfigError. Lenient (the environment read at
    import): a bad variable is returned as a Problem and its default is used -- except `sql_url`, whose
    bad text is kept so that the 'sql' backend reports itself unavailable instead of silently writing to
    a default file the user never named.
    """
    overrides = dict(overrides or {})
    environ = os.environ if environ is None else environ
    unknown = sorted(set(overrides) - set(SETTING_NAMES))
    if unknown:
        raise ConfigError(
            f"configure() got unknown setting(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(SETTING_NAMES)}"
        )
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, (default, parse) in SPEC.items():
        if name in overrides:
            try:
                values[name] = parse(overrides[name])
            except ValueError as exc:
                raise _invalid(f"configure({name}=...)", name, overrides[name], exc) from None
        elif name not in _CODE_ONLY and env_name(name) in environ:
            text = environ[env_name(name)]
            try:
                values[name] = parse(text)
            except ValueError as exc:
                if strict:
                    raise _invalid(env_name(name), name, text, exc) from None
                problems.append(Problem(name, env_name(name), text, str(exc), default))
                values[name] = text if name == "sql_url" else default
        else:
            values[name] = default
    return values, problems


def build_settings(values: Mapping[str, Any]) -> Settings:
    """The `Settings` model for values `parse_values` returned (already parsed: not checked again)."""
    from .config_model import Settings

    return Settings.model_construct(**values)


def load_settings(overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Strictly parsed settings (what `configure()` uses): a bad value raises ConfigError."""
    values, _ = parse_values(overrides, environ, strict=True)
    return build_settings(values)


def __getattr__(name: str) -> Any:
    # `config.Settings` stays importable; the pydantic model is defined only when first asked for.
    if name == "Settings":
        from .config_model import Settings

        return Settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
