"""Writes tests/data/store_v5.sql: a store as historymw wrote it at schema version 5 (each message a
content, `message_refs` the digests of a call's messages in order), for the v5 -> v6 migration test.

It was run once, with historymw at commit 9ef3df5 (the last schema-5 main), through the public
API only, its contents compressed with zlib (readable without the zstd extra):
`PYTHONPATH=<a checkout of 9ef3df5> python tests/data/make_store_v5.py`. Run with a later historymw it would write that
release's schema, so it refuses to (the dump is kept, not regenerated).

The calls: three models, three sessions and some without one, one system prompt repeated in
most calls (and a second one in a few), few-shot demos shared by the optimizer-like calls,
an error, a stream, params, tags and a multi-part (list) content.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import historymw as hm
from historymw.sql import contents, schema

OUT = Path(__file__).with_name("store_v5.sql")
SYSTEM = ("You are a careful assistant that answers questions about the history of science. "
          "Cite the year when you know it, and say so when you do not. ") * 12
SYSTEM_2 = "You translate English into French. Keep the register of the original."
DEMOS = [
    {"role": "user", "content": "Who described the circulation of the blood?"},
    {"role": "assistant", "content": "William Harvey, in De Motu Cordis (1628)."},
    {"role": "user", "content": "Who first measured the speed of light?"},
    {"role": "assistant", "content": "Ole Rømer estimated it in 1676 from the eclipses of Io."},
]


@hm.recorded(provider="openai")
def ask(model: str, messages: list[dict[str, Any]], **params: Any) -> str:
    if params.get("fail"):
        raise TimeoutError("the provider did not answer in 30 s")
    return f"answer to {messages[-1]['content']!s:.40}"


@hm.recorded(provider="anthropic")
def stream(model: str, messages: list[dict[str, Any]], **params: Any) -> Iterator[str]:
    yield from ("The ", "stream ", "ends ", "here.")


def main() -> None:
    if schema.SCHEMA_VERSION != 5:
        sys.exit(f"this historymw writes schema {schema.SCHEMA_VERSION}; run this script at schema 5 (9ef3df5)")
    contents.WRITE_CODEC = contents.ZLIB
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v5.db"
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
    assert version == (5,), version
    OUT.write_text(f"-- A store written by historymw at schema version 5 ({n} calls), as sqlite3 .dump prints "
                   f"it.\n-- Made by tests/data/make_store_v5.py.\n{lines}\n")
    print(f"wrote {OUT} ({n} calls)")


if __name__ == "__main__":
    main()
