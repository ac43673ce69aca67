"""A local OpenAI- and Anthropic-compatible HTTP server, for tests and offline examples.

    from historymw.localllm import LocalLLM

    with LocalLLM() as server:                       # a free port on 127.0.0.1, in a thread
        client = openai.OpenAI(base_url=server.openai_url, api_key="unused")
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])

It speaks the providers' documented wire formats, so the real SDKs and the
frameworks built on them run unchanged against it: OpenAI chat completions
(JSON, and SSE with `stream_options.include_usage`), the Responses API (JSON and
its SSE events), Anthropic messages (JSON and its SSE events). It answers
deterministically: the reply echoes the last user text; with `tools` offered
(and no tool result yet) it calls the first tool. The last user text steers
failures: `[[429]]` and `[[500]]` answer with the provider's error JSON and
that status, `[[cut]]` drops the connection in the middle of a stream.

Usage is counted in words. Half the prompt's words are reported as served
from the prompt cache; models whose name starts with "o" report 2 reasoning
tokens; an Anthropic request with `cache_control` reports 3 cache-creation tokens.

Needs Starlette and uvicorn: `pip install 'historymw[localllm]'`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .errors import require

__all__ = ["LocalLLM"]

_ids = itertools.count(1)
_ERRORS = {"[[429]]": 429, "[[500]]": 500}


class _Cut(Exception):  # noqa: N818 - raised inside a stream to drop the connection
    """Ends a response mid-stream: uvicorn closes the connection without finishing the body."""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks / parts
        out = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    out.append(text)
                elif isinstance(part.get("content"), (str, list)):
                    out.append(_text_of(part["content"]))
        return " ".join(out)
    return ""


def _words(text: str) -> int:
    return len(text.split())


class _Turn:
    """What the server answers to one request, whatever the wire format."""

    def __init__(self, model: str, messages: list[Any], tools: list[Any], system: str = "") -> None:
        self.model = model or "local"
        last_user, tool_result = "", False
        for m in messages:
            if not isinstance(m, dict):
                continue
            role = m.get("role") or m.get("type")
            if role in ("tool", "function_call_output"):
                tool_result = True
            elif role == "user":
                content = m.get("content")
                blocks = content if isinstance(content, list) else []
                if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks):
                    tool_result = True
                else:
                    last_user, tool_result = _text_of(content), False
        self.last_user = last_user
        prompt = " ".join(_text_of(m.get("content") if isinstance(m, dict) else m) for m in messages)
        self.input_tokens = max(_words(prompt) + _words(system), 1)
        self.error = next((status for marker, status in _ERRORS.items() if marker in last_user), None)
        self.cut = "[[cut]]" in last_user
        self.tool: tuple[str, dict[str, Any]] | None = None
        if tools and not tool_result:
            self.tool = _tool_call(tools[0], last_user)
        self.text = "" if self.tool else f"You said: {last_user}" if last_user else "Hello from the local LLM."
        self.output_tokens = max(_words(self.text), 1)
        self.cached_tokens = self.input_tokens // 2
        self.reasoning_tokens = 2 if self.model.startswith("o") else 0
        self.n = next(_ids)

    def pieces(self) -> list[str]:
        """The reply split into stream deltas, one a word (with its leading space)."""
        words = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _tool_call(tool: Any, text: str) -> tuple[str, dict[str, Any]]:
    """(name, arguments) for a call of `tool` in any provider's tool shape, filling required fields."""
    if not isinstance(tool, dict):
        return "tool", {}
    inner = tool.get("function")
    fn: dict[str, Any] = inner if isinstance(inner, dict) else tool
    name = str(fn.get("name") or "tool")
    schema = fn.get("parameters") or fn.get("input_schema") or {}
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    args: dict[str, Any] = {}
    for key in (schema.get("required") or list(props)) if isinstance(schema, dict) else []:
        kind = props.get(key, {}).get("type") if isinstance(props.get(key), dict) else None
        args[key] = 1 if kind in ("integer", "number") else True if kind == "boolean" else (text or "x")
    return name, args


def _sse(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


# -- OpenAI chat completions ---------------------------------------------------------


def _chat_usage(turn: _Turn) -> dict[str, Any]:
    return {"prompt_tokens": turn.input_tokens, "completion_tokens": turn.output_tokens,
            "total_tokens": turn.input_tokens + turn.output_tokens,
            "prompt_tokens_details": {"cached_tokens": turn.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": turn.reasoning_tokens, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def _chat_json(turn: _Turn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None, "refusal": None}
    if turn.tool:
        message["tool_calls"] = [{"id": f"call_{turn.n}", "type": "function",
                                  "function": {"name": turn.tool[0], "arguments": json.dumps(turn.tool[1])}}]
    return {"id": f"chatcmpl-local-{turn.n}", "object": "chat.completion", "created": int(time.time()),
            "model": turn.model, "system_fingerprint": "fp_local",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if turn.tool else "stop"}],
            "usage": _chat_usage(turn)}


def _chat_sse(turn: _Turn, include_usage: bool) -> Iterator[str]:
    base = {"id": f"chatcmpl-local-{turn.n}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": turn.model, "system_fingerprint": "fp_local"}

    def chunk(delta: dict[str, Any], reason: str | None = None) -> str:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]})

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    if turn.tool:
        yield chunk({"tool_calls": [{"index": 0, "id": f"call_{turn.n}", "type": "function",
                                     "function": {"name": turn.tool[0], "arguments": ""}}]})
        yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": json.dumps(turn.tool[1])}}]})
    for i, piece in enumerate(turn.pieces() if turn.text else []):
        if turn.cut and i == 2:
            raise _Cut
        yield chunk({"content": piece})
    yield chunk({}, "tool_calls" if turn.tool else "stop")
    if include_usage:
        yield _sse({**base, "choices": [], "usage": _chat_usage(turn)})
    yield _sse("[DONE]")


