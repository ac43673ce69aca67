"""`historymw sessions [ID]` read without SQLAlchemy: SQLite with `sqlite3`, PostgreSQL with libpq.

`historymw sessions` is typed by people, and its cost is its imports: SQLAlchemy's
alone is about 850 million instructions (callgrind), psycopg's 560 million, several
times what the rest of the command does, query included. So the usual case is read
here, with the statements below: a SQLite file named by a plain URL, or a PostgreSQL
URL that `postgres_params` parses exactly as SQLAlchemy does (read by `direct_pg`,
through libpq), of a schema version this module knows, that has the writer's
`historymw_sessions` table. Read here: the sessions list, and one session's totals
and its calls' one-line summaries (`CallLine`: no messages, so no pydantic model
either).

Anything else (another database, a URL this module does not parse exactly as
SQLAlchemy does, a missing file, a server that refuses the connection, an older or
newer schema, an error of any kind) is not answered here: the caller reads through
`historymw.store.Store`, which says what is wrong in its own words, so no error
message is written twice.

Also here, because they need no SQLAlchemy: the sessions' fields, their cursor and
stored times as datetimes (`query` and `store` use them).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, unquote

from . import PG_CONNECT_TIMEOUT_S, SQLITE_BUSY_TIMEOUT_S

SESSION_FIELDS = ("session", "first_at", "last_at", "calls", "errors", "input_tokens", "output_tokens",
                  "total_tokens", "cost")
# Names of `schema`, which imports SQLAlchemy: tests/test_cli_sessions.py checks that they agree. A
# schema newer than KNOWN_VERSION is read by `Store` (which may know it, or refuses it).
VERSIONS_TABLE, SESSIONS_TABLE = "historymw_schema", "historymw_sessions"
SESSIONS_SINCE, KNOWN_VERSION = 4, 7
_UTC = _dt.timezone.utc
# A SQLite URL whose database SQLAlchemy takes as it is written: no query, no %-escapes to decode.
_PLAIN_SQLITE = re.compile(r"sqlite(?:\+pysqlite)?:///([^?%]+)")
_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgres+psycopg")  # as engine.parse_url
# sqlalchemy.engine.url._parse_url's pattern, as it is: the same URL splits into the same parts.
_SA_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
        """,
    re.X,
)


if TYPE_CHECKING:
    class CallLine(NamedTuple):
        """What a one-line listing of a call shows (the same attributes an LMCall has)."""

        id: str
        started_at: _dt.datetime
        duration_s: float
        model: str | None
        status: str
        total_tokens: int | None
        cost: float | None
        session: str | None
        output_text: str | None
        error_type: str | None
        error_message: str | None
else:
    # The same type, made by collections.namedtuple: typing.NamedTuple turns each (postponed) annotation
    # into a ForwardRef, compiling it, which cost the command 11.7M instructions (a twentieth of it).
    from collections import namedtuple

    CallLine = namedtuple("CallLine", ["id", "started_at", "duration_s", "model", "status", "total_tokens", "cost",
                                       "session", "output_text", "error_type", "error_message"])


class UnreadableError(Exception):
    """The direct reader failed: read through `Store` instead (it reports the error)."""


def to_datetime(value: Any) -> _dt.datetime:
    """A stored time (epoch float on SQLite, datetime on PostgreSQL) as an aware UTC datetime (here,
    not in `rows`, which defines the LMCall model: `rows` and the viewer import it from here)."""
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=_UTC)
    return _dt.datetime.fromtimestamp(float(value), _UTC)


def encode_session_cursor(last_at: Any, session: str) -> str:
    """A position in the sessions' (last_at, session) order, newest first: the stored time exactly (an
    epoch float on SQLite, a datetime on PostgreSQL), then the id (which may hold any character)."""
    return f"{last_at.isoformat() if isinstance(last_at, _dt.datetime) else repr(float(last_at))}~{session}"


def decode_session_cursor(text: str, dialect: str) -> tuple[Any, str]:
    head, sep, session = text.partition("~")
    when: Any = None
    try:
        when = float(head)
    except ValueError:
        try:
            when = _dt.datetime.fromisoformat(head)
        except ValueError:
            pass
    if when is None or not sep:
        raise ValueError(f"not a sessions cursor: {text[:80]!r} (pass the 'next' value a page printed)")
    if dialect == "sqlite" and isinstance(when, _dt.datetime):
        when = when.timestamp()
    elif dialect != "sqlite" and not isinstance(when, _dt.datetime):
        when = _dt.datetime.fromtimestamp(when, _UTC)
    return when, session


def summary(r: dict[str, Any]) -> dict[str, Any]:
    """A session's stored row (SESSION_FIELDS) as the fields of `store.SessionSummary`."""
    return {"id": r["session"], "first_at": to_datetime(r["first_at"]), "last_at": to_datetime(r["last_at"]),
            "calls": int(r["calls"]), "errors": int(r["errors"] or 0),
            "input_tokens": None if r["input_tokens"] is None else int(r["input_tokens"]),
            "output_tokens": None if r["output_tokens"] is None else int(r["output_tokens"]),
            "total_tokens": int(r["total_tokens"] or 0), "cost": None if r["cost"] is None else float(r["cost"]),
            "cursor": encode_session_cursor(r["last_at"], r["session"])}


