"""A LlamaIndex Workflow with historymw: each LLM call in it is one record.

    pip install 'historymw[llamaindex,localllm]'
    python examples/llamaindex_workflow.py

Runs offline: LlamaIndex's OpenAI LLM talks to the bundled local server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.llms import ChatMessage
from llama_index.core.workflow import Event, StartEvent, StopEvent, Workflow, step
from llama_index.llms.openai import OpenAI

import historymw as hm
from historymw.integrations import llamaindex as hm_llamaindex
from historymw.localllm import LocalLLM

hm_llamaindex.install()


class Drafted(Event):
    draft: str


class Writer(Workflow):
    def __init__(self, llm: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.llm = llm

    @step
    async def draft(self, ev: StartEvent) -> Drafted:
        reply = await self.llm.achat([ChatMessage(role="user", content=f"Draft a note about {ev.topic}")])
        return Drafted(draft=reply.message.content or "")

    @step
    async def polish(self, ev: Drafted) -> StopEvent:
        pieces = [c.delta or "" async for c in await self.llm.astream_chat(
            [ChatMessage(role="system", content="Polish it."), ChatMessage(role="user", content=ev.draft)])]
        return StopEvent(result="".join(pieces))


async def main(base_url: str) -> None:
    llm = OpenAI(model="gpt-4o-mini", api_base=base_url, api_key="sk-not-a-real-key", max_retries=0)
    with hm.history(session="writer-1"):
        result = await Writer(llm=llm, timeout=60).run(topic="bounded memory")
    print("result:", result)
    hm.inspect_history(n=2)


if __name__ == "__main__":
    with LocalLLM() as server:
        asyncio.run(main(server.openai_url))
