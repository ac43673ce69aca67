"""The SQL backend: calls into SQLite (default) or PostgreSQL, through SQLAlchemy 2 Core.

Runs on its export worker (`historymw.pipeline`), never on the caller's thread.
The engine is built when the backend is created (a bad URL or a missing driver
is an error at `configure()`); the database itself is first touched by the
worker, so a server that is down at start costs nothing but retries, and the
schema is created or migrated on the first batch that gets through.

Retention (`sql_max_rows`, `sql_max_age`) is applied by the worker after an
export at most every `retention_interval` seconds, and by `flush()`.

fork(): SQLite keeps per-process state about every open file (which locks this
process holds, the WAL index it has mapped) in memory that a child inherits as it
was, while POSIX locks themselves are not inherited. A child that inherits a
connection in use (a write transaction, or another thread inside sqlite3.connect
or close) then waits forever on locks nobody holds, or writes without the locks
it believes it has, and its writes corrupt what it reads ("database disk image is
malformed"). So every use of a SQLite engine passes through `_FORK_GATE`, and
fork() waits until none is in progress, closes the idle connections, and lets no
new one start until the fork is done: the child inherits no SQLite connection at
all. PostgreSQL connections are sockets: a child only forgets the parent's.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .. import counters
from ..errors import require

if TYPE_CHECKING:
    from ..config import Settings
    from ..record import LMCall
    from ..sql.write import Insert

RETENTION_INTERVAL_S = 10.0
# How long fork() waits for SQLite work in progress: a statement waits at most the busy timeout
# for a lock, so a batch in progress ends well within this unless the machine is stalled.
FORK_WAIT_S = 20.0


class _ForkGate:
    """Counts SQLite work in progress in this process, and holds new work back while fork() runs.

    A fork first drains: export workers wait before they take their batch's I/O lock (which the
    pipeline's own fork hook waits for), work already past that point still gets in and is waited
    for. Then the gate closes, the idle connections are closed, and nothing starts until the fork
    is done."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._draining = False
        self._closed = False
        self.in_use_at_fork = 0  # work that was still in progress when fork() gave up waiting
        self.engines: weakref.WeakSet[Any] = weakref.WeakSet()  # this process's SQLite engines
        self._kept: list[Any] = []  # pools a child inherited in use: never closed (see after_fork_in_child)

    def wait_open(self) -> None:
        """Wait while a fork is under way (called by the export worker before its I/O lock)."""
        if self._draining or self._closed:
            with self._cond:
                while self._draining or self._closed:
                    self._cond.wait()

    @contextmanager
    def using(self) -> Iterator[None]:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._cond.notify_all()

    def before_fork(self) -> None:
        with self._cond:
            self._draining = True
            deadline = time.monotonic() + FORK_WAIT_S
            while self._active and self._cond.wait(max(0.0, deadline - time.monotonic())):
                pass
            self._closed = True
            self._draining = False
            self.in_use_at_fork = self._active
        if self.in_use_at_fork:
            counters.COUNTERS.error("fork_during_sqlite_write")
            return
        for engine in list(self.engines):
            try:
                engine.dispose()  # close the idle connections while nothing else uses them
            except Exception as exc:  # noqa: BLE001 - a fork must go on; the child starts clean anyway
                counters.COUNTERS.error("fork_dispose", exc)

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._closed = False
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._draining = self._closed = False
        for engine in list(self.engines):
            if self.in_use_at_fork:
                # Closing a connection the parent was using would roll back the parent's transaction
                # in the WAL index the two processes share: keep it open, unused, for good.
                self._kept.append(engine.pool)
            engine.dispose(close=False)
        self.in_use_at_fork = 0


_FORK_GATE = _ForkGate()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_FORK_GATE.before_fork, after_in_parent=_FORK_GATE.after_fork_in_parent,
                        after_in_child=_FORK_GATE.after_fork_in_child)


