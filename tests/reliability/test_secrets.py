"""Secrets: credentials passed every way a user can (params, headers, LiteLLM's kwargs, DSPy's LM
kwargs, metadata, error messages, prompts) never appear in the raw bytes of what historymw writes:
the SQLite file and its WAL, PostgreSQL rows, exported spans, log lines, and historymw's own logs."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="historymw-dspy-cache-"))

import pytest
import sqlalchemy as sa
import structlog

import historymw as hm

from ._stored import contents, sqlite_bytes, sqlite_contents

# Shaped like the real thing (caught by shape anywhere) ...
OPENAI_KEY = "sk-proj-R3l1ab1l1tyKey0123456789abcdefXYZ"
ANTHROPIC_KEY = "sk-ant-api03-DsPyReliabilityKey9876543210zyxw"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyZWxpYWJpbGl0eSJ9.c2lnbmF0dXJlUmVsaWFiaWxpdHk"
# ... and shapeless (only where it sits says what it is: a key name, a header, a URL's password).
BEARER = "Zq8wX5vB2nM7kL4jH1gFreliab"
PASSWORD = "Hunter2-Reliability-77pw"
PLAIN_KEY = "plainreliabilitykey0123456789"
DSPY_KEY = "dspyplainkeyRELIABILITY4242"
SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, JWT, BEARER, PASSWORD, PLAIN_KEY, DSPY_KEY)
CANARY = "reliability canary question"  # not a secret: proves the sinks hold the calls
MSGS = [{"role": "user", "content": CANARY}]
REPLY = "[[ ## reasoning ## ]]\nBecause.\n\n[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]"


def _leaks(raw: bytes) -> list[str]:
    """Secrets found in raw bytes, whole or as their distinctive tail (a half-masked key is a leak too)."""
    return [s for s in SECRETS if s.encode() in raw or s[-12:].encode() in raw]


@pytest.fixture
def sinks() -> Iterator[dict[str, Any]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from historymw.backends.log import LogBackend
    from historymw.backends.otel import OTelBackend

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    log_lines = structlog.testing.CapturingLogger()
    # Log lines as a JSON log shipper gets them: rendered to bytes.
    logger = structlog.wrap_logger(log_lines, processors=[structlog.processors.JSONRenderer()])
    yield {"otel": OTelBackend(tracer_provider=provider, capture_content=True, metrics=False),
           "log": LogBackend(logger=logger), "spans": spans, "log_lines": log_lines}
    provider.shutdown()


@hm.recorded(provider="openai")
def ask(model: str, messages: Any, **params: Any) -> str:
    if params.get("fail"):
        raise PermissionError(params.get("message") or f"401 for key {OPENAI_KEY}; Authorization: Bearer {JWT}; "
                              f"token={BEARER}")
    return "ok"


def _drive_every_path() -> int:
    """Make calls that carry the secrets every way a user can; returns how many records they make."""
    from historymw.integrations import dspy as hm_dspy
    from historymw.integrations import litellm as hm_litellm

    made = 0
    # 1. Keyword arguments of a decorated function: key, headers, metadata, a URL with a password.
    ask("gpt-4o-mini", MSGS, api_key=PLAIN_KEY, temperature=0.1,
        headers={"Authorization": f"Bearer {BEARER}", "X-Api-Key": PLAIN_KEY},
        extra_headers={"authorization": f"Bearer {JWT}"},
        metadata={"password": PASSWORD, "db": {"user": "app", "password": PASSWORD}, "note": f"use {OPENAI_KEY}"},
        api_base=f"https://app:{PASSWORD}@llm.example.invalid/v1")
    # 2. An error whose message quotes the credentials.
    with pytest.raises(PermissionError):
        ask("gpt-4o-mini", MSGS, fail=True)
    # 3. Manual recording: params, prompt text, output metadata.
    with hm.call(provider="anthropic", model="claude", messages=[{"role": "user", "content": f"{CANARY}: key "
                 f"{ANTHROPIC_KEY}, header Authorization: Bearer {JWT}"}],
                 params={"api_key": ANTHROPIC_KEY, "default_headers": {"x-api-key": PLAIN_KEY}}) as c:
        c.output(text=f"echo {OPENAI_KEY}", metadata={"credentials": {"secret": PASSWORD}, "token": BEARER})
    made += 3

    # 4. LiteLLM, as people call it: api_key=, an Authorization header, a password in metadata.
    import litellm

    hm_litellm.install()
    try:
        creds: dict[str, Any] = {"api_key": OPENAI_KEY, "extra_headers": {"Authorization": f"Bearer {BEARER}"},
                                 "metadata": {"password": PASSWORD, "user": "u-1"},
                                 "api_base": f"https://app:{PASSWORD}@llm.example.invalid/v1"}
        litellm.completion(model="gpt-4o-mini", messages=MSGS, mock_response="ok litellm", **creds)
        for _ in litellm.completion(model="gpt-4o-mini", messages=MSGS, mock_response="ok stream", stream=True,
                                    **creds):
            pass
        with pytest.raises(litellm.RateLimitError):
            litellm.completion(model="gpt-4o-mini", messages=MSGS, mock_response="litellm.RateLimitError", **creds)
        assert hm_litellm.flush(10.0)
        made += 3
    finally:
        hm_litellm.uninstall()

    # 5. DSPy: the credential given to dspy.LM(..., api_key=...).
    import dspy

    hm_dspy.install()
    try:
        lm = dspy.LM("openai/gpt-4o-mini", mock_response=REPLY, num_retries=0, cache=False, api_key=DSPY_KEY,
                     api_base=f"https://app:{PASSWORD}@llm.example.invalid/v1")
        with dspy.context(lm=lm):
            assert dspy.ChainOfThought("question -> answer")(question=CANARY).answer == "4"
        made += 1
    finally:
        hm_dspy.uninstall()
    return made


def _check(stored: dict[str, bytes]) -> None:
    for where, raw in stored.items():
        assert CANARY.encode() in raw, f"{where}: the calls are not there, so the scan proves nothing"
        leaked = _leaks(raw)
        assert not leaked, f"{leaked} reached {where}"


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_credentials_never_reach_any_sink(db: str, sinks: dict[str, Any], request: pytest.FixtureRequest,
                                          figures: Any) -> None:
    if db == "sqlite":
        url, check = request.getfixturevalue("sqlite_url"), None
    else:
        url, check = request.getfixturevalue("pg")
    hm.configure(backends=["ring", "sql", sinks["otel"], sinks["log"]], sql_url=url, flush_interval=0.01)
    with structlog.testing.capture_logs() as internal:  # historymw's own warnings, if anything failed
        made = _drive_every_path()
        assert hm.flush(timeout=30)
        s = hm.stats()
        assert s.recorded == made and s.exported == 3 * made and s.dropped == 0, s

        stored: dict[str, bytes] = {
            "ring": "\n".join(r.model_dump_json() for r in hm.recent(100)).encode(),
            "spans": "\n".join(sp.to_json() for sp in sinks["spans"].get_finished_spans()).encode(),
            "log lines": "\n".join(str(args[0]) for _, args, _ in sinks["log_lines"].calls).encode(),
        }
        if check is None:
            stored["sqlite file and WAL"] = sqlite_bytes(url) + sqlite_contents(url)
        else:
            with check.connect() as conn:
                rows = conn.execute(sa.text("SELECT row_to_json(c)::text FROM historymw_calls c")).scalars().all()
                decoded = contents(conn)
            assert len(rows) == made
            stored["postgresql rows"] = "\n".join(rows).encode() + decoded
        hm.shutdown(timeout=10)
        if check is None:
            stored["sqlite file after shutdown"] = sqlite_bytes(url) + sqlite_contents(url)
    assert len(sinks["spans"].get_finished_spans()) == made and len(sinks["log_lines"].calls) == made
    _check(stored)
    assert not _leaks(json.dumps(internal, default=str).encode())
    figures(made=made, sinks=len(stored), secrets=len(SECRETS), leaks=0)


def test_a_database_password_stays_out_of_historymw_own_logs_and_errors(refusing_url: str) -> None:
    # A server that refuses: historymw logs the failure (rate-limited) and counts it; neither says the password.
    with structlog.testing.capture_logs() as internal:
        hm.configure(backends=["sql"], sql_url=refusing_url, flush_interval=0.01)
        hm.recorded(provider="p")(lambda model, messages: "ok")("m", MSGS)
        result = hm.flush(timeout=0.5)
        stats = hm.stats()
    assert not result and stats.errors.get("export:sql", 0) >= 1
    assert internal, "the failure was not reported"
    raw = (json.dumps(internal, default=str) + stats.model_dump_json() + result.detail).encode()
    assert PASSWORD.encode() not in raw


@pytest.fixture
def refusing_url() -> str:
    import socket

    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:{port}/history"


# Shapes the integrations keep out by allow-list, but that a decorated function's keyword arguments
# and error messages meet only in the core redactor (historymw/redact.py).


def test_a_password_inside_a_url_argument_is_redacted() -> None:
    ask("gpt-4o-mini", MSGS, api_base=f"https://app:{PASSWORD}@llm.example.invalid/v1")
    assert not _leaks(hm.recent(1)[0].model_dump_json().encode())


def test_a_shapeless_token_quoted_as_key_value_in_an_error_is_redacted() -> None:
    with pytest.raises(PermissionError):
        ask("gpt-4o-mini", MSGS, fail=True, message=f"request refused: token={BEARER} api_key={PLAIN_KEY}")
    assert not _leaks(hm.recent(1)[0].model_dump_json().encode())
