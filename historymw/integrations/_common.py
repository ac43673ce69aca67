"""What the LiteLLM and DSPy integrations share.

Kept free of any framework import: both integration modules import this one
before they know whether their framework is installed.
"""

from __future__ import annotations

import contextvars
from typing import Any

# The DSPy LM call in flight (set by DSPy's integration, in the caller's context), else None.
# LiteLLM's logger skips calls made under it, so that a DSPy call that goes through
# LiteLLM becomes one record, not two. LiteLLM runs its pre-call hook and its
# non-streaming success handlers in a copy of the caller's context, so it sees this.
IN_DSPY_CALL: contextvars.ContextVar[Any] = contextvars.ContextVar("historymw_in_dspy_call", default=None)

# The request parameters a record keeps: model parameters only. Everything else a
# framework passes along (api_key, api_base, headers, extra_body, metadata blobs,
# client objects, cloud credentials) stays out, whatever its name or shape.
MODEL_PARAMS = frozenset({
    "temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "max_output_tokens", "n", "stop",
    "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "response_format", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
    "reasoning_effort", "thinking", "modalities", "stream", "dimensions", "encoding_format",
})


def call_shape(model: Any, messages: Any, **params: Any) -> None:
    """The signature an integration's CallSpec is made from: its records are captured as if from
    `call_shape(model, messages, **params)`, which is how `Recording.request()` hands them over."""


def model_params(*sources: Any) -> dict[str, Any]:
    """The allow-listed model parameters found in the given mappings (later ones win)."""
    out: dict[str, Any] = {}
    for src in sources:
        if isinstance(src, dict):
            for key in MODEL_PARAMS.intersection(src):
                value = src[key]
                if value is not None:
                    out[key] = value
    return out


def split_model(model: Any) -> tuple[str | None, str | None]:
    """("openai", "gpt-4o-mini") for LiteLLM-style "openai/gpt-4o-mini"; (None, model) without a prefix."""
    if not isinstance(model, str):
        return None, None
    provider, sep, name = model.partition("/")
    if not sep or not provider or not name:
        return None, model
    return provider, name

