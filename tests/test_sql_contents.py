"""Content-addressed messages in the SQL store: each distinct message stored once, a call's shared
prefix referred to by one digest and its last message inline, compressed when large (zstd or zlib,
either readable, an inline one against its prefix), read back whole everywhere, searched, orphans
removed by retention, and stores written at schema versions 3 and 5 carried forward."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import historymw as hm
from historymw.backends.sql import SQLBackend
from historymw.sql import StoreError, contents
from historymw.sql.contents import RAW, ZLIB, ZSTD, decode_body, encode_body
from historymw.sql.schema import SCHEMA_VERSION
from historymw.store import Store

V3_DUMP = Path(__file__).parent / "data" / "store_v3.sql"
V5_DUMP = Path(__file__).parent / "data" / "store_v5.sql"
SYSTEM = {"role": "system", "content": "Answer in the style of a careful historian. " * 70}  # ~3 KB
DEMOS = [{"role": "user", "content": "Who wrote the Principia?"},
         {"role": "assistant", "content": "Isaac Newton, in 1687."}]


@hm.recorded(provider="openai")
def ask(model: str, messages: list[dict[str, Any]], **params: Any) -> str:
    return f"answer to {messages[-1]['content']}"


def _question(i: int) -> dict[str, str]:
    return {"role": "user", "content": f"Question {i}: what happened in {1500 + i}?"}


def _record(url: str, n: int, first: int = 0, **config: Any) -> None:
    hm.configure(backends=["sql"], sql_url=url, **config)
    for i in range(first, first + n):
        ask("gpt-4o-mini", [SYSTEM, *DEMOS, _question(i)])
    assert hm.flush(timeout=30)
    hm.configure(backends=["ring"])


def _contents(engine: sa.Engine) -> list[tuple[bytes, bytes]]:
    with engine.connect() as conn:
        return [(bytes(h), bytes(b)) for h, b in conn.execute(sa.text("SELECT hash, body FROM historymw_contents"))]


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url)


def test_each_distinct_message_is_stored_once_and_read_back_whole(sqlite_url: str) -> None:
    _record(sqlite_url, 40, batch_size=7)  # several batches: the shared prompt is met again in each
    engine = _engine(sqlite_url)
    stored = _contents(engine)
    # The system prompt and the two demos once, and the list of the three; each question is inline.
    assert len(stored) == 3 + 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM historymw_calls WHERE messages IS NOT NULL")).scalar() == 0
        refs = [bytes(r) for r in conn.execute(sa.text("SELECT message_refs FROM historymw_calls")).scalars()]
    members = b"".join(contents.digest(contents.message_json(m).encode()) for m in [SYSTEM, *DEMOS])
    the_list = {dg for dg, body in stored if decode_body(body) == members}
    assert len(the_list) == 1
    for i, r in enumerate(refs):
        # One ref to the list, then the question: a row of ~60 bytes of messages instead of 4 digests.
        assert [tag for tag, _ in contents.items(r)] == [contents.LIST, contents.INLINE] and len(r) % 16
        assert contents.items(r)[0][1] in the_list
        inline = contents.items(r)[1][1]  # the question's text, its codec naming its role
        assert inline == bytes((contents.TEXT + contents.TEXT_ROLES.index("user"),)) + _question(i)["content"].encode()
    with engine.connect() as conn:
        # A new file has 16 KiB pages: a 4 KiB one holds 5 rows of ~700 bytes and ~500 bytes of nothing.
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 16384
    engine.dispose()
    with Store(sqlite_url) as store:
        calls = store.recent(100)
        assert [c.messages for c in calls] == [[SYSTEM, *DEMOS, _question(i)] for i in range(40)]
        one = store.get(calls[5].id)
        assert one is not None and one.messages == [SYSTEM, *DEMOS, _question(5)]
        assert [c.messages[-1] for c in store.calls()] == [_question(i) for i in range(40)]


def _long_question(i: int) -> dict[str, str]:
    return {"role": "user", "content": f"Question {i}: " + "what did the careful historian answer? " * 12}


@pytest.mark.parametrize("codec", ["zstd", "zlib"])
def test_a_long_last_message_is_compressed_against_its_prompt(sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
                                                              codec: str) -> None:
    """A question past COMPRESS_MIN shares its words with the prompt before it: compressed with that
    prompt as the dictionary (from the second call of a prompt on), it takes a fraction of its size,
    and reads back whole; the first call of a prompt is compressed alone."""
    if codec == "zstd":
        pytest.importorskip("zstandard", reason="the dev extra installs zstandard (the 'zstd' extra)")
    monkeypatch.setattr(contents, "WRITE_CODEC", ZSTD if codec == "zstd" else ZLIB)
    monkeypatch.setattr(contents, "_codecs", contents._Codecs())  # (compressors made with the other codec)
    hm.configure(backends=["sql"], sql_url=sqlite_url)
    for i in range(5):
        ask("gpt-4o-mini", [SYSTEM, *DEMOS, _long_question(i)])
    assert hm.flush(timeout=30)
    hm.configure(backends=["ring"])
    engine = _engine(sqlite_url)
    with engine.connect() as conn:
        refs = [bytes(r) for r in conn.execute(sa.text("SELECT message_refs FROM historymw_calls ORDER BY id"))
                .scalars()]
    engine.dispose()
    inline = [contents.items(r)[-1][1] for r in refs]
    size = len(contents.message_json(_long_question(0)).encode())
    want = contents.DICT_ZSTD if codec == "zstd" else contents.DICT_ZLIB
    assert inline[0][0] == (ZSTD if codec == "zstd" else ZLIB)
    assert all(b[0] == want and len(b) < size // 4 for b in inline[1:]), [len(b) for b in inline]
    monkeypatch.setattr(contents, "_codecs", contents._Codecs())  # a reader with no decompressor made yet
    contents._decoded.__init__(contents._decoded.max_bytes)  # nor the prompt's bytes
    with Store(sqlite_url) as store:
        assert [c.messages for c in store.recent(10)] == [[SYSTEM, *DEMOS, _long_question(i)] for i in range(5)]


def test_a_very_long_last_message_is_a_content_and_one_message_alone_is_inline(sqlite_url: str) -> None:
    document = {"role": "user", "content": "A document to summarise. " * 500}  # past INLINE_MAX
    hm.configure(backends=["sql"], sql_url=sqlite_url)
    ask("m", [SYSTEM, document])
    ask("m", [document])
    ask("m", [{"role": "user", "content": "hello"}])
    ask("m", [SYSTEM, DEMOS[0], DEMOS[1]])
    assert hm.flush(timeout=30)
    hm.configure(backends=["ring"])
    engine = _engine(sqlite_url)
    with engine.connect() as conn:
        refs = [bytes(r) for r in conn.execute(sa.text("SELECT message_refs FROM historymw_calls ORDER BY id"))
                .scalars()]
    engine.dispose()
    message, listed, inline = contents.MESSAGE, contents.LIST, contents.INLINE
    assert [[tag for tag, _ in contents.items(r)] for r in refs] == [
        [message, message], [message], [inline], [listed, inline]]
    assert refs[0][-17:] == refs[1][:17]  # the document, stored once
    with Store(sqlite_url) as store:
        assert [c.messages for c in store.recent(10)] == [
            [SYSTEM, document], [document], [{"role": "user", "content": "hello"}], [SYSTEM, *DEMOS]]


def _search(url: str, text: str) -> list[str]:
    """The last message of the calls whose messages the viewer's text search matches."""
    return sorted(m["content"] for m in _search_messages(url, text))