# -- OpenAI Responses ----------------------------------------------------------------


def _responses_turn(body: dict[str, Any]) -> _Turn:
    raw = body.get("input")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    return _Turn(str(body.get("model") or ""), items, tools, str(body.get("instructions") or ""))


def _responses_output(turn: _Turn) -> list[dict[str, Any]]:
    if turn.tool:
        return [{"type": "function_call", "id": f"fc_local_{turn.n}", "call_id": f"call_{turn.n}",
                 "name": turn.tool[0], "arguments": json.dumps(turn.tool[1]), "status": "completed"}]
    return [{"type": "message", "id": f"msg_local_{turn.n}", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": turn.text, "annotations": [], "logprobs": []}]}]


def _responses_json(turn: _Turn, body: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    done = status == "completed"
    return {"id": f"resp_local_{turn.n}", "object": "response", "created_at": int(time.time()),
            "status": status, "model": turn.model, "output": _responses_output(turn) if done else [],
            "instructions": body.get("instructions"), "error": None, "incomplete_details": None,
            "metadata": {}, "parallel_tool_calls": True, "temperature": body.get("temperature", 1.0),
            "top_p": 1.0, "tool_choice": "auto", "tools": body.get("tools") or [],
            "text": {"format": {"type": "text"}},
            "usage": {"input_tokens": turn.input_tokens,
                      "input_tokens_details": {"cached_tokens": turn.cached_tokens},
                      "output_tokens": turn.output_tokens,
                      "output_tokens_details": {"reasoning_tokens": turn.reasoning_tokens},
                      "total_tokens": turn.input_tokens + turn.output_tokens} if done else None}


def _responses_sse(turn: _Turn, body: dict[str, Any]) -> Iterator[str]:
    seq = itertools.count()

    def ev(kind: str, **data: Any) -> str:
        return _sse({"type": kind, "sequence_number": next(seq), **data}, kind)

    yield ev("response.created", response=_responses_json(turn, body, "in_progress"))
    yield ev("response.in_progress", response=_responses_json(turn, body, "in_progress"))
    item = _responses_output(turn)[0]
    if turn.tool:
        yield ev("response.output_item.added", output_index=0, item={**item, "arguments": "", "status": "in_progress"})
        yield ev("response.function_call_arguments.delta", item_id=item["id"], output_index=0,
                 delta=item["arguments"])
        yield ev("response.function_call_arguments.done", item_id=item["id"], output_index=0,
                 arguments=item["arguments"], name=item["name"])
    else:
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield ev("response.output_item.added", output_index=0,
                 item={**item, "status": "in_progress", "content": []})
        yield ev("response.content_part.added", item_id=item["id"], output_index=0, content_index=0, part=part)
        for i, piece in enumerate(turn.pieces()):
            if turn.cut and i == 2:
                raise _Cut
            yield ev("response.output_text.delta", item_id=item["id"], output_index=0, content_index=0,
                     delta=piece, logprobs=[])
        yield ev("response.output_text.done", item_id=item["id"], output_index=0, content_index=0,
                 text=turn.text, logprobs=[])
        yield ev("response.content_part.done", item_id=item["id"], output_index=0, content_index=0,
                 part={**part, "text": turn.text})
    yield ev("response.output_item.done", output_index=0, item=item)
    yield ev("response.completed", response=_responses_json(turn, body))


# -- Anthropic messages --------------------------------------------------------------


def _anthropic_turn(body: dict[str, Any]) -> _Turn:
    system = body.get("system")
    return _Turn(str(body.get("model") or ""), list(body.get("messages") or []), list(body.get("tools") or []),
                 _text_of(system))


def _anthropic_usage(turn: _Turn, body: dict[str, Any], output_tokens: int) -> dict[str, Any]:
    created = 3 if "cache_control" in json.dumps(body) else 0
    return {"input_tokens": turn.input_tokens, "output_tokens": output_tokens,
            "cache_read_input_tokens": turn.cached_tokens, "cache_creation_input_tokens": created}


def _anthropic_content(turn: _Turn) -> list[dict[str, Any]]:
    if turn.tool:
        return [{"type": "tool_use", "id": f"toolu_local_{turn.n}", "name": turn.tool[0], "input": turn.tool[1]}]
    return [{"type": "text", "text": turn.text}]


def _anthropic_json(turn: _Turn, body: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"msg_local_{turn.n}", "type": "message", "role": "assistant", "model": turn.model,
            "content": _anthropic_content(turn), "stop_reason": "tool_use" if turn.tool else "end_turn",
            "stop_sequence": None, "usage": _anthropic_usage(turn, body, turn.output_tokens)}


def _anthropic_sse(turn: _Turn, body: dict[str, Any]) -> Iterator[str]:
    start = {**_anthropic_json(turn, body), "content": [], "stop_reason": None,
             "usage": _anthropic_usage(turn, body, 1)}
    yield _sse({"type": "message_start", "message": start}, "message_start")
    yield _sse({"type": "ping"}, "ping")
    if turn.tool:
        block = _anthropic_content(turn)[0]
        yield _sse({"type": "content_block_start", "index": 0, "content_block": {**block, "input": {}}},
                   "content_block_start")
        yield _sse({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": json.dumps(turn.tool[1])}},
                   "content_block_delta")
    else:
        yield _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                   "content_block_start")
        for i, piece in enumerate(turn.pieces()):
            if turn.cut and i == 2:
                raise _Cut
            yield _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                       "content_block_delta")
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    yield _sse({"type": "message_delta",
                "delta": {"stop_reason": "tool_use" if turn.tool else "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": turn.output_tokens}}, "message_delta")
    yield _sse({"type": "message_stop"}, "message_stop")


# -- the app and its thread ----------------------------------------------------------


def _openai_error(status: int) -> dict[str, Any]:
    if status == 429:
        return {"error": {"message": "Rate limit reached (local server)", "type": "requests",
                          "param": None, "code": "rate_limit_exceeded"}}
    return {"error": {"message": "The server had an error while processing your request (local server)",
                      "type": "server_error", "param": None, "code": None}}


def _anthropic_error(status: int) -> dict[str, Any]:
    kind = "rate_limit_error" if status == 429 else "api_error"
    return {"type": "error", "error": {"type": kind, "message": f"{kind} (local server)"}}


def _app(requests: deque[dict[str, Any]]) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    # Errors say "do not retry": the SDKs' default retries would only slow tests down.
    no_retry = {"x-should-retry": "false"}

    async def stream(lines: Iterator[str]) -> AsyncIterator[str]:
        for line in lines:
            yield line
            await asyncio.sleep(0)

    def reply(turn: _Turn, body: dict[str, Any], error_json: Any, as_json: Any, as_sse: Any) -> Response:
        if turn.error is not None:
            return JSONResponse(error_json(turn.error), status_code=turn.error, headers=no_retry)
        if body.get("stream"):
            return StreamingResponse(stream(as_sse()), media_type="text/event-stream")
        return JSONResponse(as_json())

    async def read(request: Request) -> dict[str, Any]:
        body = await request.json()
        requests.append({"path": request.url.path, "body": body})
        return body if isinstance(body, dict) else {}

    async def chat(request: Request) -> Response:
        body = await read(request)
        turn = _Turn(str(body.get("model") or ""), list(body.get("messages") or []), list(body.get("tools") or []))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return reply(turn, body, _openai_error, lambda: _chat_json(turn), lambda: _chat_sse(turn, include_usage))

    async def responses(request: Request) -> Response:
        body = await read(request)
        turn = _responses_turn(body)
        return reply(turn, body, _openai_error, lambda: _responses_json(turn, body),
                     lambda: _responses_sse(turn, body))

    async def messages(request: Request) -> Response:
        body = await read(request)
        turn = _anthropic_turn(body)
        return reply(turn, body, _anthropic_error, lambda: _anthropic_json(turn, body),
                     lambda: _anthropic_sse(turn, body))

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
    ])


class LocalLLM:
    """The server, on 127.0.0.1 (a free port unless `port` is given), run by uvicorn in a daemon thread."""

    def __init__(self, port: int = 0) -> None:
        require("starlette", what="historymw.localllm", extra="localllm")
        require("uvicorn", what="historymw.localllm", extra="localllm")
        self._port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.requests: deque[dict[str, Any]] = deque(maxlen=100)  # the newest request bodies, for tests
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """The `base_url` for OpenAI clients (ends in /v1)."""
        return f"{self.url}/v1"

    @property
    def anthropic_url(self) -> str:
        """The `base_url` for Anthropic clients."""
        return self.url

    def start(self, timeout: float = 10.0) -> LocalLLM:
        import uvicorn

        if self._thread is not None:
            return self
        config = uvicorn.Config(_app(self.requests), host="127.0.0.1", port=self._port, log_config=None,
                                log_level="critical", access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="historymw-localllm", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError("historymw.localllm: the server did not start")
            time.sleep(0.01)
        self.port = server.servers[0].sockets[0].getsockname()[1]
        self._server, self._thread = server, thread
        return self

    def stop(self, timeout: float = 5.0) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout)

    def __enter__(self) -> LocalLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
