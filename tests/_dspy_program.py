"""The DSPy program the DSPy tests share: a ChainOfThought on a dspy.LM driven by LiteLLM's
mock responses (no network)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="historymw-dspy-cache-"))

import dspy

REPLY = "[[ ## reasoning ## ]]\nBecause 2+2=4.\n\n[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]"


def make_lm(reply: str = REPLY, **kwargs: Any) -> Any:
    kwargs.setdefault("cache", False)
    return dspy.LM("openai/gpt-4o-mini", mock_response=reply, num_retries=0, **kwargs)


class Prog(dspy.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.cot = dspy.ChainOfThought("question -> answer")

    def forward(self, question: str) -> Any:
        return self.cot(question=question)

    async def aforward(self, question: str) -> Any:
        return await self.cot.acall(question=question)
