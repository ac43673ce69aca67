"""inspect_history() for people, stats() for exact accounting, and what importing costs."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from typing import Any

import historymw as hm


@hm.recorded(provider="openai")
def chat(model: str, messages: Any, **params: Any) -> dict[str, Any]:
    return {"id": "r1", "choices": [{"message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_inspect_history_shows_messages_response_usage_and_status() -> None:
    with hm.history(session="u-42"):
        chat("gpt-4o-mini", [{"role": "system", "content": "Answer briefly."},
                             {"role": "user", "content": "Capital of France?"}])
    out = io.StringIO()
    text = hm.inspect_history(1, file=out)
    assert out.getvalue() == text
    for expected in ("openai/gpt-4o-mini", "chat", " ok ", "session=u-42", "System message:", "Answer briefly.",
                     "User message:", "Capital of France?", "Response:", "Paris.", "tokens in 20 / out 2 / total 22",
                     "finish stop"):
        assert expected in text, expected
    assert "\033[" not in text  # no colour when not on a terminal


def test_inspect_history_colours_only_on_a_terminal_and_shows_errors() -> None:
    @hm.recorded
    def broken(model: str, messages: Any) -> str:
        raise TimeoutError("took too long")

    try:
        broken("m", [{"role": "user", "content": "q"}])
    except TimeoutError:
        pass
    tty = Tty()
    text = hm.inspect_history(1, file=tty)
    assert "\033[" in text and "TimeoutError: took too long" in text


def test_inspect_history_prints_the_last_n_oldest_first_and_says_when_empty() -> None:
    out = io.StringIO()
    assert "no calls recorded yet" in hm.inspect_history(3, file=out)
    for q in ("one", "two", "three"):
        chat("m", [{"role": "user", "content": q}])
    text = hm.inspect_history(2, file=io.StringIO())
    assert "one" not in text and text.index("two") < text.index("three")


def test_stats_counts_exactly_what_happened() -> None:
    hm.configure(maxlen=3, policy="errors+sample", sample_rate=1.0)
    for i in range(5):
        chat("m", [{"role": "user", "content": str(i)}])
    s = hm.stats()
    assert (s.recorded, s.kept, s.evicted, s.records_held, s.dropped, s.errors) == (5, 5, 2, 3, 0, {})
    assert s.bytes_held == sum(r.size_bytes for r in hm.ring()) and s["bytes_held"] == s.bytes_held
    assert s.max_bytes == 16 * 2**20
    hm.configure(policy="sample", sample_rate=0.0)
    chat("m", [])
    assert (hm.stats().recorded, hm.stats().sampled_out) == (0, 1)


def test_import_pulls_in_no_optional_dependency() -> None:
    code = textwrap.dedent("""
        import sys, historymw
        heavy = [m for m in ("sqlalchemy", "opentelemetry", "litellm", "dspy", "psycopg") if m in sys.modules]
        print(heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
