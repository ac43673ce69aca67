"""Secrets never reach a record; content capture and size limits do what they say."""

from __future__ import annotations

import json
from typing import Any

import pytest

import historymw as hm

OPENAI_KEY = "sk-proj-Abc123Def456Ghi789Jkl012"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
SECRETS = [OPENAI_KEY, JWT, "hunter2-password", "AKIAIOSFODNN7EXAMPLE", "ghp_abcdefghijklmnopqrstuvwxyz0123",
           "my-private-token-value", "Bearer-less-raw-credential-xyz"]


@hm.recorded(provider="openai")
def ask(model: str, messages: Any, **params: Any) -> str:
    return "answer"


def stored_forms() -> str:
    """Everything a user could read back: the models and their JSON."""
    return "\n".join(r.model_dump_json() for r in hm.ring()) + repr(list(hm.ring()))


def test_credentials_in_params_headers_and_metadata_are_redacted_by_key_name() -> None:
    ask(
        "gpt-4o-mini",
        [{"role": "user", "content": "hello"}],
        api_key=OPENAI_KEY,
        extra_headers={"Authorization": f"Bearer {JWT}", "X-Api-Key": "raw-key-123456", "Accept": "json"},
        metadata={"user": "u1", "password": "hunter2-password", "nested": {"access_token": "my-private-token-value"}},
        client_secret="Bearer-less-raw-credential-xyz",
        aws_secret_access_key="x" * 40,
        temperature=0.3,
        max_tokens=10,
    )
    [rec] = hm.recent(1)
    assert rec.params["api_key"] == "[REDACTED]"
    assert rec.params["extra_headers"] == {"Authorization": "[REDACTED]", "X-Api-Key": "[REDACTED]", "Accept": "json"}
    assert rec.params["metadata"]["password"] == "[REDACTED]"
    assert rec.params["metadata"]["nested"] == {"access_token": "[REDACTED]"}
    assert rec.params["metadata"]["user"] == "u1"
    assert (rec.params["temperature"], rec.params["max_tokens"]) == (0.3, 10)  # not credentials: kept
    text = stored_forms()
    for secret in SECRETS:
        assert secret not in text


def test_secret_shaped_values_are_redacted_wherever_they_are() -> None:
    ask(
        "m",
        [{"role": "user", "content": f"my key is {OPENAI_KEY} and the token {JWT}, aws AKIAIOSFODNN7EXAMPLE"}],
        stop=f"Bearer {JWT}",
        user=f"{OPENAI_KEY}",
    )
    [rec] = hm.recent(1)
    assert rec.messages[0]["content"] == "my key is [REDACTED] and the token [REDACTED], aws [REDACTED]"
    assert rec.params["stop"] == "Bearer [REDACTED]"
    assert rec.params["user"] == "[REDACTED]"


def test_secrets_in_outputs_and_error_messages_are_redacted() -> None:
    @hm.recorded
    def leaky(model: str, messages: Any) -> str:
        return f"here it is: {OPENAI_KEY}"

    @hm.recorded
    def failing(model: str, messages: Any) -> str:
        raise PermissionError(f"invalid api key {OPENAI_KEY}")

    leaky("m", [])
    with pytest.raises(PermissionError):
        failing("m", [])
    a, b = hm.recent(2)
    assert a.output_text == "here it is: [REDACTED]"
    assert b.error_message == "invalid api key [REDACTED]"


def test_words_that_only_look_similar_are_kept() -> None:
    text = ("the task-management-system uses max_tokens and a token budget; bearer of news; "
            "a basic understanding of Basic Authentication")
    ask("m", [{"role": "user", "content": text}], max_tokens=5, top_k=3)
    [rec] = hm.recent(1)
    assert rec.messages[0]["content"] == text
    assert rec.params == {"max_tokens": 5, "top_k": 3}


def test_user_redactor_runs_before_anything_is_read() -> None:
    def redactor(record: dict[str, Any]) -> dict[str, Any]:
        record["messages"] = [{**m, "content": m["content"].replace("4111-1111-1111-1111", "<card>")}
                              for m in record["messages"]]
        record["metadata"] = {"redacted_by": "app"}
        return record

    hm.configure(redactor=redactor)
    ask("m", [{"role": "user", "content": "charge 4111-1111-1111-1111"}])
    [rec] = hm.recent(1)
    assert rec.messages[0]["content"] == "charge <card>"
    assert rec.metadata == {"redacted_by": "app"}


