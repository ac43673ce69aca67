"""Engines for the history database: URL checks, SQLite set-up, PostgreSQL options.

SQLite: the file is created by us with mode 0600 before SQLite opens it (the
history holds prompts); WAL lets readers work while a writer writes; a busy
timeout lets several processes share one file; write transactions take the
write lock up front (BEGIN IMMEDIATE), which is what makes the busy timeout
work for writers (a deferred transaction that upgrades to write can fail
with SQLITE_BUSY at once instead of waiting).
PostgreSQL: psycopg 3, a connect timeout (a dead server must not hang the
export worker), pre-ping so that connections broken by a restart are replaced.
Readers (`read_only=True`) open SQLite with a `mode=ro` URI and PostgreSQL in
read-only sessions: reading a file never creates, converts (WAL) or migrates it.
"""

from __future__ import annotations

import os
import urllib.parse
import weakref
from pathlib import Path
from typing import Any

from ..errors import ConfigError, require
from . import PG_CONNECT_TIMEOUT_S as PG_CONNECT_TIMEOUT_S  # re-exported: engine.PG_CONNECT_TIMEOUT_S
from . import SQLITE_BUSY_TIMEOUT_S as SQLITE_BUSY_TIMEOUT_S
from . import StoreError

# Connection execution option that makes a SQLite transaction BEGIN IMMEDIATE.
WRITE = {"historymw_write": True}


def _sqlalchemy(what: str) -> Any:
    return require("sqlalchemy", what=what, extra="sql")


def parse_url(url: str) -> Any:
    """The SQLAlchemy URL for a history store, or ConfigError saying what is accepted."""
    sa = _sqlalchemy("The SQL store")
    try:
        u = sa.engine.make_url(url)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises several types for a malformed URL
        raise ConfigError(
            f"not a database URL: {url!r}; expected sqlite:///path/to/history.db "
            "or postgresql+psycopg://user@host:5432/dbname") from None
    # From the URL's text, not u.get_driver_name(): that loads the dialect, and an unknown scheme
    # (mongodb://) would fail there with SQLAlchemy's NoSuchModuleError instead of this message.
    backend, _, driver = u.drivername.partition("+")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise ConfigError(f"unsupported SQLite driver in {u.drivername!r}; use sqlite:///path/to/history.db")
        db = u.database
        if db and db.startswith("~"):
            # Expanded here, once: what SQLite opens and what historymw creates and chmods are one file.
            u = u.set(database=os.path.expanduser(db))
        return u
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise ConfigError(f"unsupported PostgreSQL driver in {u.drivername!r}; "
                              "use postgresql+psycopg://user@host:5432/dbname (psycopg 3)")
        return u.set(drivername="postgresql+psycopg")  # psycopg 3 is the supported driver
    raise ConfigError(f"unsupported database URL scheme {u.drivername!r}; expected sqlite:///path/to/history.db "
                      "or postgresql+psycopg://user@host:5432/dbname")


def describe(url: Any) -> str:
    """The URL without its password, for messages."""
    return str(url.render_as_string(hide_password=True))


def sqlite_path(url: Any) -> Path | None:
    """The database file of a SQLite URL; None for an in-memory database."""
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def _create_private_file(path: Path) -> None:
    if not path.parent.is_dir():
        raise StoreError(f"cannot create the history database {path}: directory {path.parent} does not exist")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return  # another process created it first
    except OSError as exc:
        raise StoreError(f"cannot create the history database {path}: {exc.strerror}") from None
    os.close(fd)


def make_engine(url: str, *, create: bool, read_only: bool = False) -> Any:
    """An engine for the store at `url`. With `create`, a missing SQLite file is created (mode 0600);
    without it, a missing file is a StoreError (readers must not leave empty databases behind).
    With `read_only`, nothing is ever written: SQLite is opened `mode=ro`, PostgreSQL read-only."""
    sa = _sqlalchemy("The SQL store")
    u = parse_url(url)
    if u.get_backend_name() == "sqlite":
        if read_only:
            return _sqlite_reader(sa, u)
        return _sqlite_engine(sa, u, create)
    require("psycopg", what="The PostgreSQL store", extra="postgres")
    connect_args: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    if read_only:
        return pg_reader(sa, u, connect_args)
    # "format" (%s) lets the export path bind plain tuples instead of a dict per row.
    return sa.create_engine(u, pool_pre_ping=True, paramstyle="format", connect_args=connect_args,
                            pool_size=2, max_overflow=4)


