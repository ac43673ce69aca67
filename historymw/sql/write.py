"""Writing calls: the batched, idempotent insert, and retention.

Inserts are `INSERT ... ON CONFLICT (id) DO NOTHING` built once from a Core
construct and run with the driver's executemany over plain tuples, so a batch
the worker retries after a timeout that did commit adds no duplicate rows.
Most rows go several to a statement (`VALUES (...), (...), ...`): per row, the
drivers' executemany spends about as much on binding, stepping and resetting a
statement as the database spends storing the row.
The same transaction adds the calls it inserted to the session and rollup aggregates
(`historymw.sql.aggregates`); retention takes the calls it deletes out of them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import chain
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from . import aggregates
from .engine import WRITE
from .rows import COLUMNS, to_stored_time
from .schema import calls

_DELETE_CHUNK = 5000
# Rows per multi-row insert: past 16 to 32 a longer statement saves little (measured, SQLite and
# PostgreSQL); bound parameters stay under 999, the smallest limit of any SQLite build.
_ROWS_PER_STATEMENT = 32
_MAX_PARAMS = 999


def insert_statement(dialect: Any, columns: Sequence[str] = COLUMNS, rows: int = 1) -> str:
    """The parameterised insert of `rows` rows, compiled for `dialect`, taking the values of
    `columns` in that order, row after row (the columns left out are NULL)."""
    # A table clause of these columns in this order: the statement binds them in this order.
    table = sa.table(calls.name, *(sa.column(c, calls.c[c].type) for c in columns))
    pg = dialect.name == "postgresql"

    def value(c: str, i: int) -> Any:
        p: Any = sa.bindparam(f"{c}_{i}")
        # PostgreSQL: times arrive as epoch seconds; the server turns them into timestamptz.
        return sa.func.to_timestamp(p) if pg and c in ("started_at", "ended_at") else p

    insert: Any = postgresql.insert if pg else sqlite.insert
    stmt = insert(table).values([{c: value(c, i) for c in columns} for i in range(rows)])
    compiled = stmt.on_conflict_do_nothing(index_elements=["id"]).compile(dialect=dialect)
    if list(compiled.positiontup or ()) != [f"{c}_{i}" for i in range(rows) for c in columns]:
        raise RuntimeError(f"insert parameters out of column order: {compiled.positiontup}")
    return str(compiled)


class Insert:
    """The inserts for rows of `columns`: `one` row, and `per` rows, a statement (compiled when a
    batch first has that many rows of these columns: a shape seen a row at a time never needs it)."""

    def __init__(self, dialect: Any, columns: Sequence[str]) -> None:
        self.dialect = dialect
        self.columns = tuple(columns)
        self.one = insert_statement(dialect, columns)
        self.per = max(1, min(_ROWS_PER_STATEMENT, _MAX_PARAMS // max(1, len(columns))))
        self._many: str | None = None if self.per > 1 else self.one

    @property
    def many(self) -> str:
        if self._many is None:
            self._many = insert_statement(self.dialect, self.columns, self.per)
        return self._many


def insert_for(dialect: Any, columns: Sequence[str]) -> Insert:
    return Insert(dialect, columns)


Batches = Sequence[tuple[Insert, Sequence[tuple[Any, ...]]]]


class _AlreadyStoredError(Exception):
    """Some rows of a batch were in the table already (a retried batch that did commit)."""


def insert_rows(engine: Any, batches: Batches) -> None:
    """Insert (statement, rows) pairs in one transaction (all or nothing), with their aggregates."""
    try:
        with engine.connect().execution_options(**WRITE) as conn, conn.begin():
            if _insert(conn, batches) != sum(len(rows) for _, rows in batches):
                raise _AlreadyStoredError  # rolled back: the aggregates must count only new rows
            aggregates.add(conn, ((ins.columns, rows) for ins, rows in batches))
        return
    except _AlreadyStoredError:
        pass
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        fresh = _not_stored(conn, batches)
        _insert(conn, fresh)
        aggregates.add(conn, ((ins.columns, rows) for ins, rows in fresh))


def _insert(conn: sa.Connection, batches: Batches) -> int:
    """Insert the rows; returns how many the database added (-1 when the driver does not say)."""
    added = 0
    for ins, rows in batches:
        per = ins.per
        whole = len(rows) - len(rows) % per
        if whole and per > 1:
            added += _count(conn.exec_driver_sql(ins.many, [tuple(chain.from_iterable(rows[i:i + per]))
                                                            for i in range(0, whole, per)]))
        else:
            whole = 0
        if whole < len(rows):
            added += _count(conn.exec_driver_sql(ins.one, list(rows[whole:])))
    return added


def _count(result: Any) -> int:
    n = result.rowcount
    return n if n >= 0 else -(10**9)  # unknown: the total cannot match, so the careful way is taken


def _not_stored(conn: sa.Connection, batches: Batches) -> Batches:
    """The batches without the rows whose id is in the table already."""
    out = []
    for ins, rows in batches:
        at = ins.columns.index("id")
        ids = [r[at] for r in rows]
        stored: set[str] = set()
        for i in range(0, len(ids), 400):
            stored.update(conn.execute(sa.select(calls.c.id).where(calls.c.id.in_(ids[i:i + 400]))).scalars())
        out.append((ins, [r for r in rows if r[at] not in stored]))
    return out


def insert_each(engine: Any, batches: Batches) -> list[BaseException]:
    """Insert rows one at a time, each in its own transaction; returns the errors of rows refused."""
    errors: list[BaseException] = []
    ins_columns = {ins.one: ins.columns for ins, _ in batches}
    with engine.connect().execution_options(**WRITE) as conn:
        for sql, row in ((ins.one, row) for ins, rows in batches for row in rows):
            try:
                with conn.begin():
                    if conn.exec_driver_sql(sql, row).rowcount != 0:
                        aggregates.add(conn, [(ins_columns[sql], [row])])
            except sa.exc.DBAPIError as exc:
                if is_transient(exc):
                    raise
                errors.append(exc)
    return errors


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the connection or the server, not the data."""
    if isinstance(exc, sa.exc.DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))
    return True


