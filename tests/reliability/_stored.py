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
    """Every stored message content, decoded, and every call's messages (an inline one, the last
    message of a call, may be compressed in the call's row: schema 6)."""
    from historymw.sql.contents import decode_body, message_bytes

    bodies = {bytes(h): decode_body(b) for h, b in conn.execute(sa.text("SELECT hash, body FROM historymw_contents"))}
    refs = conn.execute(sa.text("SELECT message_refs FROM historymw_calls")).scalars().all()
    return b"\n".join([*bodies.values(), *(m or b"" for r in refs for m in message_bytes(r, bodies))])


def sqlite_contents(url: str) -> bytes:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return contents(conn)
    finally:
        engine.dispose()