def test_a_failing_redactor_removes_content_instead_of_leaking_it() -> None:
    def broken(record: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("bug in the app's redactor")

    hm.configure(redactor=broken)
    assert ask("m", [{"role": "user", "content": "private"}]) == "answer"
    [rec] = hm.recent(1)
    assert rec.messages == [] and rec.output_text is None and "private" not in rec.model_dump_json()
    assert hm.stats().errors == {"redactor": 1}


def test_capture_content_false_keeps_metadata_and_usage_only() -> None:
    hm.configure(capture_content=False)

    @hm.recorded(provider="openai")
    def chat(model: str, messages: Any) -> dict[str, Any]:
        return {"choices": [{"message": {"role": "assistant", "content": "secret answer"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2}}

    chat("gpt", [{"role": "user", "content": "secret question"}])
    [rec] = hm.recent(1)
    assert rec.messages == [] and rec.output_text is None and rec.outputs == []
    assert (rec.model, rec.input_tokens, rec.output_tokens, rec.finish_reason) == ("gpt", 5, 2, "stop")
    assert "secret" not in rec.model_dump_json()


def test_long_strings_are_truncated_with_a_visible_marker() -> None:
    hm.configure(max_field_chars=100)
    ask("m", [{"role": "user", "content": "word " * 1000}])
    [rec] = hm.recent(1)
    content = rec.messages[0]["content"]
    # The head and the tail survive (a prompt's closing instructions), the cut marked between.
    assert content.startswith("word word") and content.endswith("word word ")
    assert "…[truncated 4900 chars]…" in content and len(content) < 130


def test_bytes_and_base64_images_become_placeholders_with_their_size() -> None:
    image = "data:image/png;base64," + "iVBORw0KGgo" * 1000
    ask(
        "m",
        [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                      {"type": "image_url", "image_url": {"url": image}}]}],
        audio=b"\x00\x01" * 5000,
    )
    [rec] = hm.recent(1)
    parts = rec.messages[0]["content"]
    assert parts[0] == {"type": "text", "text": "what is this?"}
    assert parts[1]["image_url"]["url"] == f"<base64 image/png: {len(image) * 3 // 4} bytes>"
    assert rec.params["audio"] == "<bytes: 10000 bytes>"
    json.loads(rec.model_dump_json())


def test_passwords_in_urls_and_name_value_credentials_in_text_are_redacted() -> None:
    @hm.recorded
    def refuse(model: str, messages: Any, **params: Any) -> str:
        raise PermissionError("request refused: token=abc123def456 api_key=plain-key-123 password: hunter2")

    with pytest.raises(PermissionError):
        refuse("m", [{"role": "user", "content": "q"}], api_base="https://app:s3cr3t-pw@llm.example.invalid/v1",
               note="max_tokens: 5, the token budget: large")
    [rec] = hm.recent(1)
    assert rec.params["api_base"] == "https://app:[REDACTED]@llm.example.invalid/v1"
    assert rec.params["note"] == "max_tokens: 5, the token budget: large"  # words, not credentials
    assert rec.error_message == "request refused: token=[REDACTED] api_key=[REDACTED] password: [REDACTED]"


@pytest.mark.parametrize("secret", [
    OPENAI_KEY, JWT, "AKIAIOSFODNN7EXAMPLE", "ghp_abcdefghijklmnopqrstuvwxyz0123",
    "github_pat_abcdefghijklmnopqrstuvwxyz", "sk_live_abcdefghijkl", "rk_test_abcdefghijkl", "xoxb-1234567890-abcdef",
    "AIzaSyA1234567890abcdefghijklmnopqrstu",
    "hf_abcdefghijklmnopqrstuvwx", "Bearer abc123def456ghi789", "Basic dXNlcjpwYXNzd29yZA==",
    "https://user:hunter22@host/db",
])
def test_the_quick_secret_check_agrees_with_redaction(secret: str) -> None:
    """might_hold_secret (which lets sealing skip a record) says True wherever redact_text changes text,
    and False for prose that holds every anchor's letters but no secret."""
    from historymw.redact import _SHAPES, might_hold_secret, redact_text

    text = f"A long prompt, written right through the night. {secret} And more after it."
    assert redact_text(text) != text and might_hold_secret(text)
    for shape in _SHAPES:  # what each shape's checks look for first is in the text of every match
        if shape.pattern.search(text):
            assert shape.rare in text and shape.probe.search(text), shape.name
    prose = "A thought: the right light at night is nearer than basic... see https://example.org, ask-me."
    assert redact_text(prose) == prose and not might_hold_secret(prose)


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_a_credential_in_json_escaped_again_and_again_is_redacted(depth: int) -> None:
    """Tool-call arguments are JSON holding JSON (`{"target": "{\\"client_secret\\": ...}"}`), and the SQL
    writer checks them once more as JSON: each level doubles the backslashes before a quote. The secret
    matrix found `client_secret` leaking into SQLite and PostgreSQL at the second level."""
    from historymw.redact import might_hold_secret, redact_text

    secret = "iK2ZWeqhFWCEPyYngFb51yBM"
    text = json.dumps({"client_secret": secret})
    for _ in range(depth):
        text = json.dumps({"target": text, "retry": 2})
    assert secret not in redact_text(text) and might_hold_secret(text)
    assert "client_secret" in redact_text(text)  # the name stays: the record says what was removed
