"""Writing calls: the batched, idempotent insert, and retention.

Inserts are `INSERT ... ON CONFLICT (id) DO NOTHING` built once from a Core
construct and run with the driver's executemany over plain tuples, so a batch
the worker retries after a timeout that did commit adds no duplicate rows.
Most rows go several to a statement (`VALUES (...), (...), ...`): per row, the
drivers' executemany spends about as much on binding, stepping and resetting a
statement as the database spends storing the row.
The same transaction adds the calls it inserted to the session and rollup aggregates
(`historymw.sql.aggregates`); retention takes the calls it deletes out of them.

A batch's message contents go in the same transaction, before its calls: an
upsert on the content's digest that only ever raises `last_used` (idempotent
too), in digest order, so that concurrent writers lock shared contents in one
order and never deadlock. Retention deletes orphaned contents in the
transaction that deletes the calls (see `historymw.sql.contents`); on
PostgreSQL writers hold a shared advisory lock and the orphan sweep an
exclusive one, so the sweep never sees a content whose new call is not yet
committed.
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
from .schema import calls, contents

# pg_advisory_xact_lock key of the content sweep ("hmwc"): writers share it, the sweep holds it alone.
_PG_SWEEP_KEY = 0x686D7763
Contents = Sequence[tuple[bytes, bytes, float]]  # (digest, stored body, last_used epoch): sql.contents
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


def contents_statement(dialect: Any, rows: int = 1) -> str:
    """The upsert of `rows` contents (hash, body, last_used as epoch seconds): a new one is inserted,
    a known one only gets a later `last_used`."""
    pg = dialect.name == "postgresql"
    insert: Any = postgresql.insert if pg else sqlite.insert
    c = contents.c

    def when(i: int) -> Any:
        p: Any = sa.bindparam(f"last_used_{i}")
        return sa.func.to_timestamp(p) if pg else p

    stmt = insert(contents).values([{"hash": sa.bindparam(f"hash_{i}"), "body": sa.bindparam(f"body_{i}"),
                                     "last_used": when(i)} for i in range(rows)])
    stmt = stmt.on_conflict_do_update(index_elements=["hash"], set_={"last_used": stmt.excluded.last_used},
                                      where=c.last_used < stmt.excluded.last_used)
    compiled = stmt.compile(dialect=dialect)
    if list(compiled.positiontup or ()) != [f"{c}_{i}" for i in range(rows) for c in ("hash", "body", "last_used")]:
        raise RuntimeError(f"content parameters out of order: {compiled.positiontup}")
    return str(compiled)


_content_statements: dict[tuple[str, int], str] = {}


def upsert_contents(conn: Any, rows: Contents) -> None:
    """Store contents (digest, stored body, last_used epoch), sorted by digest (see the module's doc)."""
    if not rows:
        return
    dialect = conn.dialect
    per = _ROWS_PER_STATEMENT
    whole = len(rows) - len(rows) % per
    if whole:
        key = (dialect.name, per)
        many = _content_statements.get(key) or _content_statements.setdefault(key, contents_statement(dialect, per))
        conn.exec_driver_sql(many, [tuple(chain.from_iterable(rows[i:i + per])) for i in range(0, whole, per)])
    if whole < len(rows):
        key = (dialect.name, 1)
        one = _content_statements.get(key) or _content_statements.setdefault(key, contents_statement(dialect))
        conn.exec_driver_sql(one, list(rows[whole:]))


def _share_sweep_lock(conn: Any) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({_PG_SWEEP_KEY})")


Batches = Sequence[tuple[Insert, Sequence[tuple[Any, ...]]]]


class _AlreadyStoredError(Exception):
    """Some rows of a batch were in the table already (a retried batch that did commit)."""


def insert_rows(engine: Any, batches: Batches, content_rows: Contents = ()) -> None:
    """Insert a batch's message contents and (statement, rows) pairs in one transaction (all or
    nothing), with their aggregates."""
    try:
        with engine.connect().execution_options(**WRITE) as conn, conn.begin():
            _contents(conn, content_rows)
            if _insert(conn, batches) != sum(len(rows) for _, rows in batches):
                raise _AlreadyStoredError  # rolled back: the aggregates must count only new rows
            aggregates.add(conn, ((ins.columns, rows) for ins, rows in batches))
        return
    except _AlreadyStoredError:
        pass
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        _contents(conn, content_rows)  # (those of rows stored already too: an upsert changes nothing then)
        fresh = _not_stored(conn, batches)
        _insert(conn, fresh)
        aggregates.add(conn, ((ins.columns, rows) for ins, rows in fresh))


def _contents(conn: sa.Connection, content_rows: Contents) -> None:
    if content_rows:
        _share_sweep_lock(conn)
        upsert_contents(conn, content_rows)
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


def insert_each(engine: Any, batches: Batches, content_rows: Contents = ()) -> list[BaseException]:
    """Insert rows one at a time, each in its own transaction with the contents it refers to;
    returns the errors of rows refused."""
    from .contents import row_contents

    errors: list[BaseException] = []
    by_digest = {r[0]: r for r in content_rows}
    with engine.connect().execution_options(**WRITE) as conn:
        for ins, rows in batches:
            at = ins.columns.index("message_refs") if "message_refs" in ins.columns else None
            for row in rows:
                try:
                    with conn.begin():
                        if at is not None and row[at]:
                            _contents(conn, sorted(set(row_contents(row[at], by_digest))))
                        if conn.exec_driver_sql(ins.one, row).rowcount != 0:
                            aggregates.add(conn, [(ins.columns, [row])])
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


def sweep_contents(conn: Any) -> int:
    """Delete the contents no call refers to any more: those last used before the oldest call left
    (retention deletes oldest first). On PostgreSQL the caller holds the sweep lock alone."""
    floor = conn.execute(sa.select(sa.func.min(calls.c.started_at))).scalar()
    stmt = sa.delete(contents)
    if floor is not None:
        stmt = stmt.where(contents.c.last_used < floor)
    return int(conn.execute(stmt).rowcount)


def _delete_chunks(engine: Any, condition: Any) -> int:
    """Delete matching rows oldest first, a chunk per transaction (other writers get turns). The
    rows deleted (RETURNING) are taken out of the aggregates, and the contents only they referred
    to are deleted, in the same transaction."""
    deleted = 0
    returned = [calls.c[n] for n in aggregates.AGG_COLUMNS]
    while True:
        ids = sa.select(calls.c.id).where(condition).order_by(calls.c.started_at).limit(_DELETE_CHUNK)
        with engine.connect().execution_options(**WRITE) as conn, conn.begin():
            if conn.dialect.name == "postgresql":  # first: before this transaction locks any row
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_SWEEP_KEY})")
            rows = conn.execute(sa.delete(calls).where(calls.c.id.in_(ids.scalar_subquery()))
                                .returning(*returned)).all()
            aggregates.removed(conn, rows)
            sweep_contents(conn)
        n = len(rows)
        deleted += n
        if n < _DELETE_CHUNK:
            return deleted


def prune(engine: Any, *, older_than: float | None = None, keep: int | None = None,
          now: float | None = None) -> int:
    """Delete calls that started more than `older_than` seconds ago and all but the newest `keep`,
    and the message contents no call left refers to."""
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
