"""The export worker's one-pass path (`historymw.sql.batch`): for every draft it writes the row
that sealing the draft and then building its row (`seal` + `draft_rows`) would write, it leaves
the draft as sealing would see it, and it never lets through what sealing would change."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

import historymw as hm
from historymw.record import materialize, seal
from historymw.sql.batch import Built, build_rows
from historymw.sql.contents import INLINE, LIST, Pending, decode_body, digest, items, messages_from, split_refs
from historymw.sql.rows import draft_rows, strip_nul

MSGS = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is six times seven?"}]
SECRET = "sk-abcdefghijklmnopqrstuvwx"


_answer: list[Any] = ["42"]  # what ask() returns (or raises) next: params stay the usual ones


@hm.recorded(provider="fake")
def ask(model: str, messages: list[dict[str, str]], **params: Any) -> Any:
    if isinstance(_answer[0], Exception):
        raise _answer[0]
    return _answer[0]


Call = tuple[tuple[Any, ...], dict[str, Any]]


def _captured(calls: list[Call], **scope: Any) -> list[dict[str, Any]]:
    """Drafts exactly as the hot path makes them. A call's "answer" param is what the LM returns."""
    hm.configure(backends=["ring"], maxlen=10_000)
    with hm.history(**scope):
        for args, kwargs in calls:
            kwargs = dict(kwargs)
            _answer[0] = kwargs.pop("answer", "42")
            try:
                ask(*args, **kwargs)
            except Exception:  # noqa: BLE001 - a call may fail on purpose: its record is the point
                pass
    return hm.ring().drafts()


def _by_column(built: Built) -> dict[str, dict[str, Any]]:
    """id -> {column: value}, whatever order the columns were bound in, with "contents": the JSON of
    the messages its `message_refs` refer to. Every content of the batch is referred to by a row."""
    bodies = {dg: decode_body(body) for dg, body, _ in built.contents}
    assert len(bodies) == len(built.contents)
    out = {}
    used: set[bytes] = set()
    for cols, rows in built.groups.items():
        for row in rows:
            values = dict(zip(cols, row, strict=True))
            refs = values.get("message_refs")
            for tag, dg in items(refs):
                if tag == LIST:  # the messages of a list, which the row refers to through it
                    used.update(split_refs(bodies[dg]))
                if tag != INLINE:
                    used.add(dg)
            values["contents"] = messages_from(refs, bodies) or None
            out[values["id"]] = {k: v for k, v in values.items() if v is not None}
    assert used == bodies.keys(), "a content no row refers to"
    return out


def _expected(drafts: list[dict[str, Any]], postgres: bool = False) -> dict[str, dict[str, Any]]:
    sealed = [seal(copy.deepcopy(d)) for d in drafts]
    pending = Pending()
    groups = draft_rows(sealed, pending)
    if postgres:
        groups = {c: [strip_nul(r) for r in rows] for c, rows in groups.items()}
    return _by_column(Built(groups, pending.rows()))


def _check_same(drafts: list[dict[str, Any]], postgres: bool = False) -> dict[str, dict[str, Any]]:
    """build_rows(drafts) writes what seal + draft_rows writes (ids given first, as the fast path would)."""
    for d in drafts:  # the ids the fast path gives, so that both ways agree on them
        d.setdefault("id", f"{len(str(d))}-{id(d)}")
    expected = _expected(drafts, postgres)
    got = _by_column(build_rows(drafts, postgres=postgres))
    assert got == expected
    return got


