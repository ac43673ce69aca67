"""Reading calls back: filters, newest rows, one row by id, aggregates.

Every statement is a SQLAlchemy Core construct with bound parameters.
Latency percentiles use window functions (nearest rank), which SQLite (3.25+)
and PostgreSQL both run, so both stores give the same numbers.
Readers select `cols`, the columns the database has (`schema.readable_columns`):
an older database is read as it is, never migrated by a reader.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import GROUPS
from .direct import SESSION_FIELDS
from .ids import MIN_PREFIX, SHORT_LEN, AmbiguousIdError, short_id
from .schema import calls, sessions

if TYPE_CHECKING:
    from ..models import LMCall

# `rows` (calls as LMCall: the pydantic model) and `contents` (message bodies) are imported by the
# readers of calls only: the sessions list (`historymw sessions`) reads neither.
Cols = list[Any]  # the columns to select (see the module's docstring)
_HEX = re.compile(r"^[0-9a-f]+$")
_CANDIDATES = 11  # ids read when a prefix is ambiguous (10 are listed; an 11th says there are more)


@dataclass(frozen=True)
class Filters:
    """What to select; None means any. Times are epoch seconds (UTC)."""

    session: str | None = None
    model: str | None = None
    status: str | None = None
    provider: str | None = None
    since: float | None = None
    until: float | None = None

    def where(self, dialect: str) -> list[Any]:
        c = calls.c
        since = None if self.since is None else _stored_time(dialect, self.since)
        until = None if self.until is None else _stored_time(dialect, self.until)
        clauses: list[Any] = []
        for name in ("session", "model", "status", "provider"):
            value = getattr(self, name)
            if value is not None:
                clauses.append(c[name] == value)
        if since is not None:
            clauses.append(c.started_at >= since)
        if until is not None:
            clauses.append(c.started_at < until)
        return clauses


_UTC = _dt.timezone.utc


def _stored_time(dialect: str, epoch: float) -> Any:
    """What a time compares against in this dialect's time columns (as `rows.to_stored_time`)."""
    return epoch if dialect == "sqlite" else _dt.datetime.fromtimestamp(epoch, _UTC)


def _select(cols: Cols) -> Any:
    return sa.select(*(c for c in cols if c.name != "short_id"))


def recent(conn: sa.Connection, cols: Cols, n: int, filters: Filters) -> list[LMCall]:
    """The newest `n` calls, newest last (like `historymw.recent`)."""
    from .contents import resolve
    from .rows import row_to_call

    stmt = (_select(cols).where(*filters.where(conn.dialect.name))
            .order_by(calls.c.started_at.desc(), calls.c.id.desc()).limit(max(n, 0)))
    rows = [row_to_call(r) for r in resolve(conn, conn.execute(stmt).mappings())]
    rows.reverse()
    return rows


_by_id: dict[tuple[Any, ...], Any] = {}


def _select_by_id(cols: Cols, dialect: str) -> Any:
    """The select of one row by id, built once per set of columns: building a 40-column select and
    its cache key costs more than SQLite spends finding the row. On PostgreSQL it brings the contents
    of the call's shared prefix along (`contents.prefix_contents`): a round trip to the server costs
    more than reading them, and a reader that has not met the prompt yet would need two more."""
    key = (dialect, *(c.name for c in cols))
    stmt = _by_id.get(key)
    if stmt is None:
        stmt = _select(cols).where(calls.c.id == sa.bindparam("call_id"))
        if dialect == "postgresql" and any(c.name == "message_refs" for c in cols):
            from .contents import prefix_contents

            stmt = stmt.add_columns(prefix_contents(calls.c.message_refs))
        stmt = _by_id[key] = stmt
    return stmt


def get(conn: sa.Connection, cols: Cols, call_id: str) -> LMCall | None:
    """One call by its full id, its short id, or a unique prefix of either (the rule in `ids`)."""
    by_id = _select_by_id(cols, conn.dialect.name)
    params: dict[str, Any] = {"call_id": call_id}
    if conn.dialect.name == "postgresql":
        from .contents import known_prefixes

        params["hm_known"] = known_prefixes()
    row = conn.execute(by_id, params).mappings().first()
    if row is not None:
        return _one(conn, row)
    key = call_id.strip().lower()
    if key != call_id:
        row = conn.execute(by_id, {**params, "call_id": key}).mappings().first()
        if row is not None:
            return _one(conn, row)
    if len(key) < MIN_PREFIX or not _HEX.match(key):
        return None
    if len(key) <= SHORT_LEN:
        ids = _short_matches(conn, cols, key)
    else:
        # Ids are hex: the prefix range [p, p + "g") uses the primary-key index, unlike LIKE.
        ids = list(conn.execute(sa.select(calls.c.id).where(calls.c.id >= key, calls.c.id < key + "g")
                                .order_by(calls.c.id).limit(_CANDIDATES)).scalars())
    if len(ids) > 1:
        raise AmbiguousIdError(call_id, ids)
    if not ids:
        return None
    row = conn.execute(by_id, {**params, "call_id": ids[0]}).mappings().first()
    return None if row is None else _one(conn, row)


def _one(conn: sa.Connection, row: Any) -> LMCall:
    from .contents import remember, resolve
    from .rows import row_to_call

    if "hm_contents" in row:
        row = dict(row)
        remember(row.pop("hm_contents"))
    return row_to_call(resolve(conn, [row])[0])


