"""`historymw sessions [ID]` of a PostgreSQL store, read through libpq with `ctypes`: no psycopg import.

`import psycopg` alone executes about 560 million instructions (callgrind): its errors module
imports asyncio, its binary package reads its own version with importlib.metadata, its pq
package imports ctypes.util (subprocess, tempfile...) and typing_extensions. That is more than
twice what the rest of the command costs. psycopg talks to the server through libpq, the
PostgreSQL client library, and so does this module: the same library (psycopg[binary]'s own
copy when it is installed, else the system's), the same connection parameters (taken from
the URL as SQLAlchemy's psycopg dialect takes them), a dozen of its functions called with
ctypes. libpq does the protocol, authentication, TLS, ~/.pgpass and the PG* variables.

Only the usual case is read here: a URL this module parses exactly as SQLAlchemy does (one
host; see `connect_params`), a server that accepts the connection, a schema version
`direct` knows, values of the types it converts as psycopg does. Anything else (no libpq,
a failed connection, an unknown type, an error of any kind) returns None or raises
`direct.UnreadableError` before anything is printed: the command then reads through
`Store` (SQLAlchemy and psycopg), which says what is wrong in its own words. The password
is passed to libpq, never printed or put in an error here.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .direct import _VERSION, DirectSessions, UnreadableError, known_version, postgres_params

# libpq's values: ConnStatusType CONNECTION_OK, ExecStatusType PGRES_COMMAND_OK and PGRES_TUPLES_OK.
_CONNECTION_OK, _COMMAND_OK, _TUPLES_OK = 0, 1, 2
_UTC = _dt.timezone.utc
# A timestamp as PostgreSQL writes it in the ISO DateStyle (the default), with its UTC offset for
# timestamptz. Other styles, BC dates, years past 9999 and infinity do not match: the Store reads those.
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
                   r"(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?")


# -- libpq -------------------------------------------------------------------------------------------

def _libraries() -> Iterator[str]:
    """Where libpq may be: psycopg[binary]'s own copy (the `postgres` extra installs it) beside the first
    psycopg_binary package on sys.path, then the system's, by the names the dynamic loader knows."""
    for entry in sys.path:
        base = entry or "."
        if not os.path.isdir(os.path.join(base, "psycopg_binary")):
            continue
        for folder in (os.path.join(base, "psycopg_binary.libs"), os.path.join(base, "psycopg_binary", ".dylibs")):
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                continue
            yield from (os.path.join(folder, n) for n in names if n.startswith("libpq"))
        break
    yield from ("libpq.so.5", "libpq.5.dylib")


# Notices (warnings the server sends) are dropped, not written to stderr by libpq's default processor.
_NOTICE_PROCESSOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)
_IGNORE_NOTICE = _NOTICE_PROCESSOR(lambda _arg, _message: None)


def _declare(lib: Any) -> Any:
    """The functions used here, with their C signatures (pointers as c_void_p: never truncated to int)."""
    ptr, text, num = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    texts = ctypes.POINTER(ctypes.c_char_p)
    signatures: list[tuple[str, Any, list[Any]]] = [
        ("PQconnectdbParams", ptr, [texts, texts, num]),
        ("PQstatus", num, [ptr]),
        ("PQparameterStatus", text, [ptr, text]),
        ("PQsetNoticeProcessor", ptr, [ptr, _NOTICE_PROCESSOR, ptr]),
        ("PQfinish", None, [ptr]),
        ("PQexecParams", ptr, [ptr, text, num, ptr, texts, ptr, ptr, num]),
        ("PQresultStatus", num, [ptr]),
        ("PQntuples", num, [ptr]),
        ("PQnfields", num, [ptr]),
        ("PQftype", ctypes.c_uint, [ptr, num]),
        ("PQgetvalue", text, [ptr, num, num]),
        ("PQgetisnull", num, [ptr, num, num]),
        ("PQclear", None, [ptr]),
    ]
    for name, restype, argtypes in signatures:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _load() -> Any | None:
    for path in _libraries():
        try:
            return _declare(ctypes.CDLL(path))
        except (OSError, AttributeError):  # not there, not loadable, or a libpq without these functions
            continue
    return None


# -- values ------------------------------------------------------------------------------------------

def _timestamp(raw: bytes) -> _dt.datetime:
    """timestamptz (with its offset: aware) or timestamp (naive), as psycopg loads them."""
    m = _TIME.fullmatch(raw.decode())
    if m is None:
        raise UnreadableError("a time this reader does not parse")
    y, mo, d, h, mi, s = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    micro = int((m.group(7) or "0").ljust(6, "0"))
    tz = None
    if m.group(8):
        offset = _dt.timedelta(hours=int(m.group(9)), minutes=int(m.group(10) or 0), seconds=int(m.group(11) or 0))
        tz = _dt.timezone(-offset if m.group(8) == "-" else offset) if offset else _UTC
    return _dt.datetime(y, mo, d, h, mi, s, micro, tzinfo=tz)


