"""The OpenAI SDK with historymw: two lines added. Runs offline against the bundled local server.

    pip install 'historymw[openai,localllm]'
    python examples/openai_app.py
"""

from __future__ import annotations

import asyncio

import openai

import historymw as hm
from historymw.integrations import openai as hm_openai
from historymw.localllm import LocalLLM

hm_openai.install()  # the two lines: import and install


def main(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="sk-not-a-real-key", max_retries=0)
    messages = [{"role": "user", "content": "Say hello"}]

    client.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0.2)

    with hm.history(session="user-42", tags={"feature": "greeting"}):
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True,
                                                stream_options={"include_usage": True})
        print("streamed:", "".join(c.choices[0].delta.content or "" for c in stream if c.choices))

    client.responses.create(model="gpt-4o-mini", input="Hello, Responses API", instructions="Be brief.")

    async def ask() -> None:
        aclient = openai.AsyncOpenAI(base_url=base_url, api_key="sk-not-a-real-key", max_retries=0)
        await aclient.chat.completions.create(model="gpt-4o-mini", messages=messages)
    asyncio.run(ask())

    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "[[429]]"}])
    except openai.RateLimitError as exc:
        print("rate limited, and recorded:", exc.status_code)

    with hm.history(disable=True):
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # not recorded

    hm.inspect_history(n=5)
    print(hm.stats())


if __name__ == "__main__":
    with LocalLLM() as server:  # an OpenAI-compatible server on a free loopback port
        main(server.openai_url)
