"""The pydantic models users see at the boundaries: `LMCall` (a record) and `Stats`.

Defined in their own module so that `import historymw` defines no pydantic model:
the first model class a process defines makes pydantic import most of itself
(its type machinery, its plugin loader's entry-point scan), which would be most
of what importing historymw costs. The hot path builds plain dicts (drafts);
this module is imported when a record or the stats are first read
(`historymw.LMCall`, `historymw.record.LMCall` and `historymw.counters.Stats`
import it on first access).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Literal

from pydantic import BaseModel, Field


class LMCall(BaseModel):
    """One LM call, as plain JSON-serialisable data."""

    id: str
    started_at: _dt.datetime
    ended_at: _dt.datetime
    duration_s: float
    provider: str | None = None
    model: str | None = None
    operation: str = "chat"
    session: str | None = None
    tags: dict[str, Any] = Field(default_factory=dict)
    messages: list[Any] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    output_text: str | None = None
    outputs: list[Any] = Field(default_factory=list)
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None
    status: Literal["ok", "error"] = "ok"
    error_type: str | None = None
    error_message: str | None = None
    stream: bool = False
    time_to_first_token_s: float | None = None
    trace_id: str | None = None
    span_id: str | None = None
    trace_flags: int | None = None
    source: str = "decorator"
    size_bytes: int = 0
    response_id: str | None = None
    response_model: str | None = None
    cache_hit: bool | None = None
    server_address: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Added for the GenAI conventions' usage and request details (the SQL store keeps them
    # in `extra` until a schema version gives them columns).
    system_instructions: list[Any] = Field(default_factory=list)  # a system prompt given beside the messages
    tool_definitions: list[Any] = Field(default_factory=list)  # the tools offered to the model
    cache_read_input_tokens: int | None = None  # input tokens served from the provider's prompt cache
    cache_creation_input_tokens: int | None = None  # input tokens written to the provider's prompt cache
    reasoning_tokens: int | None = None  # output tokens spent on reasoning
    server_port: int | None = None
    error_stacktrace: str | None = None  # the failed call's traceback, redacted like error_message
    stream_chunks: int | None = None  # chunks a recorded stream delivered


class Stats(BaseModel):
    """A snapshot of what historymw kept, skipped, dropped and why."""

    recorded: int = Field(description="records kept by the policy and handed to the backends")
    sampled_out: int = Field(description="calls a head decision (sampling) chose not to record")
    filtered_out: int = Field(description="calls a tail decision (errors-only) chose not to keep")
    dropped: int = Field(description="records lost on the way: full export queue, failed export, ...")
    dropped_by_reason: dict[str, int]
    evicted: int = Field(description="records the ring removed to stay within maxlen and max_bytes")
    records_held: int = Field(description="records in the ring now")
    bytes_held: int = Field(description="bytes the ring accounts for now (sum of size_bytes)")
    max_bytes: int
    queued: int = Field(description="records waiting in export queues")
    exported: int = Field(description="records delivered to I/O backends")
    errors: dict[str, int] = Field(description="exceptions caught inside historymw, by kind")

    @property
    def kept(self) -> int:
        """Another name for `recorded`: the calls the policy kept."""
        return self.recorded

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)
