"""The pydantic models `historymw.store` returns: `CallStats` and `SessionSummary`.

Kept apart from `store` (which re-exports them) so that reading the store needs no
pydantic until a model is asked for: the first model a process defines makes pydantic
import most of itself, which would be most of what `historymw sessions` costs.
"""

from __future__ import annotations

import datetime as _dt

from pydantic import BaseModel, Field


class CallStats(BaseModel):
    """Aggregates over a set of calls (one group of `Store.stats(by=...)`, or all)."""

    group: str | None = Field(description="the value grouped by (model, session, ...); None for ungrouped")
    calls: int
    errors: int
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int = 0
    cost: float | None = Field(None, description="sum of known costs; None when no call had one")
    latency_mean_s: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    first_call: _dt.datetime | None = None
    last_call: _dt.datetime | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


class SessionSummary(BaseModel):
    """One session: its first and last activity (when its first and last calls started) and totals."""

    id: str
    first_at: _dt.datetime
    last_at: _dt.datetime
    calls: int
    errors: int
    input_tokens: int | None = Field(None, description="sum of the known values; None when none was known")
    output_tokens: int | None = None
    total_tokens: int = Field(0, description="total_tokens of each call, else its input + output")
    cost: float | None = Field(None, description="sum of known costs; None when no call had one")
    cursor: str = Field("", description="pass as Store.sessions(before=...) for the sessions after this one")
