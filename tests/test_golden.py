"""Golden records: a fixed set of calls must keep producing exactly these records.

The records of tests/golden/records.json were written by the code of the time
(ids and times normalised). A change to what a call records, or to how many
bytes it accounts for, shows up here as a diff. When a change is meant, rewrite
the file and review its diff in the commit:

    WRITE_GOLDEN=1 python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import historymw as hm
from historymw.plain import str_size

GOLDEN = Path(__file__).parent / "golden" / "records.json"
# Values that differ on every run: replaced by a marker saying they were set.
_VARYING = ("id", "started_at", "ended_at", "duration_s", "time_to_first_token_s",
            "error_stacktrace")  # file paths and line numbers

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]


def ask(model: str, messages: Any, **params: Any) -> Any:
    return RESULTS.get(params.get("user"), "4")


RESULTS: dict[Any, Any] = {
    "openai": {"id": "chatcmpl-1", "model": "gpt-x-2024", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Four."}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": "4"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 8}}},
}


def _calls() -> list[tuple[str, Any]]:
    """(name, a function making the call(s)) in a fixed order."""
    recorded = hm.recorded(provider="openai")(ask)

    @hm.recorded(provider="anthropic")
    async def ask_async(model: str, messages: Any, **params: Any) -> str:
        return "async answer"

    @hm.recorded(provider="openai")
    def stream(model: str, messages: Any, **params: Any) -> Iterator[str]:
        yield from ("Fo", "ur", ".")

    @hm.recorded(provider="openai")
    async def astream(model: str, messages: Any, **params: Any) -> AsyncIterator[str]:
        for piece in ("a", "b"):
            yield piece

    @hm.recorded(provider="openai")
    def failing(model: str, messages: Any, **params: Any) -> str:
        raise TimeoutError("the provider took too long")

    def errors_only() -> None:
        with hm.history(policy="errors"):
            recorded("m", MSGS)
            with pytest.raises(TimeoutError):
                failing(model="m", messages=MSGS, temperature=0.0)

    def fail() -> None:
        with pytest.raises(TimeoutError):
            failing("m", MSGS)

    def consume(gen: Iterator[str]) -> None:
        assert "".join(gen) == "Four."

    async def aconsume() -> None:
        assert [p async for p in astream("m", MSGS)] == ["a", "b"]

    def manual() -> None:
        with hm.call(provider="anthropic", model="claude-x", messages=MSGS, params={"max_tokens": 10}) as c:
            c.output(text="Four.", usage={"input_tokens": 10, "output_tokens": 2}, finish_reason="end_turn")

    def manual_failure() -> None:
        with pytest.raises(ValueError), hm.call(provider="p", model="m", messages="hi"):
            raise ValueError("bad request")

    def keyword_in_scope() -> None:
        with hm.history(session="u-42", tags={"feature": "search"}):
            recorded(model="gpt-4o-mini", messages=MSGS, temperature=0.2, max_tokens=50)

    return [
        ("keyword", lambda: recorded(model="gpt-4o-mini", messages=MSGS, temperature=0.2)),
        ("positional", lambda: recorded("gpt-4o-mini", MSGS, max_tokens=5, seed=1)),
        ("keyword_scoped", keyword_in_scope),
        ("str_prompt", lambda: recorded("m", "just a prompt")),
        ("async", lambda: asyncio.run(ask_async(model="claude", messages=MSGS))),
        ("stream", lambda: consume(stream("m", MSGS, stream=True))),
        ("async_stream", lambda: asyncio.run(aconsume())),
        ("error", fail),
        ("errors_only", errors_only),
        ("secrets", lambda: recorded("m", [{"role": "user", "content": "my key is sk-proj-abcdefghijklmnopqrstuv1234"}],
                                     api_key="sk-live-0123456789abcdefghij",
                                     headers={"Authorization": "Bearer abcdefghijklmnopqrstuvwxyz"},
                                     note="password=hunter22hunter22")),
        ("non_ascii", lambda: recorded("modèle", [{"role": "user", "content": "héllo wörld 😀 ünïcode"}])),
        ("long_prompt", lambda: recorded("m", [{"role": "user", "content": "x" * 30_000}])),
        ("long_prose", lambda: recorded("m", [{"role": "user", "content": "lorem ipsum " * 3_000}])),
        ("openai_result", lambda: recorded(model="gpt-x", messages=MSGS, user="openai")),
        ("non_chat_messages", lambda: recorded("m", [{"role": "user", "content": ["part", {"type": "text"}]},
                                                     {"role": "tool", "content": "r", "tool_call_id": "c1"}])),
        ("manual", manual),
        ("manual_failure", manual_failure),
    ]


def _normalise(record: hm.LMCall) -> dict[str, Any]:
    data = record.model_dump(mode="json")
    if record.error_stacktrace is not None:  # its size depends on where the checkout lies
        data["size_bytes"] -= str_size(record.error_stacktrace)
    for name in _VARYING:
        if data.get(name) is not None:
            data[name] = "<set>"
    return data


def _records_now() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, make in _calls():
        hm.configure(maxlen=100)
        make()
        out[name] = [_normalise(r) for r in hm.recent(100)]
    return out


def test_the_records_of_a_fixed_set_of_calls_are_unchanged() -> None:
    now = _records_now()
    if os.environ.get("WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(now, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert set(now) == set(golden)
    for name in golden:
        assert len(now[name]) == len(golden[name]), f"the {name!r} calls made {len(now[name])} records"
        for got, want in zip(now[name], golden[name], strict=True):
            changed = {k: (want.get(k), got.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
            assert not changed, f"the record of the {name!r} call changed (field: (golden, now)): {changed}"
