"""Prompt-cache, reasoning and request details: read from the response shapes providers
return, settable by code, kept through the SQL store."""

from __future__ import annotations

from typing import Any

import historymw as hm
from historymw.store import Store

OPENAI_CHAT = {
    "id": "chatcmpl-1", "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280,
              "prompt_tokens_details": {"cached_tokens": 1024},
              "completion_tokens_details": {"reasoning_tokens": 64}},
}
ANTHROPIC_MESSAGE = {
    "id": "msg_1", "model": "claude-x", "type": "message", "role": "assistant", "stop_reason": "end_turn",
    "content": [{"type": "text", "text": "hi"}],
    "usage": {"input_tokens": 20, "output_tokens": 5, "cache_read_input_tokens": 900,
              "cache_creation_input_tokens": 300},
}
OPENAI_RESPONSES_USAGE = {"input_tokens": 50, "output_tokens": 30, "total_tokens": 80,
                          "input_tokens_details": {"cached_tokens": 32},
                          "output_tokens_details": {"reasoning_tokens": 12}}


def _ask_returning(result: Any) -> Any:
    @hm.recorded(provider="p")
    def ask(model: str, messages: list[dict[str, str]]) -> Any:
        return result
    return ask


def test_openai_chat_usage_details_are_recorded() -> None:
    _ask_returning(OPENAI_CHAT)("gpt-4o-mini", [{"role": "user", "content": "q"}])
    r = hm.recent(1)[0]
    assert (r.input_tokens, r.cache_read_input_tokens, r.reasoning_tokens) == (1200, 1024, 64)
    assert r.cache_creation_input_tokens is None


def test_anthropic_cache_tokens_are_recorded() -> None:
    _ask_returning(ANTHROPIC_MESSAGE)("claude-x", [{"role": "user", "content": "q"}])
    r = hm.recent(1)[0]
    assert (r.cache_read_input_tokens, r.cache_creation_input_tokens) == (900, 300)
    assert r.finish_reason == "end_turn"


def test_responses_api_usage_details_are_recorded() -> None:
    with hm.call(provider="openai", model="m", messages=[{"role": "user", "content": "q"}]) as c:
        c.output("done", usage=OPENAI_RESPONSES_USAGE)
    r = hm.recent(1)[0]
    assert (r.input_tokens, r.output_tokens, r.cache_read_input_tokens, r.reasoning_tokens) == (50, 30, 32, 12)


def test_system_instructions_tools_and_port_are_settable_and_content_gated() -> None:
    tools = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    with hm.call(provider="anthropic", model="m", messages=[{"role": "user", "content": "q"}]) as c:
        c.set(system_instructions="Be terse.", tool_definitions=tools, server_port=8443)
        c.output("ok")
    r = hm.recent(1)[0]
    assert r.system_instructions == ["Be terse."]
    assert r.tool_definitions == tools
    assert r.server_port == 8443

    hm.configure(capture_content=False)
    with hm.call(provider="anthropic", model="m", messages=[{"role": "user", "content": "q"}]) as c:
        c.set(system_instructions="Be terse.", tool_definitions=tools)
        c.output("ok")
    r = hm.recent(1)[0]
    assert r.system_instructions == [] and r.tool_definitions == []


def test_secret_in_a_system_prompt_is_redacted() -> None:
    with hm.call(provider="anthropic", model="m", messages=[]) as c:
        c.set(system_instructions="use key sk-proj-abcdefghijklmnopqrstuvwx please")
        c.output("ok")
    assert "sk-proj" not in hm.recent(1)[0].model_dump_json()


def test_new_fields_survive_the_sql_store(sqlite_url: str) -> None:
    hm.configure(backends=["ring", "sql"], sql_url=sqlite_url)
    _ask_returning(OPENAI_CHAT)("gpt-4o-mini", [{"role": "user", "content": "q"}])
    with hm.call(provider="anthropic", model="m", messages=[]) as c:
        c.set(system_instructions="Be terse.", server_port=443)
        c.output(result=ANTHROPIC_MESSAGE)
    assert hm.flush(5.0)
    stored = {r.provider: r for r in Store(sqlite_url).recent(10)}
    assert stored["p"].cache_read_input_tokens == 1024 and stored["p"].reasoning_tokens == 64
    assert stored["anthropic"].cache_creation_input_tokens == 300
    assert stored["anthropic"].system_instructions == ["Be terse."]
    assert stored["anthropic"].server_port == 443
