"""What the viewer reads: pages of calls (keyset on (started_at, id)), one call, sessions, the overview.

Every statement is SQLAlchemy Core with bound parameters and selects only the columns
it shows. Pages never use OFFSET: a page starts after the (started_at, id) of the last
row seen, which the started_at index serves at any depth. Text search is a LIKE
(ILIKE on PostgreSQL) over the prompt and output text with `%` and `_` escaped: it has
no index, so it reads rows newest first until a page is full — fast when matches are
common, a scan of the whole time range when they are rare (bounded by the query timeout).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from ..sql.aggregates import bin_value
from ..sql.contents import messages_like, resolve
from ..sql.rows import to_datetime, to_stored_time
from ..sql.schema import HIST, ROLLUP_S, calls, rollup
from ..sql.schema import sessions as sessions_table
from .db import Database

PAGE_SIZE = 50
SESSION_CALLS_MAX = 500
SESSIONS_MAX = 100
BUCKETS = 48
LIST_COLUMNS = ("id", "started_at", "duration_s", "provider", "model", "session", "status", "error_type",
                "input_tokens", "output_tokens", "total_tokens", "cost", "stream", "messages", "message_refs",
                "tags", "output_text", "error_message")
# Long text columns a list shows only the start of (read as a prefix, not whole).
_SNIPPED = frozenset({"output_text", "error_message"})
DETAIL_COLUMNS = ("id", "started_at", "ended_at", "duration_s", "provider", "model", "operation", "session",
                  "status", "error_type", "error_message", "output_text", "finish_reason", "input_tokens",
                  "output_tokens", "total_tokens", "cost", "stream", "time_to_first_token_s", "trace_id",
                  "span_id", "source", "size_bytes", "response_id", "response_model", "cache_hit",
                  "server_address", "messages", "message_refs", "params", "outputs", "tags", "metadata", "extra")
SNIPPET_CHARS = 240


class BadQueryError(ValueError):
    """A filter or cursor the viewer cannot use; the message says which and why."""


@dataclass(frozen=True)
class Cursor:
    """A position in the (started_at, id) order: the stored started_at value exactly (an epoch float
    on SQLite, a datetime on PostgreSQL: rounding it would skip or repeat rows at page edges) and the id."""

    started: float | _dt.datetime
    id: str

    def encode(self) -> str:
        s = self.started
        return f"{s.isoformat() if isinstance(s, _dt.datetime) else repr(float(s))}~{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        head, sep, tail = text.partition("~")
        started: float | _dt.datetime | None = None
        try:
            started = float(head)
        except ValueError:
            try:
                started = _dt.datetime.fromisoformat(head)
            except ValueError:
                pass
        if isinstance(started, float) and not math.isfinite(started):
            started = None
        if isinstance(started, _dt.datetime) and started.tzinfo is None:
            started = started.replace(tzinfo=_dt.timezone.utc)
        if started is None or not sep or not tail or len(tail) > 64:
            raise BadQueryError(f"not a page cursor: {text[:80]!r}")
        return cls(started, tail)

    def stored(self, dialect: str) -> Any:
        s = self.started
        if dialect == "sqlite":
            return s.timestamp() if isinstance(s, _dt.datetime) else s
        return s if isinstance(s, _dt.datetime) else _dt.datetime.fromtimestamp(s, _dt.timezone.utc)


@dataclass(frozen=True)
class Query:
    """The filters of a page; None means any. Times are epoch seconds (UTC)."""

    model: str | None = None
    provider: str | None = None
    session: str | None = None
    status: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    since: float | None = None
    until: float | None = None
    text: str | None = None

    def where(self, db: Database) -> list[Any]:
        c = calls.c
        out: list[Any] = []
        for name in ("model", "provider", "session", "status"):
            value = getattr(self, name)
            if value is not None:
                out.append(c[name] == value)
        for key, value in self.tags:
            out.append(c.tags[key].as_string() == value)
        if self.since is not None:
            out.append(c.started_at >= to_stored_time(db.dialect, self.since))
        if self.until is not None:
            out.append(c.started_at < to_stored_time(db.dialect, self.until))
        if self.text:
            out.append(_text_match(db, self.text))
        return out


def _text_match(db: Database, text: str) -> Any:
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    c = calls.c
    targets: list[Any] = [c.output_text]
    if "messages" in db.columns:
        targets.append(sa.cast(c.messages, sa.Text))
    # Messages stored once each (schema 4): historymw.sql.contents searches them.
    refs = [messages_like(db.dialect, pattern, c.message_refs)] if "message_refs" in db.columns else []
    if db.dialect == "postgresql":
        return sa.or_(*(t.ilike(pattern, escape="\\") for t in targets), *refs)
    # SQLite's LIKE ignores ASCII case already.
    return sa.or_(*(t.like(pattern, escape="\\") for t in targets), *refs)


@dataclass
class Page:
    rows: list[dict[str, Any]]
    older: Cursor | None = None  # the cursor of the next (older) page, when there is one
    newer: Cursor | None = None  # the cursor of the previous (newer) page, when there is one
    newest: Cursor | None = None  # the newest row of this page (where live updates continue from)


def _key(db: Database, row: Any) -> Cursor:
    return Cursor(row["started_raw"], row["id"])


def _before(db: Database, cur: Cursor) -> Any:
    # started_at <= t AND NOT (started_at = t AND id >= i): a range on the started_at index, then a filter.
    t = cur.stored(db.dialect)
    c = calls.c
    return sa.and_(c.started_at <= t, sa.or_(c.started_at < t, c.id < cur.id))


def _after(db: Database, cur: Cursor) -> Any:
    t = cur.stored(db.dialect)
    c = calls.c
    return sa.and_(c.started_at >= t, sa.or_(c.started_at > t, c.id > cur.id))


def _select(db: Database, names: tuple[str, ...], *, snip: bool = False) -> Any:
    cols = [sa.func.substr(db.col(n), 1, SNIPPET_CHARS).label(n) if snip and n in _SNIPPED and n in db.columns
            else db.col(n) for n in names]
    return sa.select(*cols)


def page(db: Database, q: Query, *, before: Cursor | None = None, after: Cursor | None = None,
         limit: int = PAGE_SIZE) -> Page:
    """One page of calls, newest first: older than `before`, or newer than `after`, or the newest."""
    c = calls.c

    def read(conn: sa.Connection) -> Page:
        stmt = _select(db, LIST_COLUMNS, snip=True).where(*q.where(db))
        if after is not None:
            stmt = stmt.where(_after(db, after)).order_by(c.started_at, c.id)
        else:
            if before is not None:
                stmt = stmt.where(_before(db, before))
            stmt = stmt.order_by(c.started_at.desc(), c.id.desc())
        rows = [_list_row(r) for r in resolve(conn, conn.execute(stmt.limit(limit + 1)).mappings())]
        more = len(rows) > limit
        rows = rows[:limit]
        if after is not None:
            rows.reverse()
        p = Page(rows=rows)
        if rows:
            p.newest = _key(db, rows[0])
            last = _key(db, rows[-1])
            if after is not None:
                p.older = last
                p.newer = p.newest if more else None
            else:
                p.older = last if more else None
                p.newer = p.newest if before is not None else None
        return p

    return db.run(read)


def key_of(row: dict[str, Any]) -> Cursor:
    """The cursor of a row that a page or `newer_than` returned."""
    return Cursor(row["started_raw"], row["id"])


def newer_than(db: Database, q: Query, cur: Cursor, limit: int = 100) -> list[dict[str, Any]]:
    """Calls newer than `cur`, newest first (what live updates add to the top of the list)."""
    c = calls.c

    def read(conn: sa.Connection) -> list[dict[str, Any]]:
        stmt = (_select(db, LIST_COLUMNS, snip=True).where(*q.where(db), _after(db, cur))
                .order_by(c.started_at, c.id).limit(limit))
        rows = [_list_row(r) for r in resolve(conn, conn.execute(stmt).mappings())]
        rows.reverse()
        return rows

    return db.run(read)


def get_call(db: Database, call_id: str) -> dict[str, Any] | None:
    def read(conn: sa.Connection) -> dict[str, Any] | None:
        row = conn.execute(_select(db, DETAIL_COLUMNS).where(calls.c.id == call_id)).mappings().first()
        if row is None:
            return None
        d = resolve(conn, [row])[0]
        d["started_at"] = to_datetime(d["started_at"])
        if d.get("ended_at") is not None:
            d["ended_at"] = to_datetime(d["ended_at"])
        extra = d.get("extra")
        if isinstance(extra, dict):  # fields recorded by a newer historymw than this schema has columns for
            for k, v in extra.items():
                d.setdefault(k, v)
                if d[k] is None:
                    d[k] = v
        return d

    return db.run(read)


def session_calls(db: Database, session: str, limit: int = SESSION_CALLS_MAX) -> list[dict[str, Any]]:
    """One session's calls in time order (the first `limit`)."""
    c = calls.c

    def read(conn: sa.Connection) -> list[dict[str, Any]]:
        stmt = _select(db, LIST_COLUMNS).where(c.session == session).order_by(c.started_at, c.id).limit(limit + 1)
        return [_list_row(r) for r in resolve(conn, conn.execute(stmt).mappings())]

    return db.run(read)