class SQLBackend:
    """Writes records to the `historymw_calls` table (see `historymw.sql.schema`)."""

    def __init__(self, url: str, *, max_rows: int | None = None, max_age: float | None = None,
                 retention_interval: float = RETENTION_INTERVAL_S) -> None:
        require("sqlalchemy", what="The 'sql' backend", extra="sql")
        # Everything the export worker uses is imported here, on the configuring thread: a fork() while
        # the worker imports a module would leave that module's import lock held in the child forever.
        from ..sql import batch, contents, rows, schema, write  # noqa: F401
        from ..sql import engine as _engine

        self.url = url
        self.max_rows = max_rows
        self.max_age = max_age
        self.retention_interval = retention_interval
        self.engine = _engine.make_engine(url, create=True)
        self._postgres = self.engine.dialect.name == "postgresql"
        self._sqlite = self.engine.dialect.name == "sqlite"
        if self._sqlite:
            _FORK_GATE.engines.add(self.engine)
        self._ready = False
        self._statements: dict[tuple[str, ...], Insert] = {}
        self._lock = threading.Lock()  # retention from flush() and from the worker: one at a time
        self._written_since_retention = 0
        self._last_retention = 0.0
        self.rejected = 0

    def _statement(self, columns: tuple[str, ...]) -> Insert:
        """The inserts for rows of these columns (compiled once per shape). The schema is created or
        migrated on first use, which is where a database that was down at start is first touched."""
        from ..sql import schema, write

        if not self._ready:
            schema.ensure_schema(self.engine)
            self._ready = True
        ins = self._statements.get(columns)
        if ins is None:
            ins = self._statements[columns] = write.Insert(self.engine.dialect, columns)
        return ins

    @contextmanager
    def _io(self) -> Iterator[None]:
        """Around every use of the engine: SQLite work and fork() take turns (see the module's doc)."""
        if not self._sqlite:
            yield
            return
        with _FORK_GATE.using():
            yield

    def _write(self, grouped: dict[tuple[str, ...], list[tuple[Any, ...]]], contents: Contents) -> int:
        """Insert a batch (rows ready to bind, NUL already replaced for PostgreSQL) and the message
        contents it refers to; returns how many rows the database refused (bad data, not a bad
        connection)."""
        with self._io():
            return self._write_held(grouped, contents)

    def _write_held(self, grouped: dict[tuple[str, ...], list[tuple[Any, ...]]], contents: Contents) -> int:
        from ..sql import write

        batches = [(self._statement(cols), rows) for cols, rows in grouped.items()]
        total = sum(len(rows) for _, rows in batches)
        try:
            write.insert_rows(self.engine, batches, contents)
            refused = 0
        except Exception as exc:
            if write.is_transient(exc):
                raise  # the pipeline retries the batch with backoff (inserts are idempotent)
            # One bad row must not sink its batch: find it, keep the rest.
            errors = write.insert_each(self.engine, batches, contents)
            for err in errors:
                counters.COUNTERS.error("sql_row_refused", err)
            refused = len(errors)
        self._written_since_retention += total - refused
        if self._retention_due(time.monotonic()):
            self._apply_retention()
        return refused

    # -- the backend protocol ----------------------------------------------

    def prepare_drafts(self, drafts: Sequence[dict[str, Any]], scan_content: bool,
                       invalid: Callable[[BaseException], None]) -> PreparedRows:
        """The export worker's fast path, step one: seal the drafts and build their rows in one pass
        (`historymw.sql.batch`); a draft that fails goes to `invalid`. Built once, however often
        `export_prepared` is retried."""
        from ..sql.batch import build_rows

        rows = PreparedRows(*build_rows(drafts, scan_content=scan_content, postgres=self._postgres, invalid=invalid))
        if self._sqlite:
            _FORK_GATE.wait_open()  # last, so that little runs between it and the export
        return rows

    def export_prepared(self, rows: PreparedRows) -> int:
        """Step two: insert what `prepare_drafts` built. Returns the number of rows refused."""
        return self._write(rows.groups, rows.contents)

    def export(self, records: Sequence[LMCall]) -> int:
        """`LMCall`s (with a user redactor the pipeline builds them, and checks what it returned)."""
        from ..sql.contents import Pending
        from ..sql.rows import COLUMNS, record_row, strip_nul

        pending = Pending()
        rows = [record_row(r, pending) for r in records]
        return self._write({COLUMNS: [strip_nul(r) for r in rows] if self._postgres else rows}, pending.rows())

    def flush(self, timeout: float | None = None) -> bool:
        """Everything exported is committed already; apply retention if anything was written since."""
        if self._written_since_retention and (self.max_rows is not None or self.max_age is not None):
            try:
                with self._io():
                    self._apply_retention()
            except Exception as exc:  # noqa: BLE001 - retention is housekeeping; the records are stored
                counters.COUNTERS.error("sql_retention", exc)
                return False
        return True

    def shutdown(self) -> None:
        with self._io():
            self.engine.dispose()

    def before_fork(self) -> None:
        """Close the pooled PostgreSQL connections (no export is running: the pipeline waits for it);
        SQLite engines are closed by the process-wide gate, which also covers work outside the
        pipeline. The parent reconnects on its next batch."""
        if not self._sqlite:
            self.engine.dispose()

    def after_fork(self) -> None:
        # The parent's pooled connections belong to the parent: forget them without closing them.
        if not self._sqlite:
            self.engine.dispose(close=False)
        self._lock = threading.Lock()

    # -- retention -----------------------------------------------------------

    def _retention_due(self, now: float) -> bool:
        if self.max_rows is None and self.max_age is None:
            return False
        return now - self._last_retention >= self.retention_interval

    def _apply_retention(self) -> int:
        from ..sql import write

        with self._lock:
            self._last_retention = time.monotonic()
            self._written_since_retention = 0
            try:
                return write.prune(self.engine, older_than=self.max_age, keep=self.max_rows)
            except Exception as exc:  # noqa: BLE001 - never fail an export for housekeeping
                counters.COUNTERS.error("sql_retention", exc)
                return 0


Contents = list[tuple[bytes, bytes, float]]  # (digest, stored body, last_used): historymw.sql.contents


class PreparedRows:
    """A batch's rows, grouped by the columns they bind, and the message contents they refer to;
    its length is its number of rows."""

    __slots__ = ("groups", "contents", "count")

    def __init__(self, groups: dict[tuple[str, ...], list[tuple[Any, ...]]], contents: Contents) -> None:
        self.groups = groups
        self.contents = contents
        self.count = sum(map(len, groups.values()))

    def __len__(self) -> int:
        return self.count


def create(settings: Settings) -> SQLBackend:
    return SQLBackend(settings.sql_url, max_rows=settings.sql_max_rows, max_age=settings.sql_max_age)
