"""The aggregates the writer keeps beside the calls: per session, and per 5 minutes for the overview.

A batch is first summed here, in Python, into one entry per session and one per (5-minute bucket,
model, provider, status); then each entry is one `INSERT ... ON CONFLICT DO UPDATE` that adds it to
the stored row, in the transaction that inserts the calls. So the aggregates are exactly the sum of
the committed calls however many processes write at once: the database serialises updates of one
row, and entries are written in key order, so two writers lock rows in the same order (no deadlock).

Retention (`write.prune`) subtracts the deleted calls from the rollup (every rollup column is a sum)
and recomputes the sessions it touched from the calls left, deleting a session with none left:
first and last activity cannot be subtracted.
"""

from __future__ import annotations

import datetime as _dt
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .schema import HIST, LATENCY_BINS, ROLLUP_S, calls, rollup, sessions

# What the aggregates read from a call, in this order.
AGG_COLUMNS = ("started_at", "duration_s", "session", "model", "provider", "status", "input_tokens",
               "output_tokens", "total_tokens", "cost")
_BACKFILL_CHUNK = 5000
_KEYS_PER_STATEMENT = 400  # session ids per `IN (...)`: under SQLite's smallest parameter limit
# Latency bins: bin 0 is under 1 ms; bin i covers [1 ms * R**(i-1), 1 ms * R**i), R = 2**(1/3) (a
# value read back from a bin is within 12% of the call's); the last bin is open-ended (~28 min up).
_LOG_R = math.log(2.0) / 3.0


def latency_bin(seconds: Any) -> int:
    if not seconds > 0.001:  # (NaN and None too)
        return 0
    b = int(math.log(seconds * 1000.0) / _LOG_R) + 1
    return b if b < LATENCY_BINS else LATENCY_BINS - 1


def bin_value(b: int) -> float:
    """The latency a bin stands for: its geometric middle (0.5 ms for bin 0)."""
    if b <= 0:
        return 0.0005
    return 0.001 * math.exp((b - 0.5) * _LOG_R)


