"""A realistic history written through historymw itself (hm.call into the SQL store), for the viewer's tests,
its screenshots and docs: several providers, models and sessions, errors, streams, tool calls, long and
hostile content."""

from __future__ import annotations

import random
import time

import historymw as hm

MODELS = [("openai", "gpt-4o-mini", 0.15e-6, 0.6e-6), ("anthropic", "claude-3-5-sonnet", 3e-6, 15e-6),
          ("openai", "gpt-4o", 2.5e-6, 10e-6), ("local", "llama-3.1-8b", None, None)]
SESSIONS = ["alice-2f9c", "bob-77a1", "carol-0be4", "dave-c3d2", "erin-91aa"]
FEATURES = ["search", "chat", "summarize"]
QUESTIONS = [
    "What is the capital of Australia?",
    "Summarise this support ticket in two sentences: the customer cannot log in after resetting the password.",
    "Translate 'good morning' into Portuguese.",
    "Write a SQL query that counts orders per day for the last week.",
    "Which of these three plans is cheapest for 20 seats?",
    "Explain keyset pagination to a new engineer.",
]
XSS = ("<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\"> "
       "[click](javascript:alert(1)) \x1b[31mred")
XSS_SESSION = "hostile"


def answer(q: str, i: int) -> str:
    return f"Answer #{i}: " + {0: "Canberra.", 1: "The customer is locked out after a password reset; "
                                  "we asked them to clear cookies and retry.",
                               2: "Bom dia.", 3: "SELECT date(created_at) AS day, count(*) FROM orders "
                                  "WHERE created_at > now() - interval '7 days' GROUP BY day;",
                               4: "The Team plan: $8 per seat.", 5: "Remember the last row you showed; "
                                  "ask for rows after it, using an index."}[QUESTIONS.index(q)]


def write_history(url: str, n: int = 1000, *, span_s: float = 36 * 3600, seed: int = 7,
                  end: float | None = None, hostile: bool = True) -> None:
    """`n` calls spread over the `span_s` seconds before `end` (now), oldest first, into the store at `url`."""
    rnd = random.Random(seed)
    hm.configure(backends=["sql"], sql_url=url, maxlen=100)
    end = time.time() if end is None else end
    for i in range(n):
        started = end - span_s + span_s * (i + rnd.random() * 0.5) / n
        provider, model, pin, pout = MODELS[rnd.randrange(len(MODELS)) if i % 9 else 0]
        session = SESSIONS[i % len(SESSIONS)] if i % 4 else None
        q = QUESTIONS[i % len(QUESTIONS)]
        messages = [{"role": "system", "content": "You are a concise assistant."}, {"role": "user", "content": q}]
        if i % 50 == 7:  # a long conversation with a tool call, folded in the viewer
            messages += [{"role": "assistant", "content": "", "tool_calls": [
                {"id": f"call_{i}", "type": "function",
                 "function": {"name": "search_docs", "arguments": '{"query": "pagination", "k": 3}'}}]},
                {"role": "tool", "tool_call_id": f"call_{i}", "content": "Keyset pagination... " * 120},
                {"role": "user", "content": "Thanks. Now the short version?"}]
        latency = rnd.lognormvariate(-0.7, 0.6) * (2.5 if "sonnet" in model else 1.0)
        fails = i % 23 == 5
        stream = i % 6 == 2
        with hm.history(session=session, tags={"feature": FEATURES[i % 3], "env": "prod" if i % 2 else "staging"}):
            c = hm.call(provider=provider, model=model, messages=messages, started_at=started,
                        params={"temperature": 0.2, "max_tokens": 512, "api_key": "sk-test-0123456789abcdef"}).start()
            if fails:
                err = TimeoutError("upstream timed out after 30s") if i % 2 else RuntimeError(
                    "rate limited: 429 Too Many Requests")
                c.end(error=err, ended_at=started + latency * 3)
                continue
            text = answer(q, i)
            tin, tout = 20 + len(q) // 4 + rnd.randrange(40), 8 + len(text) // 4
            cost = None if pin is None else tin * pin + tout * (pout or 0)
            if stream:
                for k in range(0, len(text), 12):
                    c.chunk(text[k:k + 12])
                c.set(time_to_first_token_s=latency * 0.3)
            c.output(None if stream else text, usage={"prompt_tokens": tin, "completion_tokens": tout,
                                                      "total_tokens": tin + tout},
                     finish_reason="stop", cost=cost)
            c.end(ended_at=started + latency)
        if i % 200 == 199:
            hm.flush(timeout=10)
    if hostile:
        with hm.history(session=XSS_SESSION, tags={"feature": "<b>bold</b>"}), \
                hm.call(provider="openai", model="gpt-4o-mini", started_at=end - 1.0,
                        messages=[{"role": "user", "content": XSS}]) as c:
            c.output(text=XSS, usage={"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18})
    result = hm.flush(timeout=30)
    assert result, f"the history was not written: {result}"
    stats = hm.stats()
    assert not stats.dropped, f"records were dropped while writing test data: {stats}"
    hm.configure()