def _delete_chunks(engine: Any, condition: Any) -> int:
    """Delete matching rows oldest first, a chunk per transaction: other writers get turns. The
    rows deleted (RETURNING) are taken out of the aggregates in the same transaction."""
    deleted = 0
    returned = [calls.c[n] for n in aggregates.AGG_COLUMNS]
    while True:
        ids = sa.select(calls.c.id).where(condition).order_by(calls.c.started_at).limit(_DELETE_CHUNK)
        with engine.connect().execution_options(**WRITE) as conn, conn.begin():
            rows = conn.execute(sa.delete(calls).where(calls.c.id.in_(ids.scalar_subquery()))
                                .returning(*returned)).all()
            aggregates.removed(conn, rows)
        n = len(rows)
        deleted += n
        if n < _DELETE_CHUNK:
            return deleted


def prune(engine: Any, *, older_than: float | None = None, keep: int | None = None,
          now: float | None = None) -> int:
    """Delete calls that started more than `older_than` seconds ago and all but the newest `keep`."""
    deleted = 0
    if older_than is not None:
        cutoff = (time.time() if now is None else now) - older_than
        deleted += _delete_chunks(engine, calls.c.started_at < to_stored_time(engine.dialect.name, cutoff))
    if keep is not None:
        newest_first = (calls.c.started_at.desc(), calls.c.id.desc())
        with engine.connect() as conn:
            edge = conn.execute(sa.select(calls.c.started_at, calls.c.id).order_by(*newest_first)
                                .offset(keep).limit(1)).first()
        if edge is not None:  # the newest row past the `keep` newest: it and everything older go
            ts, rid = edge
            deleted += _delete_chunks(engine, sa.or_(calls.c.started_at < ts,
                                                     sa.and_(calls.c.started_at == ts, calls.c.id <= rid)))
    return deleted
