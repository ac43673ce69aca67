"""What a store holds, as bytes a secret scan can read: the SQLite files themselves, and the message
contents decoded (a compressed body would hide a secret from a scan of the raw bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa


def sqlite_bytes(url: str) -> bytes:
    """The database file and its WAL/journal files, raw."""
    path = Path(url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in sorted(path.parent.iterdir()) if p.name.startswith(path.name))


def contents(conn: Any) -> bytes:
    """Every stored message content, decoded."""
    from historymw.sql.contents import decode_body

    bodies = conn.execute(sa.text("SELECT body FROM historymw_contents")).scalars().all()
    return b"\n".join(decode_body(b) for b in bodies)


def sqlite_contents(url: str) -> bytes:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return contents(conn)
    finally:
        engine.dispose()