def test_the_usual_drafts_take_the_fast_path_and_write_what_sealing_would() -> None:
    drafts = _captured([(("gpt-x", MSGS), {"temperature": 0.2, "max_tokens": 64}),
                        (("gpt-x", MSGS), {}),
                        (("gpt-x", []), {"stream": False, "seed": 3, "stop": None})] * 3)
    assert all("_pairs" in d for d in drafts)
    rows = _check_same(drafts)
    assert len(rows) == 9
    assert all("_pairs" in d and "_sealed" not in d for d in drafts)  # fast: not rebuilt, id kept
    r = rows[drafts[0]["id"]]
    assert type(r["stream"]) is int  # SQLite stores a bool as 0/1: bound so, sqlite3 skips its adapter lookup
    assert type(_by_column(build_rows(drafts, postgres=True))[drafts[0]["id"]]["stream"]) is bool
    assert r["params"] == '{"temperature":0.2,"max_tokens":64}'
    # The system prompt (the prefix) once, under the digest of its JSON; the row refers to it, then holds
    # the question (the last message) inline.
    system = b'{"role":"system","content":"You are terse."}'
    question = b"What is six times seven?"  # (the message {"role": "user", "content": ...} as its text)
    assert r["message_refs"] == b"\x01" + digest(system) + bytes((3, len(question) + 1, 7)) + question
    assert "messages" not in r
    built = build_rows(drafts)
    assert {dg: decode_body(body) for dg, body, _ in built.contents} == {digest(system): system}
    assert r["status"] == "ok" and r["output_text"] == "42"


