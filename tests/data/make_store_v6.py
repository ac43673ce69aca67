"""Writes tests/data/store_v6.sql: a store as historymw wrote it at schema version 6 (packed
`message_refs`: a list content for the shared prefix, the last message inline; an index on model
alone), for the v6 -> v7 migration test.

It was run once, with historymw at commit d24398d (the last schema-6 main), through the public
API only, its contents compressed with zlib (readable without the zstd extra):
`cd tests/data && PYTHONPATH=<a checkout of d24398d> python make_store_v6.py`. Run with a later
historymw it would write that release's schema, so it refuses to (the dump is kept, not regenerated).

The calls are make_store_v5.py's (three models, three sessions and some without one, a shared
system prompt and few-shot demos, errors, a stream, params, tags, a list content).
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

from make_store_v5 import DEMOS, SYSTEM, SYSTEM_2, ask, stream

import historymw as hm
from historymw.sql import contents, schema

OUT = Path(__file__).with_name("store_v6.sql")


def main() -> None:
    if schema.SCHEMA_VERSION != 6:
        sys.exit(f"this historymw writes schema {schema.SCHEMA_VERSION}; run this script at schema 6 (d24398d)")
    contents.WRITE_CODEC = contents.ZLIB
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v6.db"
        hm.configure(backends=["sql"], sql_url=f"sqlite:///{path}")
        sys_msg = {"role": "system", "content": SYSTEM}
        for i in range(24):  # an optimizer: the same prompt and demos, a new question each time
            with hm.history(session="opt-1" if i % 2 else "opt-2", tags={"run": "bootstrap"}):
                ask("gpt-4o-mini", [sys_msg, *DEMOS, {"role": "user", "content": f"Question {i}: who found {i}?"}],
                    temperature=0.0)
        for i in range(6):  # a chat without a session
            ask("gpt-4o", [{"role": "system", "content": SYSTEM_2}, {"role": "user", "content": f"phrase {i}"}])
        with hm.history(session="chat-7"):
            for q in ("who", "why"):  # errors
                try:
                    ask("gpt-4o", [sys_msg, {"role": "user", "content": q}], fail=True)
                except TimeoutError:
                    pass
            "".join(stream("claude-3-5-haiku", [sys_msg, {"role": "user", "content": "stream it"}], stream=True))
            ask("claude-3-5-haiku", [{"role": "user", "content": [{"type": "text", "text": "a list content"}]}])
        assert hm.flush(timeout=10)
        hm.shutdown()
        conn = sqlite3.connect(path)
        version = conn.execute("SELECT version FROM historymw_schema").fetchone()
        n = conn.execute("SELECT count(*) FROM historymw_calls").fetchone()[0]
        lines = "\n".join(conn.iterdump())
        conn.close()
    assert version == (6,), version
    OUT.write_text(f"-- A store written by historymw at schema version 6 ({n} calls), as sqlite3 .dump prints "
                   f"it.\n-- Made by tests/data/make_store_v6.py.\n{lines}\n")
    print(f"wrote {OUT} ({n} calls)")


if __name__ == "__main__":
    main()