def _search_messages(url: str, text: str) -> list[Any]:
    from historymw.sql.schema import calls

    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    engine = _engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.select(calls.c.message_refs).where(
            contents.messages_like(engine.dialect.name, pattern, calls.c.message_refs))).scalars().all()
        bodies = dict(conn.execute(sa.text("SELECT hash, body FROM historymw_contents")).all())
    engine.dispose()
    return [contents.stored_messages(r, bodies)[-1] for r in found]


def _search_checks(url: str) -> None:
    hm.configure(backends=["sql"], sql_url=url)
    for q in ("Who built the Pont du Gard?", "Où est né Rømer?", 'He said "50% of it" \\o/', "Why?"):
        ask("m", [SYSTEM, *DEMOS, {"role": "user", "content": q}])
    parts = [{"type": "text", "text": 'The "Aqueduct" of Nîmes'}]  # not a str: inline as its JSON
    ask("m", [SYSTEM, {"role": "user", "content": parts}])
    assert hm.flush(timeout=30)
    hm.configure(backends=["ring"])
    assert _search(url, "pont DU gard") == ["Who built the Pont du Gard?"]  # inline, any ASCII case
    assert _search(url, "Rømer") == ["Où est né Rømer?"]
    assert _search(url, '"50% of it" \\o') == ['He said "50% of it" \\o/']
    assert len(_search(url, "Isaac Newton")) == 4  # a demo: a content, through the list
    assert _search(url, "Kepler") == []
    assert [m for m in _search_messages(url, '"aqueduct" of nîmes')] == [{"role": "user", "content": parts}]
    # One character: found in the message's text only, never in the digests and lengths around it.
    assert _search(url, "%") == ['He said "50% of it" \\o/']


