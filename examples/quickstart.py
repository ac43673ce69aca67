"""Quickstart: record LM calls into SQLite, look at them in code, then with the `historymw` CLI.

    pip install -e '.[sql]'
    python examples/quickstart.py

Runs offline: `ask` stands in for an LLM client (any function that takes
`model` and `messages` works the same way). Records go to the ring buffer (for
`inspect_history`) and to ./historymw.db, the default SQLite store.
"""

from __future__ import annotations

import random
import time

import historymw as hm
from historymw.cli import main as historymw_cli

DB = "sqlite:///historymw.db"
hm.configure(backends=["ring", "sql"], sql_url=DB)


@hm.recorded(provider="local")
def ask(model: str, messages: list[dict[str, str]], temperature: float = 0.0, api_key: str = "") -> dict:
    """A fake LLM: answers at once, in the OpenAI response shape (text, usage), fails now and then."""
    time.sleep(random.uniform(0.005, 0.03))
    question = messages[-1]["content"]
    if "fail" in question:
        raise TimeoutError("the fake model timed out")
    answer = f"You asked {len(question)} characters' worth; the answer is 42."
    prompt_tokens, completion_tokens = len(question) // 4 + 8, len(answer) // 4
    return {"model": model, "choices": [{"message": {"role": "assistant", "content": answer},
                                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


questions = ["What is six times seven?", "Name a prime larger than 40.", "Please fail this one.",
             "Summarise the plot of Hamlet in one line."]
for user in ("alice", "bob"):
    with hm.history(session=user, tags={"feature": "quickstart"}):
        for i, q in enumerate(questions):
            model = "fake-small" if i % 2 else "fake-large"
            try:
                # The key is redacted before anything is stored.
                ask(model, [{"role": "user", "content": q}], temperature=0.2, api_key="sk-not-a-real-key-0123456789")
            except TimeoutError:
                pass  # the call's error is recorded; the exception is the caller's, as always

print("== the last two calls, from memory (hm.inspect_history) ==\n")
hm.inspect_history(2)
result = hm.flush(timeout=10)  # the SQL writer works in the background; make sure all is on disk
print(f"== flushed to {DB}: {'ok' if result else result.detail} ==\n")

for argv in (["stats", "--by", "model"], ["tail", "-n", "5"]):
    print(f"$ historymw --db {DB} {' '.join(argv)}")
    historymw_cli(["--db", DB, *argv])
    print()
