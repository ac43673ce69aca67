"""Read an LM call's request and result into draft fields.

Understands what most clients return: a str, an OpenAI-style response (object or
dict with `choices` and `usage`), an Anthropic-style message (`content` blocks,
`stop_reason`), and their stream chunks. Anything else goes through the user's
`extract=` function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .plain import DICT_OVERHEAD, DICT_PER_ITEM, Budget, plain, plain_str


def get(obj: Any, name: str) -> Any:
    """obj[name] for mappings, obj.name otherwise; None when absent."""
    if type(obj) is dict or isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(v: Any) -> int | None:
    if type(v) is int:
        return v
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def _str(v: Any, budget: Budget) -> str | None:
    """A str field of a response (role, finish reason): kept if it is one, else its plain form."""
    if v is None or type(v) is str:
        return v
    copied = plain(v, budget)
    return copied if isinstance(copied, str) else None


def usage_fields(usage: Any, draft: dict[str, Any]) -> None:
    """Token counts from OpenAI (prompt/completion) or Anthropic (input/output) usage."""
    if usage is None:
        return
    if type(usage) is dict:  # a response as plain data (LiteLLM's logging payload): no get() per field
        read = usage.get
        inp, out, total = read("prompt_tokens"), read("completion_tokens"), read("total_tokens")
        n = len(usage)
        if (type(inp) is int and type(out) is int and type(total) is int
                and (n == 3 or (n == 5 and read("prompt_tokens_details", 0) is None
                                and read("completion_tokens_details", 0) is None))):
            # The usual usage: the three counts, and maybe both details as None: nothing else to read.
            draft["input_tokens"], draft["output_tokens"], draft["total_tokens"] = inp, out, total
            return
        if inp is None:
            inp = read("input_tokens")
        if out is None:
            out = read("output_tokens")
    else:
        inp = get(usage, "prompt_tokens")
        if inp is None:
            inp = get(usage, "input_tokens")
        out = get(usage, "completion_tokens")
        if out is None:
            out = get(usage, "output_tokens")
        total = get(usage, "total_tokens")
    inp, out, total = _int(inp), _int(out), _int(total)
    if total is None and inp is not None and out is not None:
        total = inp + out
    draft["input_tokens"], draft["output_tokens"], draft["total_tokens"] = inp, out, total
    # Prompt-cache and reasoning details: OpenAI chat (prompt/completion_tokens_details),
    # OpenAI Responses (input/output_tokens_details), Anthropic (cache_*_input_tokens).
    # Counts are kept as the provider reports them; only non-zero or given values are set.
    details_in = get(usage, "prompt_tokens_details")
    if details_in is None:
        details_in = get(usage, "input_tokens_details")
    cached = _int(get(details_in, "cached_tokens")) if details_in is not None else None
    if cached is None:
        cached = _int(get(usage, "cache_read_input_tokens"))
    created = _int(get(usage, "cache_creation_input_tokens"))
    if created is None and details_in is not None:
        created = _int(get(details_in, "cache_creation_tokens"))
    details_out = get(usage, "completion_tokens_details")
    if details_out is None:
        details_out = get(usage, "output_tokens_details")
    reasoning = _int(get(details_out, "reasoning_tokens")) if details_out is not None else None
    if cached is not None:
        draft["cache_read_input_tokens"] = cached
    if created is not None:
        draft["cache_creation_input_tokens"] = created
    if reasoning is not None:
        draft["reasoning_tokens"] = reasoning


def _text_of(content: Any) -> str | None:
    """Text of a message's content: a str, or the text parts of a list of blocks."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [get(b, "text") for b in content]
        texts = [p for p in parts if isinstance(p, str)]
        return "".join(texts) if texts else None
    return None


def result_fields(result: Any, draft: dict[str, Any], budget: Budget, content: bool) -> None:
    """Fill output_text, outputs, finish_reason, usage and ids from a call's result."""
    if isinstance(result, str):
        if content:
            draft["output_text"] = plain_str(result, budget)
        return
    if result is None:
        return
    choices = get(result, "choices")
    if isinstance(choices, (list, tuple)):
        # One plain dict per choice, built directly: responses are large objects and a
        # generic deep copy of them would cost more than the rest of the record.
        outputs = []
        for i, choice in enumerate(choices):
            message = get(choice, "message")
            text = get(message, "content") if message is not None else get(choice, "text")
            if type(text) is not str and text is not None:
                text = _text_of(text)
            reason = _str(get(choice, "finish_reason"), budget)
            if i == 0:
                draft["finish_reason"] = reason
            if content:
                out: dict[str, Any] = {
                    "index": i, "role": _str(get(message, "role"), budget) if message is not None else None,
                    "content": None if text is None else plain_str(text, budget), "finish_reason": reason}
                tool_calls = get(message, "tool_calls") if message is not None else None
                if tool_calls:
                    out["tool_calls"] = plain(tool_calls, budget)
                budget.take(DICT_OVERHEAD + 4 * DICT_PER_ITEM)
                outputs.append(out)
        if content:
            draft["outputs"] = outputs
            draft["output_text"] = outputs[0]["content"] if outputs else None
    elif get(result, "stop_reason") is not None or isinstance(get(result, "content"), list):
        # Anthropic-style message
        reason = get(result, "stop_reason")
        draft["finish_reason"] = reason if isinstance(reason, str) else None
        if content:
            text = _text_of(get(result, "content"))
            draft["output_text"] = plain_str(text, budget) if text is not None else None
            draft["outputs"] = plain(get(result, "content"), budget)
    usage_fields(get(result, "usage"), draft)
    rid, rmodel = get(result, "id"), get(result, "model")
    if type(rid) is str:
        draft["response_id"] = rid[:256]
    if type(rmodel) is str:
        draft["response_model"] = rmodel[:256]


def chunk_fields(chunk: Any) -> tuple[str | None, str | None, Any]:
    """(text, finish_reason, usage) of one stream chunk: a str or an OpenAI/Anthropic-style delta."""
    if isinstance(chunk, str):
        return chunk, None, None
    choices = get(chunk, "choices")
    if isinstance(choices, (list, tuple)):
        if not choices:
            return None, None, get(chunk, "usage")
        c0 = choices[0]
        delta = get(c0, "delta")
        text = get(delta, "content") if delta is not None else get(c0, "text")
        reason = get(c0, "finish_reason")
        return (text if isinstance(text, str) else None,
                reason if isinstance(reason, str) else None, get(chunk, "usage"))
    delta = get(chunk, "delta")  # Anthropic content_block_delta / message_delta
    if delta is not None:
        text = get(delta, "text")
        reason = get(delta, "stop_reason")
        return (text if isinstance(text, str) else None,
                reason if isinstance(reason, str) else None, get(chunk, "usage"))
    return None, None, None
