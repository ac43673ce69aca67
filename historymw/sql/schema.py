"""The tables of the history store, and forward migrations between their versions.

One row per call in `historymw_calls`: indexed columns for what people filter
on, JSON for the structured parts (JSONB on PostgreSQL). A call's messages are in
its `message_refs` (see `historymw.sql.contents`): its shared prefix by the digest
of a content in `historymw_contents` (each message stored there once), its last
message inline; `messages` holds what a writer before version 5 stored, and
anything that is not a list. Times are UTC:
`TIMESTAMPTZ` on PostgreSQL, Unix epoch seconds (REAL) on SQLite, where a
number sorts and compares fast and `datetime(started_at, 'unixepoch')` reads it.
`historymw_sessions` (one row per session) and `historymw_rollup` (per 5 minutes, model,
provider and status: counts, tokens, cost and a latency histogram) are aggregates of the calls,
kept by the writer in the same transaction as the calls (see `historymw.sql.aggregates`).
`historymw_schema` holds the version; `ensure_schema` creates the tables or
applies every migration from the stored version up to `SCHEMA_VERSION`, once,
under a lock (several workers may start at the same moment).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from . import StoreError

SCHEMA_VERSION = 7
CALLS = "historymw_calls"
SESSIONS = "historymw_sessions"
SESSIONS_SINCE = 4  # the schema version that added historymw_sessions and historymw_rollup
ROLLUP = "historymw_rollup"
CONTENTS = "historymw_contents"
VERSIONS = "historymw_schema"
# pg_advisory_xact_lock key: "hmw" + schema, so migrations of one database never run twice at once.
_PG_LOCK_KEY = 0x686D7700

Timestamp = sa.DateTime(timezone=True).with_variant(sa.Float(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")

metadata = sa.MetaData()

calls = sa.Table(
    CALLS, metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    # The 8 hex digits people type (see historymw.sql.ids): a function of `id`.
    sa.Column("short_id", sa.String(8)),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("ended_at", Timestamp, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("provider", sa.String),
    sa.Column("model", sa.String),
    sa.Column("operation", sa.String),
    sa.Column("session", sa.String),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("error_type", sa.String),
    sa.Column("error_message", sa.Text),
    sa.Column("output_text", sa.Text),
    sa.Column("finish_reason", sa.String),
    sa.Column("input_tokens", sa.Integer),
    sa.Column("output_tokens", sa.Integer),
    sa.Column("total_tokens", sa.Integer),
    sa.Column("cost", sa.Float),
    sa.Column("stream", sa.Boolean),
    sa.Column("time_to_first_token_s", sa.Float),
    sa.Column("trace_id", sa.String(32)),
    sa.Column("span_id", sa.String(16)),
    sa.Column("trace_flags", sa.Integer),
    sa.Column("source", sa.String),
    sa.Column("size_bytes", sa.Integer),
    sa.Column("response_id", sa.String),
    sa.Column("response_model", sa.String),
    sa.Column("cache_hit", sa.Boolean),
    sa.Column("server_address", sa.String),
    sa.Column("messages", Json),
    sa.Column("params", Json),
    sa.Column("outputs", Json),
    sa.Column("tags", Json),
    sa.Column("metadata", Json),
    # LMCall fields added after this schema version, until a migration gives them a column.
    sa.Column("extra", Json),
    # The call's messages (historymw.sql.contents): since schema 6 its shared prefix by one digest and
    # its last message inline, packed; written by schema 5, the digest of each message in order.
    sa.Column("message_refs", sa.LargeBinary),
)

# Partial indexes where most rows hold NULL (session, trace) or where one value is
# the one people look for (errors): smaller, and cheaper on every insert.
sa.Index("ix_historymw_calls_started_at", calls.c.started_at)
# (model, started_at): a model's newest calls (recent(model=...), the viewer's and CLI's model
# filter) are read in index order, not found by model and then all sorted by time. It replaces
# v6's index on model alone (a prefix of it), so a call costs only the time column more.
model_index = sa.Index("ix_historymw_calls_model_started_at", calls.c.model, calls.c.started_at)
sa.Index("ix_historymw_calls_session", calls.c.session,
         sqlite_where=calls.c.session.isnot(None), postgresql_where=calls.c.session.isnot(None))
sa.Index("ix_historymw_calls_errors", calls.c.status, calls.c.started_at,
         sqlite_where=calls.c.status == "error", postgresql_where=calls.c.status == "error")
short_index = sa.Index("ix_historymw_calls_short_id", calls.c.short_id)
trace_index = sa.Index("ix_historymw_calls_trace_id", calls.c.trace_id,
                       sqlite_where=calls.c.trace_id.isnot(None), postgresql_where=calls.c.trace_id.isnot(None))

# One row per session id: what `historymw sessions` lists, without grouping the calls.
sessions = sa.Table(
    SESSIONS, metadata,
    sa.Column("session", sa.String, primary_key=True),
    sa.Column("first_at", Timestamp, nullable=False),  # the first call's started_at
    sa.Column("last_at", Timestamp, nullable=False),  # the last call's started_at
    sa.Column("calls", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("input_tokens", sa.BigInteger),  # sums of the known values; NULL when none was known
    sa.Column("output_tokens", sa.BigInteger),
    sa.Column("total_tokens", sa.BigInteger, nullable=False),  # total_tokens, else input + output
    sa.Column("cost", sa.Float),
)
# Newest activity first, keyset-paged on (last_at, session).
sa.Index("ix_historymw_sessions_last_at", sessions.c.last_at, sessions.c.session)

# The overview's pre-aggregation: per ROLLUP_S seconds of started_at, model, provider and status
# ('' stands for no model or provider: key columns cannot be NULL). Latency is a histogram of
# LATENCY_BINS log-spaced bins (see `historymw.sql.aggregates.latency_bin`).
ROLLUP_S = 300
LATENCY_BINS = 64
HIST = tuple(f"l{i:02d}" for i in range(LATENCY_BINS))
rollup = sa.Table(
    ROLLUP, metadata,
    sa.Column("bucket", sa.BigInteger, primary_key=True),  # epoch seconds, a multiple of ROLLUP_S
    sa.Column("model", sa.String, primary_key=True),
    sa.Column("provider", sa.String, primary_key=True),
    sa.Column("status", sa.String(8), primary_key=True),
    sa.Column("calls", sa.BigInteger, nullable=False),
    sa.Column("input_tokens", sa.BigInteger),
    sa.Column("output_tokens", sa.BigInteger),
    sa.Column("total_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost", sa.Float),
    sa.Column("duration_s", sa.Float, nullable=False),  # the sum
    *(sa.Column(h, sa.Integer, nullable=False) for h in HIST),
)

contents = sa.Table(
    CONTENTS, metadata,
    sa.Column("hash", sa.LargeBinary(16), primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),  # a codec byte, then the (compressed) JSON
    # The latest started_at of the calls that refer to it: retention's test for orphans.
    sa.Column("last_used", Timestamp, nullable=False),
)
sa.Index("ix_historymw_contents_last_used", contents.c.last_used)

versions = sa.Table(
    VERSIONS, metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


def _add_columns(conn: sa.Connection, names: tuple[str, ...]) -> None:
    # SQLAlchemy Core has no ADD COLUMN construct; the statement is built only from
    # our own table's identifiers (quoted by the dialect) and types (compiled by it).
    prep = conn.dialect.identifier_preparer
    for name in names:
        col = calls.c[name]
        conn.exec_driver_sql(f"ALTER TABLE {prep.format_table(calls)} ADD COLUMN {prep.format_column(col)} "
                             f"{col.type.compile(dialect=conn.dialect)}")


def _v1_to_v2(conn: sa.Connection) -> None:
    """v2: the provider's response metadata, trace flags, `metadata` and `extra`; an index on trace_id."""
    _add_columns(conn, ("trace_flags", "response_id", "response_model", "cache_hit", "server_address",
                        "metadata", "extra"))
    trace_index.create(conn)