def test_the_text_search_finds_inline_messages(sqlite_url: str) -> None:
    _search_checks(sqlite_url)


def test_the_text_search_finds_inline_messages_in_postgresql(pg: tuple[str, sa.Engine]) -> None:
    _search_checks(pg[0])


def test_large_contents_are_compressed_and_small_ones_are_not(sqlite_url: str) -> None:
    _record(sqlite_url, 3)
    engine = _engine(sqlite_url)
    bodies = {decode_body(b): b for _, b in _contents(engine)}
    engine.dispose()
    system = contents.message_json(SYSTEM).encode()
    big = bodies[system]
    assert big[0] == contents.WRITE_CODEC and len(big) < len(system) // 5
    small = bodies[contents.message_json(DEMOS[0]).encode()]
    assert small[0] == RAW and small[1:] == contents.message_json(DEMOS[0]).encode()


def test_zstd_is_the_codec_where_it_is_installed() -> None:
    pytest.importorskip("zstandard", reason="the dev extra installs zstandard (the 'zstd' extra)")
    assert contents.WRITE_CODEC == ZSTD
    data = json.dumps(SYSTEM).encode()
    assert encode_body(data)[0] == ZSTD and decode_body(encode_body(data)) == data


def test_a_store_written_with_zlib_and_one_with_zstd_are_both_read(sqlite_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer without zstandard writes zlib; a reader with it reads both, and the same message
    written both ways is one content (the digest is of the message, not of its compressed bytes)."""
    monkeypatch.setattr(contents, "WRITE_CODEC", ZLIB)
    _record(sqlite_url, 2)
    monkeypatch.setattr(contents, "WRITE_CODEC", ZSTD if contents._zstandard is not None else ZLIB)
    _record(sqlite_url, 2, first=2)
    engine = _engine(sqlite_url)
    codecs = sorted(b[0] for _, b in _contents(engine))
    engine.dispose()
    # The prompt, once; the demos raw, the list of the three.
    assert codecs.count(ZLIB) == 1 and codecs.count(RAW) == 2 and codecs.count(contents.BINARY) == 1
    with Store(sqlite_url) as store:
        assert [c.messages for c in store.recent(10)] == [[SYSTEM, *DEMOS, _question(i)] for i in range(4)]


def test_zlib_and_zstd_bodies_decode_and_a_missing_codec_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    data = ("a long message " * 100).encode()
    zlib_body = encode_body(data, ZLIB)
    assert zlib_body[0] == ZLIB and decode_body(zlib_body) == data
    assert decode_body(encode_body(b"short", ZLIB)) == b"short" and encode_body(b"short", ZLIB)[0] == RAW
    if contents._zstandard is not None:
        zstd_body = encode_body(data, ZSTD)
        assert zstd_body[0] == ZSTD and decode_body(zstd_body) == data
        monkeypatch.setattr(contents, "_zstandard", None)
        with pytest.raises(StoreError, match=r"historymw\[zstd\]"):
            decode_body(zstd_body)
    with pytest.raises(StoreError, match="unknown content codec 9"):
        decode_body(b"\x09abc")


def test_incompressible_large_contents_are_kept_raw() -> None:
    import os

    data = os.urandom(4000).hex().encode()[:4000]  # hex digits: compressible only to about half
    assert encode_body(data)[0] != RAW
    noise = os.urandom(4000)
    assert encode_body(noise)[0] == RAW and decode_body(encode_body(noise)) == noise


OLD_SYSTEM = {"role": "system", "content": "An earlier prompt, since replaced. " * 60}
DOCUMENT = {"role": "user", "content": "A long document, a content of its own. " * 300}  # past INLINE_MAX


def _prune_checks(url: str, engine: sa.Engine) -> None:
    """Old calls with a prompt (and a document) of their own, then new ones: pruning the old ones deletes
    what only they referred to, lists and the messages in them, and keeps what the new ones still
    refer to (the demos they share with the old ones too)."""
    backend = SQLBackend(url)
    now = time.time()
    drafts = [{"started": now - 3 * 86400 + i, "duration": 0.1, "model": "m", "size_bytes": 1,
               "messages": [OLD_SYSTEM, *DEMOS, _question(i)]} for i in range(30)]
    drafts.append({"started": now - 3 * 86400 + 40, "duration": 0.1, "model": "m", "size_bytes": 1,
                   "messages": [DEMOS[0], DOCUMENT]})
    drafts += [{"started": now + i, "duration": 0.1, "model": "m", "size_bytes": 1,
                "messages": [SYSTEM, *DEMOS, _question(1000 + i)]} for i in range(10)]
    backend.export_prepared(backend.prepare_drafts(drafts, True, _raise))  # one batch: old and new together
    # The two prompts, the two demos, the two lists of three, the document.
    assert len(_contents(engine)) == 2 + 2 + 2 + 1
    with Store(url) as store:
        assert store.prune(older_than=86400) == 31
        assert [c.messages for c in store.recent(20)] == [[SYSTEM, *DEMOS, _question(1000 + i)] for i in range(10)]
    left = {decode_body(b) for _, b in _contents(engine)}
    assert {contents.message_json(m).encode() for m in [SYSTEM, *DEMOS]} < left and len(left) == 3 + 1
    # Retention by count, through the backend's own settings: the 4 newest calls are kept.
    backend.max_rows = 4
    backend.flush()
    assert len(_contents(engine)) == 3 + 1
    with Store(url) as store:
        assert [c.messages for c in store.recent(10)] == [[SYSTEM, *DEMOS, _question(1006 + i)] for i in range(4)]
        assert store.prune(keep=0) == 4
    assert _contents(engine) == []
    backend.shutdown()


def _raise(exc: BaseException) -> None:
    raise exc


def test_retention_deletes_orphaned_contents(sqlite_url: str) -> None:
    engine = _engine(sqlite_url)
    _prune_checks(sqlite_url, engine)
    engine.dispose()


def test_retention_deletes_orphaned_contents_in_postgresql(pg: tuple[str, sa.Engine]) -> None:
    url, check = pg
    _prune_checks(url, check)


def _check_every_content_referred_to(stored: dict[bytes, bytes], refs: list[bytes]) -> None:
    """Each distinct message once: no content twice, none that no call refers to."""
    used: set[bytes] = set()
    for r in refs:
        for tag, dg in contents.items(r):
            if tag == contents.LIST:
                used.update(contents.split_refs(decode_body(stored[dg])))
            if tag != contents.INLINE:
                used.add(dg)
    assert used == stored.keys()
    messages = [decode_body(b) for dg, b in stored.items() if dg in used and decode_body(b)[:1] == b"{"]
    assert len(messages) == len(set(messages))


def _load_v3(path: Path) -> list[tuple[str, Any]]:
    conn = sqlite3.connect(path)
    conn.executescript(V3_DUMP.read_text())
    rows = [(i, json.loads(m)) for i, m in conn.execute("SELECT id, messages FROM historymw_calls ORDER BY id")]
    conn.close()
    return rows


def test_a_version_3_store_is_read_as_it_is_then_migrated_by_the_next_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v3.db"
    before = _load_v3(path)
    assert len(before) == 34 and any(len(m) > 2 for _, m in before)
    url = f"sqlite:///{path}"
    with Store(url) as store:  # a reader: never migrates
        old = {c.id: c for c in store.recent(100)}
        assert sum(c.status == "error" for c in old.values()) == 2 and sum(bool(c.stream) for c in old.values()) == 1
    assert {i: c.messages for i, c in old.items()} == dict(before)
    # Chunks of 5 rows: the migration's chunk edges are crossed several times.
    monkeypatch.setattr(contents.migrate_messages, "__defaults__", (5,))
    _record(url, 1, first=99)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM historymw_schema").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("SELECT count(*) FROM historymw_calls WHERE messages IS NOT NULL").fetchone() == (0,)
    stored = dict(conn.execute("SELECT hash, body FROM historymw_contents").fetchall())
    refs = conn.execute("SELECT message_refs FROM historymw_calls").fetchall()
    conn.close()
    _check_every_content_referred_to(stored, [r for (r,) in refs])
    with Store(url) as store:
        after = {c.id: c for c in store.recent(100)}
    assert len(after) == 35
    for i, c in old.items():
        assert after[i].model_dump() == c.model_dump()  # every field as before, messages whole


def test_a_version_3_postgresql_store_is_migrated(pg: tuple[str, sa.Engine], tmp_path: Path) -> None:
    """The rows of the version-3 file, put into PostgreSQL tables of version 3, then migrated."""
    url, check = pg
    path = tmp_path / "v3.db"
    before = dict(_load_v3(path))
    with Store(url, create=True):
        pass
    src = sa.create_engine(f"sqlite:///{path}")
    with src.connect() as s, check.begin() as conn:
        conn.execute(sa.text("DROP TABLE historymw_contents"))
        conn.execute(sa.text("ALTER TABLE historymw_calls DROP COLUMN message_refs"))
        conn.execute(sa.text("UPDATE historymw_schema SET version = 3"))
        from historymw.sql.schema import calls

        cols = [c for c in calls.columns if c.name != "message_refs"]
        rows = [dict(r) for r in s.execute(sa.select(*cols)).mappings()]
        for r in rows:
            for t in ("started_at", "ended_at"):
                r[t] = sa.func.to_timestamp(r[t])
        table = sa.Table(calls.name, sa.MetaData(), *(c._copy() for c in cols))
        for r in rows:
            conn.execute(sa.insert(table).values(**r))
    src.dispose()
    with Store(url) as store:
        assert {c.id: c.messages for c in store.recent(100)} == before
    _record(url, 1, first=7)
    with check.connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM historymw_schema")).scalar() == SCHEMA_VERSION
        assert conn.execute(sa.text("SELECT count(*) FROM historymw_calls WHERE messages IS NOT NULL")).scalar() == 0
    with Store(url) as store:
        after = {c.id: c.messages for c in store.recent(100)}
    assert len(after) == 35 and all(after[i] == m for i, m in before.items())


def test_the_cli_and_export_show_whole_messages(sqlite_url: str) -> None:
    _record(sqlite_url, 3)
    with Store(sqlite_url) as store:
        call_id = store.recent(1)[0].id
    run = [sys.executable, "-m", "historymw.cli", "--db", sqlite_url]
    shown = subprocess.run([*run, "show", call_id, "--json"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["messages"] == [SYSTEM, *DEMOS, _question(2)]
    exported = subprocess.run([*run, "export", "--format", "jsonl"], capture_output=True, text=True, timeout=60)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    assert [r["messages"] for r in lines] == [[SYSTEM, *DEMOS, _question(i)] for i in range(3)]


def test_a_version_5_store_is_read_as_it_is_then_carried_forward(tmp_path: Path) -> None:
    """Rows of schema 5 (each message's digest in `message_refs`) keep their refs: read before and after
    the next writer moves the store to schema 6, beside the packed rows it writes; retention still
    finds the orphans of both."""
    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path)
    conn.executescript(V5_DUMP.read_text())
    old_refs = [bytes(r) for (r,) in conn.execute("SELECT message_refs FROM historymw_calls")]
    conn.close()
    assert len(old_refs) == 34 and all(len(r) % 16 == 0 for r in old_refs)
    url = f"sqlite:///{path}"
    with Store(url) as store:  # a reader: never migrates
        old = {c.id: c for c in store.recent(100)}
    assert len(old) == 34 and sum(len(c.messages) >= 3 for c in old.values()) >= 24
    assert all(c.messages and "missing from the store" not in str(c.messages) for c in old.values())
    _record(url, 3, first=50)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM historymw_schema").fetchone() == (SCHEMA_VERSION,) == (7,)
    assert conn.execute("PRAGMA page_size").fetchone() == (4096,)  # an existing file keeps its pages
    stored = dict(conn.execute("SELECT hash, body FROM historymw_contents").fetchall())
    refs = [r for (r,) in conn.execute("SELECT message_refs FROM historymw_calls")]
    conn.close()
    with Store(url) as store:
        after = {c.id: c for c in store.recent(100)}
        assert len(after) == 37
        for i, c in old.items():
            assert after[i].model_dump() == c.model_dump()
        assert [c.messages for c in store.recent(3)] == [[SYSTEM, *DEMOS, _question(50 + i)] for i in range(3)]
        assert store.prune(keep=3) == 34
    conn = sqlite3.connect(path)
    left = dict(conn.execute("SELECT hash, body FROM historymw_contents").fetchall())
    refs = [r for (r,) in conn.execute("SELECT message_refs FROM historymw_calls")]
    conn.close()
    assert len(stored) > len(left) == 3 + 1
    _check_every_content_referred_to(left, refs)