def _short_matches(conn: sa.Connection, cols: Cols, prefix: str) -> list[str]:
    if any(c.name == "short_id" for c in cols):
        c = calls.c
        return list(conn.execute(sa.select(c.id).where(c.short_id >= prefix, c.short_id < prefix + "g")
                                 .order_by(c.id).limit(_CANDIDATES)).scalars())
    # A database written before short ids had a column (read as it is, see above): compute them.
    found: list[str] = []
    for (i,) in conn.execute(sa.select(calls.c.id).order_by(calls.c.id)).yield_per(5000):
        if short_id(i).startswith(prefix):
            found.append(i)
            if len(found) == _CANDIDATES:
                break
    return found


def iterate(conn: sa.Connection, cols: Cols, filters: Filters, chunk: int = 1000) -> Iterator[LMCall]:
    """Every matching call, oldest first, read in chunks (keyset pagination: constant memory)."""
    from .contents import resolve
    from .rows import row_to_call

    last: tuple[Any, str] | None = None
    c = calls.c
    while True:
        stmt = _select(cols).where(*filters.where(conn.dialect.name))
        if last is not None:
            stmt = stmt.where(sa.or_(c.started_at > last[0], sa.and_(c.started_at == last[0], c.id > last[1])))
        rows = conn.execute(stmt.order_by(c.started_at, c.id).limit(chunk)).mappings().all()
        for r in resolve(conn, rows):
            yield row_to_call(r)
        if len(rows) < chunk:
            return
        last = (rows[-1]["started_at"], rows[-1]["id"])


def count(conn: sa.Connection, filters: Filters) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(calls)
                            .where(*filters.where(conn.dialect.name))).scalar_one())


def aggregate(conn: sa.Connection, filters: Filters, by: str | None = None) -> list[dict[str, Any]]:
    """Per group (or overall): calls, errors, tokens, cost, latency mean/p50/p95, first and last call."""
    if by is not None and by not in GROUPS:
        raise ValueError(f"cannot group by {by!r}; expected one of {', '.join(GROUPS)}")
    c = calls.c
    group = c[by] if by is not None else sa.literal("all")
    ranked = (sa.select(
        group.label("g"), c.status, c.input_tokens, c.output_tokens, c.total_tokens, c.cost, c.duration_s,
        c.started_at,
        sa.func.row_number().over(partition_by=group, order_by=c.duration_s).label("rn"),
        sa.func.count().over(partition_by=group).label("n"),
    ).where(*filters.where(conn.dialect.name)).subquery())
    r = ranked.c

    def rank_value(pct: int) -> Any:  # nearest rank: the ceil(pct% * n)-th smallest
        return sa.func.max(sa.case((r.rn == (r.n * pct + 99) // 100, r.duration_s)))

    known = sa.func.coalesce(r.input_tokens, 0) + sa.func.coalesce(r.output_tokens, 0)
    tokens = sa.func.coalesce(r.total_tokens, known)
    stmt = sa.select(
        r.g, sa.func.count().label("calls"),
        sa.func.coalesce(sa.func.sum(sa.case((r.status == "error", 1), else_=0)), 0).label("errors"),
        sa.func.sum(r.input_tokens).label("input_tokens"), sa.func.sum(r.output_tokens).label("output_tokens"),
        sa.func.sum(tokens).label("total_tokens"), sa.func.sum(r.cost).label("cost"),
        sa.func.avg(r.duration_s).label("latency_mean_s"), rank_value(50).label("latency_p50_s"),
        rank_value(95).label("latency_p95_s"), sa.func.min(r.started_at).label("first"),
        sa.func.max(r.started_at).label("last"),
    ).group_by(r.g).order_by(sa.func.count().desc(), r.g)
    return [dict(row) for row in conn.execute(stmt).mappings()]


# -- sessions ---------------------------------------------------------------------------------------
# (their fields, cursor and times are in `direct`, which reads the usual SQLite list without SQLAlchemy)

def _sessions_source(aggregated: bool) -> Any:
    """The sessions as rows of SESSION_FIELDS: the writer's table, or (a database older than schema 4,
    read as it is) the calls grouped by session."""
    if aggregated:
        return sessions
    c = calls.c
    known = sa.func.coalesce(c.input_tokens, 0) + sa.func.coalesce(c.output_tokens, 0)
    tokens = sa.func.coalesce(c.total_tokens, known)
    return (sa.select(c.session.label("session"), sa.func.min(c.started_at).label("first_at"),
                      sa.func.max(c.started_at).label("last_at"), sa.func.count().label("calls"),
                      sa.func.sum(sa.case((c.status == "error", 1), else_=0)).label("errors"),
                      sa.func.sum(c.input_tokens).label("input_tokens"),
                      sa.func.sum(c.output_tokens).label("output_tokens"),
                      sa.func.sum(tokens).label("total_tokens"), sa.func.sum(c.cost).label("cost"))
            .where(c.session.isnot(None)).group_by(c.session).subquery("sessions"))


def session_list(conn: sa.Connection, limit: int, before: tuple[Any, str] | None = None, *,
                 aggregated: bool = True) -> list[dict[str, Any]]:
    """Sessions, most recent activity first (keyset on (last_at, session): any depth costs the same)."""
    src = _sessions_source(aggregated)
    s = src.c
    stmt = sa.select(*(s[n] for n in SESSION_FIELDS))
    if before is not None:
        t, sid = before
        stmt = stmt.where(s.last_at <= t, sa.or_(s.last_at < t, s.session < sid))
    stmt = stmt.order_by(s.last_at.desc(), s.session.desc()).limit(max(limit, 0))
    return [dict(r) for r in conn.execute(stmt).mappings()]


def session_info(conn: sa.Connection, session: str, *, aggregated: bool = True) -> dict[str, Any] | None:
    src = _sessions_source(aggregated)
    row = conn.execute(sa.select(*(src.c[n] for n in SESSION_FIELDS))
                       .where(src.c.session == session)).mappings().first()
    return None if row is None else dict(row)
