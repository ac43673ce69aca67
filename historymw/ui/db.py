"""Opening the history database for the viewer: read-only, and checked before it is served.

SQLite is opened through a `file:...?mode=ro` URI (plus `PRAGMA query_only`), so the viewer
never creates the file, never migrates it and never changes its journal mode; PostgreSQL
sessions start with `default_transaction_read_only` and run in autocommit (the store's reader
engine). Every failure becomes a `StoreError` whose message is one line a person can act on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from ..sql import StoreError
from ..sql.engine import PG_CONNECT_TIMEOUT_S, describe, parse_url, pg_reader, sqlite_path
from ..sql.schema import CALLS, ROLLUP, SESSIONS, VERSIONS

T = TypeVar("T")
# A query that runs longer than this is stopped (a text search over millions of rows).
QUERY_TIMEOUT_S = 15.0
# The columns the viewer reads; a database of another schema version may lack some (they read as NULL).
REQUIRED = ("id", "started_at", "duration_s", "status")


@dataclass
class Database:
    """A read-only engine and what the viewer learnt about the table when it opened it."""

    engine: Any
    url: str  # without its password
    columns: frozenset[str]
    # The writer's historymw_sessions and historymw_rollup (schema 4 on): the sessions list and the
    # overview read them; without them (an older database, never migrated by the viewer) the calls.
    aggregates: bool = False

    @property
    def dialect(self) -> str:
        return str(self.engine.dialect.name)

    def col(self, name: str) -> Any:
        """The column, or a typed NULL when this database's schema has no such column."""
        from ..sql.schema import calls

        if name in self.columns:
            return calls.c[name]
        return sa.null().label(name)

    def run(self, fn: Callable[[sa.Connection], T]) -> T:
        """`fn(conn)` on one connection; database errors become a one-line StoreError.

        A pooled PostgreSQL connection the server dropped (a restart) fails its first statement
        (the engine has no pre-ping, see `engine.pg_reader`): the pool has discarded it, and `fn`
        (a read: running it twice changes nothing) runs again once on a new connection."""
        try:
            try:
                return self._run(fn)
            except sa.exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            return self._run(fn)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(_one_line(exc, self.url)) from None

    def _run(self, fn: Callable[[sa.Connection], T]) -> T:
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                _sqlite_deadline(conn, time.monotonic() + QUERY_TIMEOUT_S)
            return fn(conn)


def _one_line(exc: BaseException, url: str) -> str:
    orig = getattr(exc, "orig", None) or exc
    detail = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    if detail == "interrupted":
        detail = f"the query ran longer than {QUERY_TIMEOUT_S:g}s and was stopped; narrow the filters"
    return f"database error at {url}: {detail}"


def _sqlite_deadline(conn: sa.Connection, deadline: float) -> None:
    raw = conn.connection.dbapi_connection
    if raw is not None:  # SQLite calls this every 10,000 VM steps; non-zero aborts the statement
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)


def open_database(url: str) -> Database:
    """Open `url` read-only and check that it holds historymw's calls table."""
    u = parse_url(url)
    shown = describe(u)
    if u.get_backend_name() == "sqlite":
        engine = _sqlite_engine(u)
    else:
        from ..errors import require

        require("psycopg", what="The PostgreSQL store", extra="postgres")
        # The store's reader engine: autocommit, read-only sessions, no pre-ping (a page's queries
        # are one round trip each, not four); Database.run replaces a connection a restart killed.
        # Named parameters (paramstyle None): the overview groups by an expression it selects.
        engine = pg_reader(sa, u, {"connect_timeout": PG_CONNECT_TIMEOUT_S}, pool_size=4, max_overflow=4,
                           options=f"-c statement_timeout={int(QUERY_TIMEOUT_S * 1000)}", paramstyle=None)
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            if not insp.has_table(CALLS):
                raise StoreError(f"{shown} has no {CALLS} table: it is not a historymw history database "
                                 "(or nothing has been recorded into it yet)")
            if not insp.has_table(VERSIONS):
                raise StoreError(f"{shown}: table {CALLS} exists but {VERSIONS} does not: "
                                 "it was not created by historymw")
            columns = frozenset(c["name"] for c in insp.get_columns(CALLS))
            # Created and filled in one transaction (the migration): present means complete.
            aggregates = insp.has_table(SESSIONS) and insp.has_table(ROLLUP)
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(_one_line(exc, shown)) from None
    except StoreError:
        engine.dispose()
        raise
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        engine.dispose()
        raise StoreError(f"{shown}: table {CALLS} lacks column(s) {', '.join(missing)}: "
                         "it was not created by historymw")
    return Database(engine=engine, url=shown, columns=columns, aggregates=aggregates)


def _sqlite_engine(u: Any) -> Any:
    import sqlite3

    path = sqlite_path(u)
    if path is None:
        raise StoreError("the viewer needs a SQLite file (sqlite:///path/to/history.db), not an in-memory database")
    if not path.is_file():
        raise StoreError(f"no history database at {path}" if not path.exists() else f"{path} is not a file")
    uri = f"{path.resolve().as_uri()}?mode=ro"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=5.0)
        conn.execute("PRAGMA query_only = ON")
        return conn

    return sa.create_engine("sqlite://", creator=connect, pool_size=4, max_overflow=4,
                            poolclass=sa.pool.QueuePool)