def _epoch(v: Any) -> float | None:
    """A stored time as epoch seconds, exactly (through a datetime, SQLite's float would be rounded
    to the microsecond, and a range starting there would miss the row it starts at)."""
    if v is None:
        return None
    return to_datetime(v).timestamp() if isinstance(v, _dt.datetime) else float(v)


def newest_time(db: Database, q: Query | None = None) -> float | None:
    """When the newest call (matching `q`) started, from the started_at index."""
    def read(conn: sa.Connection) -> float | None:
        stmt = sa.select(sa.func.max(calls.c.started_at))
        if q is not None:
            stmt = stmt.where(*q.where(db))
        v = conn.execute(stmt).scalar()
        return _epoch(v)

    return db.run(read)


def oldest_time(db: Database, since: float | None) -> float | None:
    """When the oldest call (at or after `since`) started, from the started_at index."""
    def read(conn: sa.Connection) -> float | None:
        stmt = sa.select(sa.func.min(calls.c.started_at))
        if since is not None:
            stmt = stmt.where(calls.c.started_at >= to_stored_time(db.dialect, since))
        v = conn.execute(stmt).scalar()
        return _epoch(v)

    return db.run(read)


def sessions(db: Database, q: Query, limit: int = SESSIONS_MAX) -> list[dict[str, Any]]:
    """Sessions active in the query's range, most recently active first.

    From the writer's historymw_sessions table when the query filters by nothing but the range and
    the session (the sessions page's own filters): one index range, whatever the number of calls;
    each session's totals are then its whole history's. Otherwise (other filters, or a database
    older than that table) the range's calls grouped by session: totals of the matching calls."""
    if db.aggregates and not (q.model or q.provider or q.status or q.tags or q.text):
        return _sessions_from_table(db, q, limit)
    c = calls.c
    tokens = sa.func.coalesce(c.total_tokens,
                              sa.func.coalesce(c.input_tokens, 0) + sa.func.coalesce(c.output_tokens, 0))

    def read(conn: sa.Connection) -> list[dict[str, Any]]:
        last = sa.func.max(c.started_at)
        has_session = c.session.isnot(None)
        if db.dialect == "sqlite" and q.since is not None and q.session is None:
            # Written so that SQLite cannot use the session index for it (NULL || '' is NULL): it would
            # walk every session's calls in session order to group without sorting, where reading
            # only the range's calls by the started_at index is far less work.
            has_session = c.session.concat("").isnot(None)
        stmt = (sa.select(c.session, sa.func.min(c.started_at).label("first"), last.label("last"),
                          sa.func.count().label("calls"), sa.func.sum(tokens).label("tokens"),
                          sa.func.sum(c.cost).label("cost"),
                          sa.func.sum(sa.case((c.status == "error", 1), else_=0)).label("errors"))
                .where(has_session, *q.where(db)).group_by(c.session)
                .order_by(last.desc()).limit(limit))
        return _session_rows(conn, stmt)

    return db.run(read)