def _v2_to_v3(conn: sa.Connection) -> None:
    """v3: `short_id`, filled in for the rows already there (in chunks: constant memory), indexed."""
    from .ids import short_id

    _add_columns(conn, ("short_id",))
    c = calls.c
    update = (calls.update().where(c.id == sa.bindparam("b_id"))
              .values(short_id=sa.bindparam("b_short")))
    last = ""
    while True:
        ids = conn.execute(sa.select(c.id).where(c.id > last).order_by(c.id).limit(5000)).scalars().all()
        if not ids:
            break
        conn.execute(update, [{"b_id": i, "b_short": short_id(i)} for i in ids])
        last = ids[-1]
    short_index.create(conn)


def _v3_to_v4(conn: sa.Connection) -> None:
    """v4: `historymw_sessions` and `historymw_rollup`, filled from the calls already there (read in
    chunks: constant memory)."""
    from .aggregates import backfill

    metadata.create_all(conn, tables=[sessions, rollup])
    backfill(conn)


def _v4_to_v5(conn: sa.Connection) -> None:
    """v5: content-addressed messages: `historymw_contents`, and `message_refs` filled in for the rows
    already there (their `messages` moved into contents, in chunks: constant memory)."""
    from .contents import migrate_messages

    contents.create(conn)  # (with its index)
    _add_columns(conn, ("message_refs",))
    migrate_messages(conn)


