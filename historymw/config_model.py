"""The `Settings` model: the configuration in force, as users see it (`hm.settings()`).

Defined in its own module so that `import historymw` does not pay for a pydantic
model definition: `config` parses every value with plain code, and this module is
imported on first use. Every field is checked by the same parser as the
environment and `configure()` use, so `Settings(...)` built by hand is checked alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from .config import SPEC, mask_url
from .policy import Policy


class Settings(BaseModel):
    """The whole configuration. Field names are the lower-case variable names."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    policy: Policy = SPEC["policy"][0]
    maxlen: int = SPEC["maxlen"][0]
    max_bytes: int = SPEC["max_bytes"][0]
    sample_rate: float = SPEC["sample_rate"][0]
    backends: tuple[Any, ...] = SPEC["backends"][0]
    sql_url: str = SPEC["sql_url"][0]
    capture_content: bool = SPEC["capture_content"][0]
    # Scan prompts and outputs for secret-shaped text when a record is sealed
    # (params, headers, metadata and error messages are always scanned).
    redact_content: bool = SPEC["redact_content"][0]
    max_field_chars: int = SPEC["max_field_chars"][0]
    redactor: Callable[[dict[str, Any]], dict[str, Any] | None] | None = SPEC["redactor"][0]
    # Export pipeline (I/O backends): bounded by records and by bytes.
    queue_size: int = SPEC["queue_size"][0]
    queue_bytes: int = SPEC["queue_bytes"][0]
    batch_size: int = SPEC["batch_size"][0]
    flush_interval: float = SPEC["flush_interval"][0]
    shutdown_timeout: float = SPEC["shutdown_timeout"][0]
    # SQL retention, applied by the export worker; None (unset) keeps everything.
    sql_max_rows: int | None = SPEC["sql_max_rows"][0]
    sql_max_age: float | None = SPEC["sql_max_age"][0]
    # OpenTelemetry content opt-in; None follows OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT.
    otel_capture_content: bool | None = SPEC["otel_capture_content"][0]
    # Extra attribute sets on spans beside the GenAI conventions: "openinference" (Phoenix, Arize).
    otel_compat: str | None = SPEC["otel_compat"][0]
    # In-memory sessions: records kept per session, and the idle time after which they are released.
    session_maxlen: int = SPEC["session_maxlen"][0]
    session_idle: float = SPEC["session_idle"][0]

    @field_validator("*", mode="before")
    @classmethod
    def _parse(cls, value: object, info: Any) -> Any:
        return SPEC[info.field_name][1](value)

    def __repr_args__(self) -> Any:
        # repr(), str() and every log line that shows the settings: never the database password.
        for name, value in super().__repr_args__():
            yield (name, mask_url(value) if name == "sql_url" else value)