def sqlite_file(url: str) -> Path | None:
    """The file a plain SQLite URL names (as `engine.parse_url` + `engine.sqlite_path` find it);
    None for any other URL, an in-memory database or a `file:` URI."""
    m = _PLAIN_SQLITE.fullmatch(url)
    if m is None:
        return None
    db = m.group(1)
    if db == ":memory:" or db.startswith("file:"):
        return None
    return Path(os.path.expanduser(db) if db.startswith("~") else db)


def postgres_params(url: str) -> dict[str, str] | None:
    """libpq's connection parameters for a PostgreSQL URL: what SQLAlchemy's psycopg dialect passes
    to `psycopg.connect` (`create_connect_args`, plus the engine's connect_timeout), as strings. None
    for another URL, and for forms whose reading involves more than that: several hosts (`host` or
    `port` in the query), a repeated query key, a port that is not a number."""
    m = _SA_URL.match(url)
    if m is None or m.group("name") not in _SCHEMES:
        return None
    params: dict[str, str] = {}
    for key, value in parse_qsl(m.group("query") or ""):
        if key in params or key in ("host", "port"):
            return None
        params[key] = value
    port = m.group("port")
    if port and not port.isdigit():
        return None
    host = m.group("ipv4host") or m.group("ipv6host")
    parts = {"host": host, "dbname": m.group("database"), "user": m.group("username"),
             "password": m.group("password"), "port": str(int(port)) if port and int(port) else None}
    given = {k: unquote(v) if k in ("dbname", "user", "password") else v for k, v in parts.items() if v}
    return {k: v for k, v in given.items() if v} | params | {"connect_timeout": str(PG_CONNECT_TIMEOUT_S)}


def known_url(url: str) -> bool:
    """Whether a direct reader parses this URL (exactly as SQLAlchemy does, which then takes it as valid)."""
    return sqlite_file(url) is not None or postgres_params(url) is not None


# The statements both direct readers run (SQLite's `?` placeholders; the PostgreSQL reader numbers them).
# `query.session_list` / `session_info` / `iterate` build the Store's: tests/test_cli_sessions.py checks
# that both read the same pages, rows and cursors from each database.
_VERSION = f"SELECT version FROM {VERSIONS_TABLE} WHERE name = 'calls'"
_LIST = (f"SELECT {', '.join(SESSION_FIELDS)} FROM {SESSIONS_TABLE}{{where}} "
         "ORDER BY last_at DESC, session DESC LIMIT ?")
_BEFORE = " WHERE last_at <= ? AND (last_at < ? OR session < ?)"
_ONE = f"SELECT {', '.join(SESSION_FIELDS)} FROM {SESSIONS_TABLE} WHERE session = ?"
_LINES = (f"SELECT {', '.join(CallLine._fields)} FROM historymw_calls WHERE session = ? "
          "ORDER BY started_at, id")


def known_version(version: Any) -> bool:
    """Whether the direct readers read a store of this schema version (one with the sessions table)."""
    return isinstance(version, int) and not isinstance(version, bool) and SESSIONS_SINCE <= version <= KNOWN_VERSION


class DirectSessions:
    """What `historymw sessions [ID]` reads (as `Store`'s methods of the same names), over one open
    connection; `_fetch` runs a statement of this module. A session it does not find is UnreadableError:
    the Store says so, in its words."""

    dialect = "sqlite"  # how a cursor's time is bound (`decode_session_cursor`)

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        raise NotImplementedError

    def session_rows(self, limit: int, *, before: str | None = None) -> list[dict[str, Any]]:
        key = None if before is None else decode_session_cursor(before, self.dialect)  # ValueError: a bad cursor
        if key is None:
            rows = self._fetch(_LIST.format(where=""), (max(limit, 0),))
        else:
            t, sid = key
            rows = self._fetch(_LIST.format(where=_BEFORE), (t, t, sid, max(limit, 0)))
        return [summary(dict(zip(SESSION_FIELDS, r, strict=True))) for r in rows]

    def session_row(self, session_id: str) -> dict[str, Any]:
        rows = self._fetch(_ONE, (session_id,))
        if not rows:
            raise UnreadableError(f"no session {session_id!r}")
        return summary(dict(zip(SESSION_FIELDS, rows[0], strict=True)))

    def calls(self, *, session: str) -> list[CallLine]:
        """The session's calls, oldest first, as one-line summaries."""
        return [CallLine(r[0], to_datetime(r[1]), *r[2:]) for r in self._fetch(_LINES, (session,))]

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> DirectSessions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteSessions(DirectSessions):
    """A SQLite file, opened read-only (`mode=ro`, as `Store` opens it)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        import sqlite3

        try:
            return list(self._conn.execute(sql, params).fetchall())
        except (sqlite3.Error, OverflowError) as exc:
            raise UnreadableError(str(exc)) from None

    def close(self) -> None:
        self._conn.close()


def open_sessions(url: str) -> DirectSessions | None:
    """A direct reader of the sessions at `url`, or None when this module does not read that store."""
    if url.startswith("postgres"):
        from . import direct_pg  # libpq through ctypes: see there

        return direct_pg.open_sessions(url)
    path = sqlite_file(url)
    if path is None or not path.is_file():
        return None
    import sqlite3
    import urllib.parse

    try:
        conn = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        row = conn.execute(_VERSION).fetchone()
    except sqlite3.Error:  # e.g. no such table: not a historymw database, or not one of its files
        row = None
    if row is None or not known_version(row[0]):
        conn.close()
        return None
    return SqliteSessions(conn)