def test_sessions_tags_errors_and_odd_text_write_what_sealing_would() -> None:
    calls: list[Call] = [
        (("m", MSGS), {"temperature": 0.5}),
        (("m", [{"role": "user", "content": 'quotes " and \\ and \n newlines, ünïcödé, 🙂'}]), {}),
        (("m", [*MSGS, {"role": "assistant", "content": "42"}, {"role": "user", "content": "and 6 x 8?"}]), {}),
        (("m", MSGS), {"answer": {"choices": [{"message": {"role": "assistant", "content": "hi"},
                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 3, "completion_tokens": 1}, "id": "r-1"}}),
        (("m", MSGS), {"answer": 12345}),
        (("m", MSGS), {"answer": TimeoutError("the model timed out")}),
        (("m", MSGS), {"answer": {"choices": [], "usage": {"input_tokens": 2, "output_tokens": float("inf")}}}),
        (("m", MSGS), {"temperature": float("nan")}),
        (("m", [{"role": "user", "content": "a\x00b"}]), {}),
        (("m", [{"role": "user", "content": "lone \ud800 surrogate"}]), {}),
        (("m", [{"role": "user", "content": "data:image/png;base64," + "A" * 3000}]), {}),
        (("m", [{"role": "user", "content": "a literal \\u0000 in text"}]), {}),
    ]
    for scope in ({}, {"session": "s-1", "tags": {"team": "search", "n": 3}}):
        drafts = _captured(calls, **scope)
        _check_same(copy.deepcopy(drafts))
        _check_same(drafts, postgres=True)


def test_a_record_with_a_secret_is_sealed_and_the_rest_of_its_batch_is_not() -> None:
    drafts = _captured([(("m", MSGS), {})] * 5 + [(("m", [{"role": "user", "content": f"key {SECRET}"}]), {})]
                       + [(("m", MSGS), {"max_tokens": 10})] * 5)
    rows = _check_same(drafts)
    assert SECRET not in repr(rows) and "[REDACTED]" in repr(rows)
    assert [("_sealed" in d) for d in drafts] == [False] * 5 + [True] + [False] * 5
    assert SECRET not in repr(drafts[5])  # the ring, reading the same draft, sees it redacted


@pytest.mark.parametrize("text", [
    f"Authorization: Bearer abc123def456ghi789 {SECRET}", "Bearer\nabc123def456ghi789", "xoxb-1234567890-abcdef",
    "ghp_abcdefghijklmnopqrstuvwxyz0123", "AKIAABCDEFGHIJKLMNOP", "https://user:hunter22@host/db",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abc",
])
def test_every_secret_shape_is_caught_wherever_it_is(text: str) -> None:
    """In a message, in the output, in a param's value, in tags: the row never holds the secret."""
    where: list[Call] = [
        (("m", [{"role": "user", "content": text}]), {}),
        (("m", MSGS), {"answer": text}),
        (("m", MSGS), {"user": text}),
    ]
    for scope in ({}, {"tags": {"note": text}}):
        drafts = _captured(where, **scope)
        rows = _check_same(drafts)
        secret = text.split()[-1].split("@")[0].rsplit(":", 1)[-1]
        assert secret not in repr(rows), rows


def test_prose_with_anchor_letters_is_not_rewritten() -> None:
    """"gh" occurs in most prose ("right", "thought"): such text is not a secret and stays fast."""
    text = "I thought it might be right, though the night was long; ask-for-help and https://example.org/x"
    drafts = _captured([(("m", [{"role": "user", "content": text}]), {"answer": text})] * 3)
    rows = _check_same(drafts)
    assert text in next(iter(rows.values()))["output_text"]
    assert not any("_sealed" in d for d in drafts)


def test_redact_content_off_and_sealed_drafts_take_the_general_way() -> None:
    drafts = _captured([(("m", [{"role": "user", "content": f"key {SECRET}"}]), {})])
    rows = _by_column(build_rows([copy.deepcopy(drafts[0])], scan_content=False))
    assert SECRET in repr(rows)  # prompts are not scanned when the user turned that off
    sealed = seal(copy.deepcopy(drafts[0]))
    pending = Pending()
    assert _by_column(build_rows([sealed])) == _by_column(Built(draft_rows([sealed], pending), pending.rows()))


def test_a_draft_that_cannot_be_sealed_is_reported_alone() -> None:
    drafts = _captured([(("m", MSGS), {})] * 3)
    bad = dict(drafts[1], started=math.nan)
    bad.pop("id", None)
    errors: list[BaseException] = []
    groups = build_rows([drafts[0], bad, drafts[2]], invalid=errors.append).groups
    assert sum(map(len, groups.values())) == 2 and len(errors) == 1


def test_the_ring_and_the_database_agree_on_each_record() -> None:
    drafts = _captured([(("m", MSGS), {"temperature": 0.1})] * 4)
    rows = _by_column(build_rows(drafts))
    for d in drafts:
        record = materialize(d)  # what the ring shows
        assert record.id == d["id"] and record.id in rows
        assert record.messages == MSGS and record.params == {"temperature": 0.1}


def test_equal_params_of_another_type_or_sign_get_their_own_json() -> None:
    """Consecutive calls whose params are equal but not the same (True == 1, 0.0 == -0.0)."""
    drafts = _captured([(("m", MSGS), {"stream": flag, "temperature": t})
                        for flag, t in [(True, 0.0), (1, -0.0), (1, -0.0), (False, 0.0), (0, 0)]])
    rows = _check_same(drafts)
    assert [rows[d["id"]]["params"] for d in drafts] == [
        '{"stream":true,"temperature":0.0}', '{"stream":1,"temperature":-0.0}', '{"stream":1,"temperature":-0.0}',
        '{"stream":false,"temperature":0.0}', '{"stream":0,"temperature":0}']


def test_ids_are_time_ordered_hex_with_the_process_prefix() -> None:
    from historymw.record import id_source, new_id

    drafts = _captured([(("m", MSGS), {})] * 50)
    build_rows(drafts)
    prefix = id_source()[0]
    ids = [d["id"] for d in drafts]
    assert len(set(ids)) == 50 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    for d in drafts:
        assert d["id"][:12] == f"{int(d['started'] * 1000):012x}" and d["id"][12:24] == prefix
    assert len(new_id(drafts[0]["started"])) == 32


def test_drafts_of_another_shape_and_the_same_length_are_told_apart() -> None:
    """Within a run of one shape the fast path looks at a draft's length only: a draft of the same
    length and other keys must still get its own row, and one that has an id must keep it."""
    a = _captured([(("m", MSGS), {})])[0]
    other = {k: v for k, v in a.items() if k != "source"} | {"session": "s-b"}  # same length, other keys
    given = {k: v for k, v in a.items() if k != "provider"} | {"id": "0123456789abcdef0123456789abcdef"}
    batch = [dict(a), other, dict(a), given, dict(a), dict(other)]
    assert len({len(d) for d in batch}) == 1
    got = _by_column(build_rows(batch))
    assert got == _expected(batch)  # (every draft has its id by now: the same on both sides)
    assert given["id"] == "0123456789abcdef0123456789abcdef" and given["id"] in got
    assert got[other["id"]]["session"] == "s-b" and got[other["id"]]["source"] == "decorator"
    assert len(got) == 6


def test_long_conversations_write_what_sealing_would() -> None:
    history = [{"role": "user" if i % 2 else "assistant", "content": f"turn {i}"} for i in range(150)]
    drafts = _captured([(("m", history[:n]), {}) for n in (3, 64, 65, 150)])
    _check_same(drafts)
