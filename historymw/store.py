"""Read the persisted history from code: `Store`.

    from historymw.store import Store

    with Store("sqlite:///historymw.db") as store:
        store.recent(20, status="error")           # newest last, as LMCall
        store.get("01a1fc9a...")                    # one call, by id or a unique id prefix
        for s in store.stats(by="model"):           # calls, errors, tokens, cost, p50/p95
            print(s.group, s.calls, s.latency_p95_s)

The URL defaults to the configured `sql_url` (HISTORYMW_SQL_URL). Opening a
store never creates a database: a missing SQLite file or a database without
historymw tables is a `StoreError`, and so is a server that cannot be reached.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from .record import LMCall
from .sql import StoreError
from .sql.ids import AmbiguousIdError

__all__ = ["AmbiguousIdError", "CallStats", "Store", "StoreError"]

T = TypeVar("T")
TimeLike = _dt.datetime | float | int | None


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


def _epoch(value: TimeLike) -> float | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.timestamp()
    return float(value)


class Store:
    """A connection to the history database for reading (and pruning)."""

    def __init__(self, url: str | None = None, *, create: bool = False) -> None:
        from .errors import require

        require("sqlalchemy", what="historymw.store", extra="sql")
        from .runtime import STATE
        from .sql import engine, schema

        self.url = url if url is not None else STATE.settings.sql_url
        self._engine: Any = engine.make_engine(self.url, create=create)
        self.display_url = engine.describe(self._engine.url)
        self._run(lambda: schema.ensure_schema(self._engine, create=create))

    def _run(self, fn: Callable[[], T]) -> T:
        import sqlalchemy as sa

        try:
            return fn()
        except sa.exc.SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            detail = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            raise StoreError(f"database error at {self.display_url}: {detail}") from None

    def _filters(self, session: str | None, model: str | None, status: str | None, provider: str | None,
                 since: TimeLike, until: TimeLike) -> Any:
        from .sql.query import Filters

        return Filters(session=session, model=model, status=status, provider=provider,
                       since=_epoch(since), until=_epoch(until))

    def recent(self, n: int = 10, *, session: str | None = None, model: str | None = None,
               status: str | None = None, provider: str | None = None, since: TimeLike = None,
               until: TimeLike = None) -> list[LMCall]:
        """The newest `n` matching calls, newest last."""
        from .sql import query

        f = self._filters(session, model, status, provider, since, until)
        return self._run(lambda: self._read(lambda conn: query.recent(conn, n, f)))

    def get(self, call_id: str) -> LMCall | None:
        """One call by id (or a unique prefix of it); None when there is none.
        Raises `LookupError` when a prefix matches several calls."""
        from .sql import query

        return self._run(lambda: self._read(lambda conn: query.get(conn, call_id)))

    def calls(self, *, session: str | None = None, model: str | None = None, status: str | None = None,
              provider: str | None = None, since: TimeLike = None, until: TimeLike = None) -> Iterator[LMCall]:
        """Every matching call, oldest first, streamed in chunks."""
        from .sql import query

        f = self._filters(session, model, status, provider, since, until)
        with self._engine.connect() as conn:
            it = query.iterate(conn, f)
            while True:
                item = self._run(lambda: next(it, None))
                if item is None:
                    return
                yield item

    def count(self, *, session: str | None = None, model: str | None = None, status: str | None = None,
              provider: str | None = None, since: TimeLike = None, until: TimeLike = None) -> int:
        from .sql import query

        f = self._filters(session, model, status, provider, since, until)
        return self._run(lambda: self._read(lambda conn: query.count(conn, f)))

    def stats(self, by: str | None = None, *, session: str | None = None, model: str | None = None,
              status: str | None = None, provider: str | None = None, since: TimeLike = None,
              until: TimeLike = None) -> list[CallStats]:
        """Aggregates, one per value of `by` (model, session, status, provider, source), most calls first;
        without `by`, one overall (an empty list when nothing matches)."""
        from .sql import query
        from .sql.rows import to_datetime

        f = self._filters(session, model, status, provider, since, until)
        rows = self._run(lambda: self._read(lambda conn: query.aggregate(conn, f, by)))
        out = []
        for r in rows:
            first, last = r.pop("first"), r.pop("last")
            group = r.pop("g")
            out.append(CallStats(group=None if by is None else group, **r,
                                 first_call=None if first is None else to_datetime(first),
                                 last_call=None if last is None else to_datetime(last)))
        return out

    def prune(self, *, older_than: float | None = None, keep: int | None = None) -> int:
        """Delete calls older than `older_than` seconds and/or all but the newest `keep`; returns how many."""
        from .sql import write

        return self._run(lambda: write.prune(self._engine, older_than=older_than, keep=keep))

    def _read(self, fn: Callable[[Any], T]) -> T:
        with self._engine.connect() as conn:
            return fn(conn)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
