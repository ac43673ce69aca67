"""Read the persisted history from code: `Store`.

    from historymw.store import Store

    with Store("sqlite:///historymw.db") as store:
        store.recent(20, status="error")           # newest last, as LMCall
        store.get("3f9a0c2e")                       # one call, by id, short id or a unique prefix
        store.session("u-42")                       # one session's calls, oldest first
        page = store.sessions(50)                   # sessions, most recent activity first
        store.sessions(50, before=page[-1].cursor)  # ... and the next page
        for s in store.stats(by="model"):           # calls, errors, tokens, cost, p50/p95
            print(s.group, s.calls, s.latency_p95_s)

The URL defaults to the configured `sql_url` (HISTORYMW_SQL_URL). Opening a
store never creates a database: a missing SQLite file or a database without
historymw tables is a `StoreError`, and so is a server that cannot be reached.
Reading never writes: SQLite is opened read-only (`mode=ro`), an older schema is
read as it is; only `prune()` opens the database for writing.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from .sql import GROUPS, StoreError
from .sql.direct import decode_session_cursor, summary
from .sql.ids import AmbiguousIdError, short_id

if TYPE_CHECKING:
    from .models import LMCall
    from .store_models import CallStats, SessionSummary

__all__ = ["GROUPS", "AmbiguousIdError", "CallStats", "SessionSummary", "Store", "StoreError", "short_id"]
_STATUSES = ("ok", "error")

T = TypeVar("T")
# The range a count or an age can have in either database: a 64-bit integer; a time after year 1.
_MAX_INT = 2**63 - 1
_MAX_AGE_S = 60_000_000_000.0  # about 1,900 years
TimeLike = _dt.datetime | float | int | None


def __getattr__(name: str) -> Any:
    # The models are pydantic's: defined on first use, so that a reader that prints plain rows (the
    # `historymw sessions` command) never makes pydantic import most of itself.
    if name in ("CallStats", "SessionSummary"):
        from . import store_models

        return getattr(store_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        from .sql import engine, schema

        if url is None:
            from .runtime import STATE

            url = STATE.settings.sql_url
        self.url = url
        self.display_url = engine.describe(engine.parse_url(url))
        self._writer: Any = None
        if create:  # a writer's store: creates the file and the tables, migrates an older schema
            self._writer = engine.make_engine(url, create=True)
            self._run(lambda: schema.ensure_schema(self._writer, create=True))
        if self._writer is not None and engine.sqlite_path(engine.parse_url(url)) is None:
            self._engine: Any = self._writer  # in memory: the tables exist only on the writer's connection
        else:
            self._engine = engine.make_engine(url, create=False, read_only=True)
        self._cols: list[Any] = self._run(lambda: self._read(schema.readable_columns))
        self._has_sessions: bool | None = None

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

        if status is not None and status not in _STATUSES:
            raise ValueError(f"status must be 'ok', 'error' or None, not {status!r}")

        return Filters(session=session, model=model, status=status, provider=provider,
                       since=_epoch(since), until=_epoch(until))

    def recent(self, n: int = 10, *, session: str | None = None, model: str | None = None,
               status: str | None = None, provider: str | None = None, since: TimeLike = None,
               until: TimeLike = None) -> list[LMCall]:
        """The newest `n` matching calls, newest last."""
        from .sql import query

        f = self._filters(session, model, status, provider, since, until)
        return self._run(lambda: self._read(lambda conn: query.recent(conn, self._cols, n, f)))

    def get(self, call_id: str) -> LMCall | None:
        """One call by its id, its short id (`short_id(id)`, what `historymw tail` shows) or a unique
        prefix of either, in any case: 4 to 8 hex digits match short ids, 9 or more full ids.
        None when nothing matches; `AmbiguousIdError` (its `candidates` listed) when several do."""
        from .sql import query

        if not isinstance(call_id, str):
            raise TypeError(f"call_id must be a str, not {type(call_id).__name__}")
        return self._run(lambda: self._read(lambda conn: query.get(conn, self._cols, call_id)))

    def session(self, session_id: str) -> list[LMCall]:
        """Every call of one session, oldest first: the whole conversation, from every process and
        restart that wrote it (an empty list for an unknown session)."""
        return list(self.calls(session=session_id))

    def sessions(self, limit: int = 50, *, before: str | None = None) -> list[SessionSummary]:
        """Sessions, most recent activity first; `before`: the `cursor` of the last one of the previous
        page. Read from the writer's `historymw_sessions` table (a database older than schema 4, read
        as it is, by grouping its calls: slower, same answer)."""
        from .store_models import SessionSummary

        return [SessionSummary(**r) for r in self.session_rows(limit, before=before)]

    def session_rows(self, limit: int = 50, *, before: str | None = None) -> list[dict[str, Any]]:
        """`sessions()` as plain dicts of the same fields and values: what the command line prints,
        without defining a pydantic model (which would cost the command more than its query)."""
        from .sql import query

        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= _MAX_INT:
            raise ValueError(f"limit must be a whole number from 0 to {_MAX_INT}, not {limit!r}")
        dialect = self._engine.dialect.name
        key = None if before is None else decode_session_cursor(before, dialect)
        rows = self._run(lambda: self._read(
            lambda conn: query.session_list(conn, limit, key, aggregated=self._aggregated(conn))))
        return [summary(r) for r in rows]

    def session_summary(self, session_id: str) -> SessionSummary | None:
        """One session's first and last activity and totals; None when it has no calls."""
        from .store_models import SessionSummary

        row = self.session_row(session_id)
        return None if row is None else SessionSummary(**row)

    def session_row(self, session_id: str) -> dict[str, Any] | None:
        """`session_summary()` as a plain dict (see `session_rows`)."""
        from .sql import query

        row = self._run(lambda: self._read(
            lambda conn: query.session_info(conn, session_id, aggregated=self._aggregated(conn))))
        return None if row is None else summary(row)

    def _aggregated(self, conn: Any) -> bool:
        if self._has_sessions is None:
            from .sql import schema

            self._has_sessions = (schema.stored_version(conn) or 0) >= schema.SESSIONS_SINCE
        return self._has_sessions

    def calls(self, *, session: str | None = None, model: str | None = None, status: str | None = None,
              provider: str | None = None, since: TimeLike = None, until: TimeLike = None) -> Iterator[LMCall]:
        """Every matching call, oldest first, streamed in chunks."""
        from .sql import query

        f = self._filters(session, model, status, provider, since, until)
        with self._engine.connect() as conn:
            it = query.iterate(conn, self._cols, f)
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
        from .store_models import CallStats

        if by is not None and by not in GROUPS:
            raise ValueError(f"cannot group by {by!r}; expected one of {', '.join(GROUPS)}")
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
        from .sql import engine, write

        self._check_prune(older_than, keep)
        from .sql import schema

        if self._writer is None:  # opened on first use: reading never needs a writable connection
            self._writer = engine.make_engine(self.url, create=False)
        # A writer: an older schema is migrated first (retention keeps the session aggregates in step).
        self._run(lambda: schema.ensure_schema(self._writer, create=False))
        return self._run(lambda: write.prune(self._writer, older_than=older_than, keep=keep))

    def prune_count(self, *, older_than: float | None = None, keep: int | None = None,
                    now: float | None = None) -> int:
        """How many calls `prune(older_than=..., keep=...)` would delete now (nothing is deleted)."""
        import time

        self._check_prune(older_than, keep)
        cutoff = None if older_than is None else (time.time() if now is None else now) - older_than
        if keep is None:
            return self.count(until=cutoff)
        total = self.count()
        # Kept: the calls that are among the newest `keep` and (with older_than) newer than the cutoff.
        kept = min(keep, total if cutoff is None else self.count(since=cutoff))
        return total - kept

    @staticmethod
    def _check_prune(older_than: float | None, keep: int | None) -> None:
        import math

        if older_than is not None and not (isinstance(older_than, (int, float)) and math.isfinite(older_than)
                                           and 0 <= older_than <= _MAX_AGE_S):
            raise ValueError(f"older_than must be seconds from 0 to {_MAX_AGE_S:.0f}, not {older_than!r}")
        if keep is not None and not (isinstance(keep, int) and 0 <= keep <= _MAX_INT):
            raise ValueError(f"keep must be a whole number from 0 to {_MAX_INT}, not {keep!r}")

    def files(self) -> list[str]:
        """The files of a SQLite store (the database and its journals); [] for a server."""
        from .sql import engine

        path = engine.sqlite_path(engine.parse_url(self.url))
        if path is None:
            return []
        return [str(path)] + [f"{path}{suffix}" for suffix in ("-wal", "-shm", "-journal")]

    def _read(self, fn: Callable[[Any], T]) -> T:
        import sqlalchemy as sa

        try:
            with self._engine.connect() as conn:
                return fn(conn)
        except sa.exc.DBAPIError as exc:
            # A pooled connection the server dropped (a restart): the pool has discarded it and
            # the next one is new. PostgreSQL readers skip the pre-ping (see engine.pg_reader),
            # so the read is run again once here; reading twice changes nothing.
            if not exc.connection_invalidated:
                raise
        with self._engine.connect() as conn:
            return fn(conn)

    def close(self) -> None:
        self._engine.dispose()
        if self._writer is not None:
            self._writer.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- hm.recent(session=...) with a SQL backend ---------------------------------------------------

_READERS: dict[str, Store] = {}  # one reader per URL, opened on first use


def with_stored(found: list[LMCall], n: int, *, session: str, status: str | None) -> list[LMCall]:
    """`found` (a session's newest calls in memory, newest last), completed from the SQL store when
    memory holds fewer than `n` of them and a 'sql' backend is configured: the store's newest `n`
    and memory's, merged by id, in time order, the newest `n`. Fail-open: when the store cannot be
    read (not written yet, unreachable), memory's answer stands."""
    from . import counters
    from .runtime import current

    settings = current().settings
    if len(found) >= n or "sql" not in settings.backends:
        return found
    try:
        store = _READERS.get(settings.sql_url)
        if store is None:
            store = _READERS[settings.sql_url] = Store(settings.sql_url)
        stored = store.recent(n, session=session, status=status)
    except StoreError:
        return found  # nothing written yet, or the database cannot be reached: memory's answer
    except Exception as exc:  # noqa: BLE001 - reading history never raises into the caller
        counters.COUNTERS.error("recent_from_store", exc)
        return found
    merged = {c.id: c for c in stored}
    merged.update((c.id, c) for c in found)  # memory's copy of a call both hold
    return sorted(merged.values(), key=lambda c: (c.started_at, c.id))[-n:]