def _v5_to_v6(conn: sa.Connection) -> None:
    """v6: `message_refs` packed (a list content for the shared prefix, the last message inline: see
    `historymw.sql.contents`). The rows already there keep their refs, which readers tell apart by
    their length; the version keeps a reader of schema 5, which could not read the new ones, out."""


def _v6_to_v7(conn: sa.Connection) -> None:
    """v7: the index on model becomes one on (model, started_at), which also serves what the old
    one did. Built in the migration's transaction: on PostgreSQL writers wait for it (a lock that
    blocks writes, not reads), seconds per million calls."""
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {conn.dialect.identifier_preparer.quote('ix_historymw_calls_model')}")
    model_index.create(conn, checkfirst=True)


# version N -> the step that turns a version-N database into version N+1.
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4,
                                                             4: _v4_to_v5, 5: _v5_to_v6, 6: _v6_to_v7}


def stored_version(conn: sa.Connection) -> int | None:
    """The schema version of the database; None when it has no historymw tables."""
    insp = sa.inspect(conn)
    if not insp.has_table(VERSIONS):
        if insp.has_table(CALLS):
            raise StoreError(f"table {CALLS} exists but {VERSIONS} does not: it was not created by historymw")
        return None
    row = conn.execute(sa.select(versions.c.version).where(versions.c.name == "calls")).first()
    return None if row is None else int(row[0])


def readable_columns(conn: sa.Connection) -> list[sa.Column[Any]]:
    """The columns of `historymw_calls` a reader can select, checked without writing anything.

    A database of an older version is read as it is (its missing columns read as NULL, which
    `row_to_call` leaves at the field's default): readers never migrate; the next writer does."""
    version = stored_version(conn)
    if version is None:
        raise StoreError("the database has no historymw tables (nothing has been recorded into it)")
    if version > SCHEMA_VERSION:
        raise StoreError(f"the history database has schema version {version}, newer than this historymw "
                         f"understands ({SCHEMA_VERSION}): upgrade historymw")
    if version == SCHEMA_VERSION:
        return list(calls.columns)
    present = {col["name"] for col in sa.inspect(conn).get_columns(CALLS)}
    return [col for col in calls.columns if col.name in present]


def ensure_schema(engine: Any, *, create: bool = True) -> int:
    """Create the tables or migrate them forward; returns the version now in force.

    Without `create`, a database with no historymw tables is a StoreError (a reader
    pointed at the wrong database should say so, not create tables in it).
    """
    with engine.connect().execution_options(historymw_write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
        version = stored_version(conn)
        if version is None:
            if not create:
                raise StoreError("the database has no historymw tables (nothing has been recorded into it)")
            metadata.create_all(conn)
            conn.execute(versions.insert().values(name="calls", version=SCHEMA_VERSION))
            return SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise StoreError(f"the history database has schema version {version}, newer than this historymw "
                             f"understands ({SCHEMA_VERSION}): upgrade historymw")
        for v in range(version, SCHEMA_VERSION):
            MIGRATIONS[v](conn)
            conn.execute(versions.update().where(versions.c.name == "calls").values(version=v + 1))
        return SCHEMA_VERSION
