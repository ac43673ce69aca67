"""The log backend: one structlog event per recorded call.

Teams that ship logs to Loki or Elasticsearch get their LLM history there: the
event is named `llm.call` and its keys are flat (no nested objects whose shape
changes from call to call, which trips Elasticsearch's mappings): model,
provider, status, duration (seconds), tokens, cost, session, trace_id, and the
prompt and output as text only when content capture is on.

Events go through `structlog.get_logger("historymw.calls")` (or the logger
given), so the application's structlog configuration decides the rendering and
the destination, and `structlog.testing.capture_logs()` sees them. They are
emitted on historymw's export worker, after the call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import counters
from ..plain import truncated

if TYPE_CHECKING:
    from ..config import Settings
    from ..record import LMCall

EVENT = "llm.call"
LOGGER_NAME = "historymw.calls"


def event_fields(r: LMCall, content: bool, max_chars: int = 20000) -> dict[str, Any]:
    """The flat key/value pairs of one record's event."""
    fields: dict[str, Any] = {
        "id": r.id,
        "model": r.model,
        "provider": r.provider,
        "operation": r.operation,
        "status": r.status,
        "duration": round(r.duration_s, 6),
        "tokens": r.total_tokens,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "cost": r.cost,
        "session": r.session,
        "trace_id": r.trace_id,
        "span_id": r.span_id,
        "source": r.source,
        "started_at": r.started_at.isoformat(),
    }
    if r.finish_reason is not None:
        fields["finish_reason"] = r.finish_reason
    if r.response_model is not None:
        fields["response_model"] = r.response_model
    if r.stream:
        fields["stream"] = True
        fields["time_to_first_token"] = r.time_to_first_token_s
    if r.cache_hit is not None:
        fields["cache_hit"] = r.cache_hit
    if r.status == "error":
        fields["error_type"] = r.error_type
        fields["error_message"] = r.error_message
    for k, v in r.tags.items():
        fields[f"tag.{k}"] = v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v, default=str)
    if content:
        if r.messages:
            text = json.dumps(r.messages, ensure_ascii=False, separators=(",", ":"), default=str)
            fields["messages"] = truncated(text, max_chars) if len(text) > max_chars else text
        if r.output_text is not None:
            fields["output"] = r.output_text
    return fields


class LogBackend:
    """Records -> structlog events named `llm.call`.

    `logger` defaults to `structlog.get_logger("historymw.calls")`. `content`
    (default True) puts the prompt (`messages`, compact JSON) and the output
    (`output`) in the event; records hold content only when
    HISTORYMW_CAPTURE_CONTENT is on, and are redacted before they get here.
    Failed calls are logged at warning level, the rest at info.
    """

    def __init__(self, logger: Any = None, *, content: bool = True, max_field_chars: int = 20000) -> None:
        if logger is None:
            import structlog

            logger = structlog.get_logger(LOGGER_NAME)
        self.logger = logger
        self.content = content
        self.max_field_chars = max_field_chars

    def export(self, records: Sequence[LMCall]) -> None:
        log = self.logger
        for r in records:
            # Per record, and never raising: the pipeline retries a batch whose export
            # raises, which would log the calls before the failing one twice.
            try:
                fields = event_fields(r, self.content, self.max_field_chars)
                if r.status == "error":
                    log.warning(EVENT, **fields)
                else:
                    log.info(EVENT, **fields)
            except Exception as exc:  # noqa: BLE001
                counters.COUNTERS.error("log_event", exc)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def create(settings: Settings) -> LogBackend:
    """The 'log' backend: content follows HISTORYMW_CAPTURE_CONTENT."""
    return LogBackend(content=settings.capture_content, max_field_chars=settings.max_field_chars)
