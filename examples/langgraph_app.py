"""A small LangGraph agent with historymw: every model call is one record, the thread is the session.

    pip install 'historymw[langchain,openai,localllm]'
    python examples/langgraph_app.py

Runs offline: ChatOpenAI talks to the bundled local server, which calls the tool
once and then answers. The OpenAI SDK integration is installed too, to show that
a call through both is still one record (LangChain's, with the SDK's usage).
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

import historymw as hm
from historymw.integrations import langchain as hm_langchain
from historymw.integrations import openai as hm_openai
from historymw.localllm import LocalLLM

hm_langchain.install()
hm_openai.install()


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


class State(TypedDict):
    messages: Annotated[list[Any], add_messages]


def build(base_url: str) -> Any:
    model = ChatOpenAI(model="gpt-4o-mini", base_url=base_url, api_key="sk-not-a-real-key", max_retries=0,
                       stream_usage=True).bind_tools([get_weather])

    def agent(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def tools(state: State) -> dict[str, Any]:
        calls = state["messages"][-1].tool_calls
        return {"messages": [ToolMessage(get_weather.invoke(c["args"]), tool_call_id=c["id"]) for c in calls]}

    def route(state: State) -> str:
        return "tools" if state["messages"][-1].tool_calls else END

    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_node("tools", tools)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=InMemorySaver())


def main(base_url: str) -> None:
    app = build(base_url)
    config = {"configurable": {"thread_id": "conversation-1"}, "metadata": {"feature": "weather"}}
    final = app.invoke({"messages": [("user", "Oslo")]}, config)
    print("answer:", final["messages"][-1].content)
    for step in app.stream({"messages": [("user", "Thanks!")]}, config, stream_mode="updates"):
        print("step:", list(step))
    hm.inspect_history(n=3)
    print("sessions:", [(r.session, r.tags.get("langgraph_node")) for r in hm.recent(10)])


if __name__ == "__main__":
    with LocalLLM() as server:
        main(server.openai_url)
