"""Writing calls: the batched, idempotent insert, and retention.

Inserts are `INSERT ... ON CONFLICT (id) DO NOTHING` built once from a Core
construct and run with the driver's executemany over plain tuples, so a batch
the worker retries after a timeout that did commit adds no duplicate rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .engine import WRITE
from .rows import COLUMNS, to_stored_time
from .schema import calls

_DELETE_CHUNK = 5000


def insert_statement(dialect: Any, columns: Sequence[str] = COLUMNS) -> str:
    """The parameterised insert, compiled for `dialect`, taking rows of `columns` in that order
    (the columns left out are NULL)."""
    if dialect.name == "postgresql":
        # Times arrive as epoch seconds; the server turns them into timestamptz.
        values = {c: sa.func.to_timestamp(sa.bindparam(c)) if c in ("started_at", "ended_at") else sa.bindparam(c)
                  for c in columns}
        stmt: Any = postgresql.insert(calls).values(values).on_conflict_do_nothing(index_elements=["id"])
    else:
        stmt = sqlite.insert(calls).values({c: sa.bindparam(c) for c in columns}).on_conflict_do_nothing(
            index_elements=["id"])
    compiled = stmt.compile(dialect=dialect)
    if list(compiled.positiontup or ()) != list(columns):
        raise RuntimeError(f"insert parameters out of column order: {compiled.positiontup}")
    return str(compiled)


Batches = Sequence[tuple[str, Sequence[tuple[Any, ...]]]]


def insert_rows(engine: Any, batches: Batches) -> None:
    """Insert (statement, rows) pairs in one transaction (all or nothing)."""
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        for sql, rows in batches:
            conn.exec_driver_sql(sql, list(rows))


def insert_each(engine: Any, batches: Batches) -> list[BaseException]:
    """Insert rows one at a time, each in its own transaction; returns the errors of rows refused."""
    errors: list[BaseException] = []
    with engine.connect().execution_options(**WRITE) as conn:
        for sql, row in ((sql, row) for sql, rows in batches for row in rows):
            try:
                with conn.begin():
                    conn.exec_driver_sql(sql, row)
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
    """Delete matching rows oldest first, a chunk per transaction: other writers get turns."""
    deleted = 0
    while True:
        ids = sa.select(calls.c.id).where(condition).order_by(calls.c.started_at).limit(_DELETE_CHUNK)
        with engine.connect().execution_options(**WRITE) as conn, conn.begin():
            n = int(conn.execute(sa.delete(calls).where(calls.c.id.in_(ids.scalar_subquery()))).rowcount)
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
