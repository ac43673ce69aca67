"""The local OpenAI/Anthropic-compatible server every integration test talks HTTP to."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import historymw as hm

pytest.importorskip("starlette", reason="the local LLM server needs: pip install 'historymw[localllm]'")
pytest.importorskip("uvicorn", reason="the local LLM server needs: pip install 'historymw[localllm]'")

from historymw.localllm import LocalLLM

# Key-shaped values: the tests check none of them reaches a record.
API_KEY = "sk-proj-4f9d2c1b8a7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e"
HEADER_KEY = "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe9Dc8Ba7"
BEARER = "Bearer sk-live-9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b"


@pytest.fixture(scope="session")
def server() -> Iterator[LocalLLM]:
    with LocalLLM() as srv:
        yield srv


def records() -> list[hm.LMCall]:
    return hm.recent(100)


def no_secrets(recs: list[hm.LMCall]) -> None:
    """No key-shaped value given to a client or its headers is in any record."""
    dumped = json.dumps([r.model_dump(mode="json") for r in recs])
    for secret in (API_KEY, HEADER_KEY, BEARER, BEARER.split()[1]):
        assert secret not in dumped


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]