def _session_rows(conn: sa.Connection, stmt: Any) -> list[dict[str, Any]]:
    """The sessions page's rows, from the table or the grouped calls alike, with datetimes."""
    out = []
    for r in conn.execute(stmt).mappings():
        d = dict(r)
        d["first"], d["last"] = to_datetime(d["first"]), to_datetime(d["last"])
        out.append(d)
    return out


def _sessions_from_table(db: Database, q: Query, limit: int) -> list[dict[str, Any]]:
    t = sessions_table.c

    def read(conn: sa.Connection) -> list[dict[str, Any]]:
        stmt = sa.select(t.session, t.first_at.label("first"), t.last_at.label("last"), t.calls,
                         t.total_tokens.label("tokens"), t.cost, t.errors)
        if q.since is not None:
            stmt = stmt.where(t.last_at >= to_stored_time(db.dialect, q.since))
        if q.until is not None:
            stmt = stmt.where(t.first_at < to_stored_time(db.dialect, q.until))
        if q.session is not None:
            stmt = stmt.where(t.session == q.session)
        stmt = stmt.order_by(t.last_at.desc(), t.session.desc()).limit(limit)
        return _session_rows(conn, stmt)

    return db.run(read)


def distinct_values(db: Database, name: str, limit: int = 200) -> list[str]:
    """The distinct values of an indexed column, one index seek each (a loose index scan)."""
    col = calls.c[name]

    def read(conn: sa.Connection) -> list[str]:
        m = sa.select(sa.func.min(col).label("x")).cte("m", recursive=True)
        step = sa.select(sa.select(sa.func.min(col)).where(col > m.c.x).scalar_subquery()).where(m.c.x.isnot(None))
        m = m.union_all(step)
        return [str(v) for v in conn.execute(sa.select(m.c.x).where(m.c.x.isnot(None)).limit(limit)).scalars()]

    return db.run(read)


