"""LiteLLM with historymw: two lines added, nothing else changed. Runs offline (mock_response=).

    python examples/litellm_app.py
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: LiteLLM's bundled price map

import litellm
from litellm import completion

import historymw as hm
from historymw.integrations import litellm as hm_litellm

hm_litellm.install()  # the two lines: import and install

MESSAGES = [{"role": "user", "content": "Say hello"}]


def main() -> None:
    # sync
    completion(model="openai/gpt-4o-mini", messages=MESSAGES, mock_response="Hello!", temperature=0.2)

    # async
    async def ask() -> None:
        with hm.history(session="user-42", tags={"feature": "greeting"}):
            await litellm.acompletion(model="openai/gpt-4o-mini", messages=MESSAGES, mock_response="Hi, async!")
        await hm_litellm.aflush()  # LiteLLM reports async outcomes on its own task, a moment later

    asyncio.run(ask())

    # a stream: one record, with the joined text and the time to the first token
    stream = completion(model="openai/gpt-4o-mini", messages=MESSAGES, mock_response="Hello from a stream",
                        stream=True)
    print("streamed:", "".join(chunk.choices[0].delta.content or "" for chunk in stream))

    # a failure: recorded with its error type and message, and raised as usual
    try:
        completion(model="openai/gpt-4o-mini", messages=MESSAGES, mock_response="litellm.RateLimitError")
    except litellm.RateLimitError as exc:
        print("raised:", type(exc).__name__)

    # a disabled scope: nothing recorded
    with hm.history(disable=True):
        completion(model="openai/gpt-4o-mini", messages=MESSAGES, mock_response="private")

    hm_litellm.flush()  # wait for LiteLLM's logging threads, then flush historymw's backends

    print()
    for r in hm.recent(10):
        extra = f" ttft={r.time_to_first_token_s:.3f}s" if r.stream and r.time_to_first_token_s is not None else ""
        print(f"{r.status:5} {r.provider}/{r.model} {r.output_text or r.error_type!r:28} "
              f"tokens={r.total_tokens} cost={r.cost} session={r.session}{extra}")
    print()
    hm.inspect_history(1)
    print(hm.stats())


if __name__ == "__main__":
    main()
