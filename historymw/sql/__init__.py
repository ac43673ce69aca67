"""The SQL store: schema and migrations, engines, rows, and the read API.

Importing this package imports nothing optional; its modules import SQLAlchemy.
`historymw.backends.sql` writes through it; `historymw.store` and the
`historymw` command line read through it.
"""

from __future__ import annotations


class StoreError(Exception):
    """The history database cannot be used: unreachable, missing, or of a newer schema.

    The message is one line a person can act on (it never holds a password).
    """


# The store's URL when none is configured (config.SPEC's default for sql_url; the command line's too).
DEFAULT_SQL_URL = "sqlite:///historymw.db"
# How long a SQLite connection waits for another process's lock; how long PostgreSQL's connection may
# take. Here, not in `engine`, so that the command line's direct readers (`direct`) import neither.
SQLITE_BUSY_TIMEOUT_S = 10.0
PG_CONNECT_TIMEOUT_S = 5
# What `Store.stats(by=...)` and `historymw stats --by` group by.
GROUPS = ("model", "session", "status", "provider", "source")
