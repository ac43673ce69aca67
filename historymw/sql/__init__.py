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


# What `Store.stats(by=...)` and `historymw stats --by` group by.
GROUPS = ("model", "session", "status", "provider", "source")