def pg_reader(sa: Any, u: Any, connect_args: dict[str, Any], *, options: str = "", pool_size: int = 2,
              max_overflow: int = 4, paramstyle: str | None = "format") -> Any:
    """A read-only PostgreSQL engine whose read of one call is one round trip to the server
    (the store's readers and the viewer's; `options`: more server settings, `-c name=value ...`).

    A read in a transaction costs four (the pool's pre-ping, BEGIN READ ONLY, the query, ROLLBACK):
    1.2 ms of a 1 ms budget on a loaded machine. So statements run in autocommit, in sessions that
    are read-only (`default_transaction_read_only`, which a statement cannot leave), and there is
    no pre-ping: a connection the server dropped fails its query, which the caller (`Store._read`,
    the viewer's `Database.run`) runs again once on a new connection (`connection_invalidated`).
    Autocommit loses no consistency readers had: a transaction at READ COMMITTED gives each
    statement its own snapshot too.

    `paramstyle`: "format" (%s) binds plain tuples; None keeps psycopg's named parameters, which
    GROUP BY needs when it repeats a selected expression that holds a parameter (with positional
    ones each copy gets its own $n, and PostgreSQL no longer sees one expression)."""
    options = f"-c default_transaction_read_only=on {options}".strip()
    given = u.query.get("options")  # the URL's own (a search_path, say) are kept, ours added
    if given:
        options = f"{given if isinstance(given, str) else ' '.join(given)} {options}"
        u = u.difference_update_query(["options"])
    style = {"paramstyle": paramstyle} if paramstyle else {}
    return sa.create_engine(u, isolation_level="AUTOCOMMIT", connect_args={**connect_args, "options": options},
                            pool_size=pool_size, max_overflow=max_overflow, **style)


def _sqlite_reader(sa: Any, u: Any) -> Any:
    """A read-only engine: SQLite's `mode=ro` cannot create the file, change its journal mode or
    write a page, whatever the code above it does."""
    import sqlite3

    path = sqlite_path(u)
    if path is None:
        raise StoreError("an in-memory SQLite database has no history to read")
    if not path.exists():
        raise StoreError(f"no history database at {path}")
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a history database")
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"

    def connect() -> Any:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.isolation_level = None
        conn.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        return conn

    # Pooled: opening a connection (and SQLite's parse of the schema on its first statement) costs
    # more than reading a call. Idle connections hold no transaction, so writers checkpoint freely.
    engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.QueuePool, pool_size=1,
                              max_overflow=7)
    _READERS.add(engine)
    return engine


# SQLite readers of this process: a child of fork() forgets their pooled connections (without
# closing them: they are the parent's), and opens its own.
_READERS: weakref.WeakSet[Any] = weakref.WeakSet()


def _forget_readers() -> None:
    for engine in list(_READERS):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_readers)


SQLITE_PAGE_SIZE = 16384  # bytes; see _on_connect


def _sqlite_engine(sa: Any, u: Any, create: bool) -> Any:
    path = sqlite_path(u)
    kwargs: dict[str, Any] = {}
    if path is None:
        # One shared connection: otherwise every thread would see its own empty database.
        kwargs["poolclass"] = sa.pool.StaticPool
        kwargs["connect_args"] = {"check_same_thread": False}
    else:
        # One file however the path is spelled: through a symlink (even a dangling one) the target
        # is what SQLite writes, so the target is what is created owner-only.
        path = Path(os.path.realpath(path))
        u = u.set(database=str(path))
        if not path.exists():
            if not create:
                raise StoreError(f"no history database at {path}")
            _create_private_file(path)
    engine = sa.create_engine(u, **kwargs)

    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        if path is not None:
            # Takes effect only where the file is new (before WAL, which fixes it): rows of a call are
            # ~700 bytes, and a 4 KiB page holds 5 of them and ~500 bytes of nothing.
            cur.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
            cur.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL never corrupts; a power loss may lose the last transactions.
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("historymw_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    sa.event.listen(engine, "connect", _on_connect)
    sa.event.listen(engine, "begin", _on_begin)
    return engine