@dataclass
class Overview:
    since: float
    until: float
    width: float  # seconds per bucket
    buckets: list[dict[str, Any]] = field(default_factory=list)  # start, calls, errors, p50, p95
    models: list[dict[str, Any]] = field(default_factory=list)  # model, calls, errors, tokens, cost
    totals: dict[str, Any] = field(default_factory=dict)


def _epoch_expr(db: Database) -> Any:
    c = calls.c
    if db.dialect == "postgresql":
        return sa.extract("epoch", c.started_at)
    return sa.type_coerce(c.started_at, sa.Float)  # epoch seconds already


def overview(db: Database, q: Query) -> Overview:
    """Calls, errors and latency p50/p95 per time bucket, and calls, tokens and cost per model.

    Aggregated by the database over the range's rows (the started_at index), never fetched
    row by row. Percentiles are nearest-rank, as `historymw stats` computes them: PostgreSQL's
    `percentile_disc`; on SQLite (which has none, and whose window functions sort the whole
    range again) the k-th smallest latency of each bucket, one small indexed query per bucket.
    """
    if q.since is None or q.until is None:
        raise ValueError("the overview needs a time range")
    if db.aggregates and not (q.session or q.tags or q.text):
        return _overview_from_rollup(db, q)
    since, until = q.since, q.until
    width = max((until - since) / BUCKETS, 1e-3)
    ov = Overview(since=since, until=until, width=width)
    c = calls.c
    raw = (_epoch_expr(db) - since) / width
    pg = db.dialect == "postgresql"
    bucket = sa.func.floor(raw) if pg else sa.cast(raw, sa.Integer)
    where = q.where(db)
    errors = sa.func.sum(sa.case((c.status == "error", 1), else_=0))

    tokens = sa.func.coalesce(c.total_tokens,
                              sa.func.coalesce(c.input_tokens, 0) + sa.func.coalesce(c.output_tokens, 0))

    def read(conn: sa.Connection) -> None:
        # One pass for both breakdowns: per (bucket, model), summed here into buckets and models.
        stmt = (sa.select(bucket.label("b"), c.model, sa.func.count().label("calls"), errors.label("errors"),
                          sa.func.sum(tokens).label("tokens"), sa.func.sum(c.cost).label("cost"))
                .where(*where).group_by(bucket, c.model))
        per_bucket: dict[int, list[int]] = {}
        per_model: dict[Any, dict[str, Any]] = {}
        for row in conn.execute(stmt).mappings():
            pb = per_bucket.setdefault(int(row["b"]), [0, 0])
            pb[0] += row["calls"]
            pb[1] += row["errors"] or 0
            pm = per_model.setdefault(row["model"], {"model": row["model"], "calls": 0, "errors": 0,
                                                     "tokens": 0, "cost": None})
            pm["calls"] += row["calls"]
            pm["errors"] += row["errors"] or 0
            pm["tokens"] += int(row["tokens"] or 0)
            if row["cost"] is not None:
                pm["cost"] = (pm["cost"] or 0.0) + float(row["cost"])
        ov.models = sorted(per_model.values(), key=lambda m: (-m["calls"], str(m["model"])))[:20]
        pcts: dict[int, Any] = {}
        if pg:
            pstmt = (sa.select(bucket.label("b"),
                               sa.func.percentile_disc(0.5).within_group(c.duration_s).label("p50"),
                               sa.func.percentile_disc(0.95).within_group(c.duration_s).label("p95"))
                     .where(*where).group_by(bucket))
            pcts = {int(r["b"]): r for r in conn.execute(pstmt).mappings()}
        for i in range(BUCKETS):
            n, errs = per_bucket.get(i, (0, 0))
            b = {"start": since + i * width, "calls": n, "errors": errs, "p50": None, "p95": None}
            if i in pcts:
                b["p50"], b["p95"] = pcts[i]["p50"], pcts[i]["p95"]
            elif n and not pg:
                # Rows of bucket i: the index range around it (only one pair of bounds: SQLite would
                # range-scan the index on the wider one), then the same bucket expression, so that a
                # row on a boundary is counted and ranked in the same bucket.
                near = replace(q, since=max(since, since + (i - 0.01) * width),
                               until=min(until, since + (i + 1.01) * width))
                base = (sa.select(c.duration_s).where(*near.where(db), bucket == i)
                        .order_by(c.duration_s).limit(1))
                for pct in (50, 95):
                    k = max((n * pct + 99) // 100, 1) - 1
                    b[f"p{pct}"] = conn.execute(base.offset(k)).scalar()
            ov.buckets.append(b)

    db.run(read)
    ov.totals = {
        "calls": sum(b["calls"] for b in ov.buckets),
        "errors": sum(b["errors"] for b in ov.buckets),
        "tokens": sum(int(m["tokens"] or 0) for m in ov.models),
        "cost": sum(float(m["cost"] or 0.0) for m in ov.models),
    }
    return ov


def _overview_from_rollup(db: Database, q: Query) -> Overview:
    """The overview from the writer's 5-minute rollup (model, provider and status filters are among its
    keys): its cost follows the number of 5-minute buckets in the range, not the number of calls.

    The range is widened to whole 5-minute buckets (the page shows the range it drew) and chart buckets
    are whole multiples of them. Counts, tokens and cost are exact; p50/p95 are read from each
    bucket's latency histogram: the nearest-rank bin's middle, within 12% of the exact value."""
    assert q.since is not None and q.until is not None
    since = math.floor(q.since / ROLLUP_S) * ROLLUP_S
    until = max(math.ceil(q.until / ROLLUP_S) * ROLLUP_S, since + ROLLUP_S)
    width = math.ceil((until - since) / BUCKETS / ROLLUP_S) * ROLLUP_S
    n_buckets = math.ceil((until - since) / width)
    ov = Overview(since=float(since), until=float(until), width=float(width))
    r = rollup.c
    where = [r.bucket >= since, r.bucket < until]
    for name in ("model", "provider", "status"):
        value = getattr(q, name)
        if value is not None:
            where.append(r[name] == value)
    b = ((r.bucket - since) // width).label("b")
    stmt = (sa.select(b, r.model, r.status, sa.func.sum(r.calls).label("calls"),
                      sa.func.sum(r.total_tokens).label("tokens"), sa.func.sum(r.cost).label("cost"),
                      *(sa.func.sum(r[h]).label(h) for h in HIST))
            .where(*where).group_by(b, r.model, r.status))

    def read(conn: sa.Connection) -> list[Any]:
        return list(conn.execute(stmt))

    rows = db.run(read)
    # per chart bucket: calls, errors, latency histogram
    per_bucket: list[tuple[list[int], list[int]]] = [([0, 0], [0] * len(HIST)) for _ in range(n_buckets)]
    per_model: dict[Any, dict[str, Any]] = {}
    for row in rows:
        i, model, status, n, tokens, cost = row[:6]
        hist = row[6:]
        counts, bins = per_bucket[min(int(i), n_buckets - 1)]
        errs = n if status == "error" else 0
        counts[0] += int(n)
        counts[1] += int(errs)
        for j, y in enumerate(hist):
            if y:
                bins[j] += int(y)
        key = model or None  # '' in the rollup is a call without a model
        pm = per_model.setdefault(key, {"model": key, "calls": 0, "errors": 0, "tokens": 0, "cost": None})
        pm["calls"] += int(n)
        pm["errors"] += int(errs)
        pm["tokens"] += int(tokens or 0)
        if cost is not None:
            pm["cost"] = (pm["cost"] or 0.0) + float(cost)
    ov.models = sorted(per_model.values(), key=lambda m: (-m["calls"], str(m["model"])))[:20]
    for i, ((n, errs), bins) in enumerate(per_bucket):
        ov.buckets.append({"start": float(since + i * width), "calls": n, "errors": errs,
                           "p50": _hist_rank(bins, n, 50), "p95": _hist_rank(bins, n, 95)})
    ov.totals = {"calls": sum(int(m["calls"]) for m in per_model.values()),
                 "errors": sum(int(m["errors"]) for m in per_model.values()),
                 "tokens": sum(int(m["tokens"]) for m in per_model.values()),
                 "cost": sum(float(m["cost"] or 0.0) for m in per_model.values())}
    return ov


def _hist_rank(hist: list[int], n: int, pct: int) -> float | None:
    """The nearest-rank percentile (the ceil(pct% * n)-th smallest) as its histogram bin's middle."""
    if not n:
        return None
    k = max((n * pct + 99) // 100, 1)
    seen = 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= k:
            return bin_value(i)
    return bin_value(len(hist) - 1)


def in_window(q: Query, since: float | None, until: float | None) -> Query:
    return replace(q, since=since, until=until)


# -- turning rows into what the templates show ------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("text"))
    return "" if content is None else str(content)


def first_line(text: Any, limit: int = 140) -> str:
    s = _text_of(text).strip()
    line = s.splitlines()[0] if s else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def prompt_of(messages: Any) -> str:
    """The prompt a call answered: its last user message (else its last message)."""
    if not isinstance(messages, list) or not messages:
        return ""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text_of(m.get("content"))
    last = messages[-1]
    return _text_of(last.get("content")) if isinstance(last, dict) else str(last)


def _list_row(d: dict[str, Any]) -> dict[str, Any]:
    d["started_raw"] = d["started_at"]
    d["started_at"] = to_datetime(d["started_at"])
    messages = d.pop("messages", None)
    d["prompt_full"] = prompt_of(messages)
    d["prompt"] = first_line(d["prompt_full"])
    d["output"] = first_line(d.get("output_text") or "")
    return d


def parse_time(text: str, what: str) -> float:
    """A time from a form: ISO 8601 (a time without zone is UTC) or epoch seconds."""
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise BadQueryError(f"bad {what} time {text[:40]!r}: expected e.g. 2026-05-01T12:00 (UTC)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()