def _text(raw: bytes) -> str:
    return raw.decode()


def _bool(raw: bytes) -> bool:
    return raw == b"t"


# By type OID (pg_type): the Python value psycopg gives for each type the readers select. Any other
# type (numeric, json...) is UnreadableError: the Store reads it.
_LOADERS: dict[int, Callable[[bytes], Any]] = {
    16: _bool, 18: _text, 19: _text, 25: _text, 1043: _text,  # bool, "char", name, text, varchar
    20: int, 21: int, 23: int,  # int8, int2, int4
    700: float, 701: float,  # float4, float8
    1114: _timestamp, 1184: _timestamp,  # timestamp, timestamptz
}


def _param(value: Any) -> bytes:
    """A parameter in PostgreSQL's text form (the server infers its type from the statement)."""
    if isinstance(value, _dt.datetime):
        text = value.isoformat()
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, (int, str)):
        text = str(value)
    else:
        raise UnreadableError(f"no text form for {type(value).__name__}")
    data = text.encode()
    if b"\0" in data:  # libpq takes C strings: the value would be cut short there
        raise UnreadableError("a NUL character in a parameter")
    return data


def _numbered(sql: str) -> bytes:
    """A statement of `direct` (`?` placeholders) with PostgreSQL's ($1, $2, ...)."""
    head, *rest = sql.split("?")
    return (head + "".join(f"${i}{part}" for i, part in enumerate(rest, 1))).encode()


class PostgresSessions(DirectSessions):
    """One libpq connection, in a read-only transaction (as the Store's engine reads)."""

    dialect = "postgresql"

    def __init__(self, lib: Any, conn: int) -> None:
        self._lib, self._conn = lib, conn

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        lib = self._lib
        values = [_param(p) for p in params]
        res = lib.PQexecParams(self._conn, _numbered(sql), len(values), None,
                               (ctypes.c_char_p * len(values))(*values) if values else None, None, None, 0)
        if not res:
            raise UnreadableError("no result (out of memory)")
        try:
            if lib.PQresultStatus(res) != _TUPLES_OK:
                raise UnreadableError("the statement failed")
            loaders = [_LOADERS.get(lib.PQftype(res, j)) for j in range(lib.PQnfields(res))]
            if None in loaders:
                raise UnreadableError("a column of a type this reader does not convert")
            getvalue, isnull = lib.PQgetvalue, lib.PQgetisnull
            rows = []
            for i in range(lib.PQntuples(res)):
                row = []
                for j, load in enumerate(loaders):
                    raw = getvalue(res, i, j)
                    # NULL reads as "": only an empty value needs the second call.
                    row.append(None if not raw and isnull(res, i, j) else load(raw))  # type: ignore[misc]
                rows.append(row)
            return rows
        except (ValueError, OverflowError) as exc:  # UnicodeDecodeError too
            raise UnreadableError(f"a value this reader does not convert: {type(exc).__name__}") from None
        finally:
            lib.PQclear(res)

    def _command(self, sql: bytes) -> None:
        res = self._lib.PQexecParams(self._conn, sql, 0, None, None, None, None, 0)
        try:
            if not res or self._lib.PQresultStatus(res) != _COMMAND_OK:
                raise UnreadableError("the statement failed")
        finally:
            self._lib.PQclear(res)

    def close(self) -> None:
        if self._conn:
            self._lib.PQfinish(self._conn)
            self._conn = 0


def open_sessions(url: str) -> PostgresSessions | None:
    """A direct reader of the PostgreSQL store at `url`, or None (then the Store reads it)."""
    params = postgres_params(url)
    if params is None:
        return None
    params.setdefault("client_encoding", "UTF8")  # text is decoded as UTF-8 (checked below)
    pairs = [(k.encode(), v.encode()) for k, v in params.items()]
    if any(b"\0" in k + v for k, v in pairs):
        return None
    lib = _load()
    if lib is None:
        return None
    keywords = (ctypes.c_char_p * (len(pairs) + 1))(*(k for k, _ in pairs), None)
    values = (ctypes.c_char_p * (len(pairs) + 1))(*(v for _, v in pairs), None)
    conn = lib.PQconnectdbParams(keywords, values, 0)
    if not conn:
        return None
    reader = PostgresSessions(lib, conn)
    try:
        lib.PQsetNoticeProcessor(conn, _IGNORE_NOTICE, None)
        if lib.PQstatus(conn) != _CONNECTION_OK or lib.PQparameterStatus(conn, b"client_encoding") != b"UTF8":
            raise UnreadableError("not connected, or not in UTF-8")
        reader._command(b"BEGIN READ ONLY")
        rows = reader._fetch(_VERSION, ())
        if len(rows) != 1 or not known_version(rows[0][0]):
            raise UnreadableError("not a schema version this reader knows")
    except UnreadableError:
        reader.close()
        return None
    return reader
