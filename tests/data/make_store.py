"""Writes tests/data/store_vN.sql: a store as historymw wrote it at an older schema version N. The
migration tests (tests/test_sql_contents.py, test_sql_model_index.py, test_cli_sessions.py) load a
dump and open it with today's historymw.

    PYTHONPATH=<a checkout of the commit below> python tests/data/make_store.py N

Each dump was made once, with historymw at the last main of its schema, through the public API
only; from schema 5 on, its contents compressed with zlib (readable without the zstd extra):

| N | commit | what that schema stored |
|---|---|---|
| 3 | b3adebb | every call's messages as JSON in its row (before content-addressed messages) |
| 5 | 9ef3df5 | each message a content, `message_refs` the digests of a call's messages in order |
| 6 | d24398d | packed `message_refs`: a list content for the shared prefix, the last message inline |

Run with any other historymw it would write that release's schema, so it refuses to: the dumps
are kept, not regenerated.

The calls, the same for every version: three models, three sessions and some calls without
one, one system prompt repeated in most calls (and a second one in a few), few-shot demos shared
by the optimizer-like calls, errors, a stream, params, tags and a multi-part (list) content.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import historymw as hm
from historymw.sql import schema

COMMITS = {3: "b3adebb", 5: "9ef3df5", 6: "d24398d"}
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


def make_calls() -> None:
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


def main(version: int) -> None:
    if version not in COMMITS:
        sys.exit(f"no dump of schema {version}: the dumps are of schemas {sorted(COMMITS)}")
    if schema.SCHEMA_VERSION != version:
        sys.exit(f"this historymw writes schema {schema.SCHEMA_VERSION}; run this script at schema {version} "
                 f"({COMMITS[version]})")
    if version >= 5:
        from historymw.sql import contents

        contents.WRITE_CODEC = contents.ZLIB
    out = Path(__file__).with_name(f"store_v{version}.sql")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"v{version}.db"
        hm.configure(backends=["sql"], sql_url=f"sqlite:///{path}")
        make_calls()
        assert hm.flush(timeout=10)
        hm.shutdown()
        conn = sqlite3.connect(path)
        written = conn.execute("SELECT version FROM historymw_schema").fetchone()
        n = conn.execute("SELECT count(*) FROM historymw_calls").fetchone()[0]
        lines = "\n".join(conn.iterdump())
        conn.close()
    assert written == (version,), written
    out.write_text(f"-- A store written by historymw at schema version {version} ({n} calls), as sqlite3 .dump "
                   f"prints it.\n-- Made by tests/data/make_store.py {version}.\n{lines}\n")
    print(f"wrote {out} ({n} calls)")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: python tests/data/make_store.py VERSION  (one of 3, 5, 6)")
    main(int(sys.argv[1]))