def _epochs(rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows of AGG_COLUMNS as read back (PostgreSQL gives datetimes), started_at as epoch seconds."""
    return [(r[0].timestamp() if isinstance(r[0], _dt.datetime) else float(r[0]), *r[1:]) for r in rows]


def _getter(columns: Sequence[str]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A row of `columns` -> its AGG_COLUMNS values (a column the row lacks reads as its default)."""
    index = {c: i for i, c in enumerate(columns)}
    missing = [c for c in AGG_COLUMNS if c not in index]
    get = operator.itemgetter(*(index[c] if c in index else len(columns) + missing.index(c) for c in AGG_COLUMNS))
    if not missing:
        return get  # type: ignore[return-value]
    pad = tuple("ok" if c == "status" else None for c in missing)
    return lambda r: get(r + pad)  # type: ignore[no-any-return,operator]  # rows are tuples


class Totals:
    """A batch's calls summed per session and per rollup key."""

    def __init__(self) -> None:
        # session -> [first, last, calls, errors, input, output, tokens, cost]
        self.sessions: dict[str, list[Any]] = {}
        # (bucket, model, provider, status) -> [calls, input, output, tokens, cost, duration sum, histogram]
        self.buckets: dict[tuple[Any, ...], list[Any]] = {}

    def add(self, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Add rows of `columns` (started_at as epoch seconds, as the writer binds it)."""
        get = _getter(columns)
        sess, buckets = self.sessions, self.buckets
        log, log_r, top = math.log, _LOG_R, LATENCY_BINS - 1
        for r in rows:
            started, dur, session, model, provider, status, tin, tout, ttot, cost = get(r)
            tokens = ttot if ttot is not None else (tin or 0) + (tout or 0)
            err = status == "error"
            if session is not None:
                s = sess.get(session)
                if s is None:
                    sess[session] = [started, started, 1, int(err), tin, tout, tokens, cost]
                else:
                    if started < s[0]:
                        s[0] = started
                    elif started > s[1]:
                        s[1] = started
                    s[2] += 1
                    s[3] += err
                    if tin is not None:
                        s[4] = tin if s[4] is None else s[4] + tin
                    if tout is not None:
                        s[5] = tout if s[5] is None else s[5] + tout
                    s[6] += tokens
                    if cost is not None:
                        s[7] = cost if s[7] is None else s[7] + cost
            key = (started // ROLLUP_S, model, provider, status)
            b = buckets.get(key)
            if b is None:
                b = buckets[key] = [0, None, None, 0, None, 0.0, [0] * LATENCY_BINS]
            b[0] += 1
            if tin is not None:
                b[1] = tin if b[1] is None else b[1] + tin
            if tout is not None:
                b[2] = tout if b[2] is None else b[2] + tout
            b[3] += tokens
            if cost is not None:
                b[4] = cost if b[4] is None else b[4] + cost
            b[5] += dur
            # latency_bin(dur), inline (this loop runs for every call written)
            b[6][min(int(log(dur * 1000.0) / log_r) + 1, top) if dur > 0.001 else 0] += 1

    def rollup_rows(self) -> list[tuple[tuple[Any, ...], list[Any]]]:
        """(bucket start, model, provider, status) -> sums, in key order, with the keys as stored."""
        merged: dict[tuple[Any, ...], list[Any]] = {}
        for (b, model, provider, status), v in self.buckets.items():
            key = (int(b) * ROLLUP_S, model or "", provider or "", status)
            m = merged.get(key)
            if m is None:
                merged[key] = v
            else:  # None and "" are one key once stored
                m[0] += v[0]
                m[1], m[2], m[4] = _add_known(m[1], v[1]), _add_known(m[2], v[2]), _add_known(m[4], v[4])
                m[3] += v[3]
                m[5] += v[5]
                m[6] = [x + y for x, y in zip(m[6], v[6], strict=True)]
        return sorted(merged.items())


def _add_known(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else a + b


# -- statements ----------------------------------------------------------------------------------

_statements: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}


def _merge(table: sa.Table, excluded: Any, name: str) -> Any:
    """stored + new for a sum that is NULL when no value was known."""
    a, b = table.c[name], excluded[name]
    return sa.func.coalesce(a + b, a, b)


def _session_upsert(dialect: str) -> Any:
    pg = dialect == "postgresql"
    insert: Any = postgresql.insert if pg else sqlite.insert

    def when(name: str) -> Any:
        p: Any = sa.bindparam(name)
        return sa.func.to_timestamp(p) if pg else p

    stmt = insert(sessions).values(
        session=sa.bindparam("s"), first_at=when("f"), last_at=when("l"), calls=sa.bindparam("n"),
        errors=sa.bindparam("e"), input_tokens=sa.bindparam("i"), output_tokens=sa.bindparam("o"),
        total_tokens=sa.bindparam("t"), cost=sa.bindparam("c"))
    x, c = stmt.excluded, sessions.c
    least, greatest = (sa.func.least, sa.func.greatest) if pg else (sa.func.min, sa.func.max)
    return stmt.on_conflict_do_update(index_elements=["session"], set_={
        "first_at": least(c.first_at, x.first_at), "last_at": greatest(c.last_at, x.last_at),
        "calls": c.calls + x.calls, "errors": c.errors + x.errors,
        "input_tokens": _merge(sessions, x, "input_tokens"), "output_tokens": _merge(sessions, x, "output_tokens"),
        "total_tokens": c.total_tokens + x.total_tokens, "cost": _merge(sessions, x, "cost")})


def _rollup_upsert(dialect: str) -> Any:
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    names = ("bucket", "model", "provider", "status", "calls", "input_tokens", "output_tokens", "total_tokens",
             "cost", "duration_s", *HIST)
    stmt = insert(rollup).values({n: sa.bindparam(n) for n in names})
    x, c = stmt.excluded, rollup.c
    sums = {n: c[n] + x[n] for n in ("calls", "total_tokens", "duration_s", *HIST)}
    sums.update({n: _merge(rollup, x, n) for n in ("input_tokens", "output_tokens", "cost")})
    return stmt.on_conflict_do_update(index_elements=["bucket", "model", "provider", "status"], set_=sums)


def _statement(conn: sa.Connection, which: str) -> tuple[str, tuple[str, ...]]:
    """The upsert of sessions ("s") or rollup rows ("r"), compiled once for this dialect, and the names of
    its parameters in the order it binds them: run with the driver's executemany over tuples, it costs
    a fraction of SQLAlchemy's per-execution work on a 74-column statement, for one or two rows."""
    dialect = conn.dialect
    made = _statements.get((dialect.name, which))
    if made is None:
        stmt = (_session_upsert if which == "s" else _rollup_upsert)(dialect.name)
        compiled = stmt.compile(dialect=dialect)
        order = tuple(compiled.positiontup or ())
        if len(order) != len(set(order)) or not order:
            raise RuntimeError(f"aggregate parameters not positional once each: {order}")
        made = _statements[(dialect.name, which)] = (str(compiled), order)
    return made


def _neg(v: Any) -> Any:
    return None if v is None else -v


def write_rollup(conn: sa.Connection, totals: Totals, sign: int = 1) -> None:
    """Add (sign 1) or subtract (-1) the totals' buckets to the stored rollup."""
    if not totals.buckets:
        return
    rows = []
    merged = totals.rollup_rows()
    for key, (n, tin, tout, tokens, cost, dur, hist) in merged:  # key order: see the module's doc
        if sign < 0:
            n, tin, tout, tokens, cost, dur = -n, _neg(tin), _neg(tout), -tokens, _neg(cost), -dur
            hist = [-h for h in hist]
        row = {"bucket": key[0], "model": key[1], "provider": key[2], "status": key[3], "calls": n,
               "input_tokens": tin, "output_tokens": tout, "total_tokens": tokens, "cost": cost, "duration_s": dur}
        row.update(zip(HIST, hist, strict=True))
        rows.append(row)
    sql, order = _statement(conn, "r")
    conn.exec_driver_sql(sql, [tuple([row[n] for n in order]) for row in rows])
    if sign < 0:  # buckets left with no calls go (looked for among the buckets touched: the key's prefix)
        conn.execute(sa.delete(rollup).where(rollup.c.bucket.between(merged[0][0][0], merged[-1][0][0]),
                                             rollup.c.calls <= 0))


def write_sessions(conn: sa.Connection, totals: Totals) -> None:
    if not totals.sessions:
        return
    rows = [{"s": s, "f": v[0], "l": v[1], "n": v[2], "e": v[3], "i": v[4], "o": v[5], "t": v[6], "c": v[7]}
            for s, v in sorted(totals.sessions.items())]
    sql, order = _statement(conn, "s")
    conn.exec_driver_sql(sql, [tuple([row[n] for n in order]) for row in rows])


def add(conn: sa.Connection, groups: Iterable[tuple[Sequence[str], Sequence[Sequence[Any]]]]) -> None:
    """Add calls just inserted (rows of the given columns) to the aggregates, in `conn`'s transaction."""
    totals = Totals()
    for columns, rows in groups:
        totals.add(columns, rows)
    write_sessions(conn, totals)
    write_rollup(conn, totals)


def removed(conn: sa.Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Calls just deleted (rows of AGG_COLUMNS): subtract them from the rollup, recompute their sessions."""
    if not rows:
        return
    totals = Totals()
    totals.add(AGG_COLUMNS, _epochs(rows))
    write_rollup(conn, totals, sign=-1)
    recompute_sessions(conn, sorted(totals.sessions))


def _tokens() -> Any:
    c = calls.c
    return sa.func.coalesce(c.total_tokens, sa.func.coalesce(c.input_tokens, 0) + sa.func.coalesce(c.output_tokens, 0))


def recompute_sessions(conn: sa.Connection, ids: Sequence[str]) -> None:
    """Rebuild these sessions' rows from their calls; a session with no calls left has no row."""
    c = calls.c
    for i in range(0, len(ids), _KEYS_PER_STATEMENT):
        chunk = ids[i:i + _KEYS_PER_STATEMENT]
        conn.execute(sa.delete(sessions).where(sessions.c.session.in_(chunk)))
        select = (sa.select(c.session, sa.func.min(c.started_at), sa.func.max(c.started_at), sa.func.count(),
                            sa.func.coalesce(sa.func.sum(sa.case((c.status == "error", 1), else_=0)), 0),
                            sa.func.sum(c.input_tokens), sa.func.sum(c.output_tokens), sa.func.sum(_tokens()),
                            sa.func.sum(c.cost))
                  .where(c.session.in_(chunk)).group_by(c.session))
        conn.execute(sa.insert(sessions).from_select(
            ["session", "first_at", "last_at", "calls", "errors", "input_tokens", "output_tokens", "total_tokens",
             "cost"], select))


def backfill(conn: sa.Connection) -> None:
    """Fill both aggregates from the calls already stored (the migration to schema 4), a chunk at a time."""
    c = calls.c
    cols = [c[n] for n in AGG_COLUMNS]
    last = ""
    while True:
        rows = conn.execute(sa.select(c.id, *cols).where(c.id > last).order_by(c.id)
                            .limit(_BACKFILL_CHUNK)).all()
        if not rows:
            return
        totals = Totals()
        totals.add(AGG_COLUMNS, _epochs(r[1:] for r in rows))
        write_sessions(conn, totals)
        write_rollup(conn, totals)
        last = rows[-1][0]
