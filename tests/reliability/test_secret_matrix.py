"""Secrets, as a matrix: every family of credential, in every place a call can carry it, against
every sink historymw writes to. Each cell gets a fresh random secret (the seed is printed; set
HISTORYMW_SECRET_SEED to replay one), so the suite tests the shapes, not a list of samples.

Sinks: the ring (`hm.recent()`), a SQLite file with its WAL, PostgreSQL rows (when
HISTORYMW_TEST_POSTGRES_URL is set), OpenTelemetry spans with content capture on, structlog
lines from the log backend, `historymw export` run as a command, and historymw's own log.

A second test records a corpus of ordinary content (prose, code, tool schemas, UUIDs, hashes,
base64 images, words that look like credential names) and counts what redaction changed in it:
the damage rate, which must be 0. `python -m tests.reliability.secret_report` prints both.
"""

from __future__ import annotations

import base64
import json
import os
import random
import string
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog

import historymw as hm

from ._stored import contents, sqlite_bytes, sqlite_contents

_SEED = int(os.environ.get("HISTORYMW_SECRET_SEED") or random.SystemRandom().randrange(2**32))
_REPORT = os.environ.get("HISTORYMW_SECRET_REPORT")  # where secret_report collects the figures

ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"


def _r(rng: random.Random, alphabet: str, n: int) -> str:
    """n random characters, with a digit and a letter when the alphabet has them (as real keys do)."""
    need_digit, need_alpha = any(c.isdigit() for c in alphabet), any(c.isalpha() for c in alphabet)
    for _ in range(1000):
        s = "".join(rng.choice(alphabet) for _ in range(n))
        if (not need_digit or any(c.isdigit() for c in s)) and (not need_alpha or any(c.isalpha() for c in s)):
            return s
    raise AssertionError(f"no {n} characters of {alphabet!r} with a digit and a letter")


def _b64(rng: random.Random, nbytes: int) -> str:
    return base64.b64encode(rng.randbytes(nbytes)).decode()


# family -> make(rng) -> (text as it appears, the part that must never be stored)
Family = Callable[[random.Random], tuple[str, str]]


def _token(prefix: str, alphabet: str, n: int) -> Family:
    def make(rng: random.Random) -> tuple[str, str]:
        s = prefix + _r(rng, alphabet, n)
        return s, s
    return make


def _wrapped(fmt: str, alphabet: str, n: int) -> Family:
    """A secret inside some text: fmt has one {} for it."""
    def make(rng: random.Random) -> tuple[str, str]:
        s = _r(rng, alphabet, n)
        return fmt.format(s), s
    return make


def _jwt(rng: random.Random) -> tuple[str, str]:
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    s = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': _r(rng, ALNUM, 12)})}.{_r(rng, ALNUM + '-_', 43)}"
    return s, s


def _basic(rng: random.Random) -> tuple[str, str]:
    cred = base64.b64encode(f"user:{_r(rng, ALNUM, 14)}".encode()).decode()
    return f"Authorization: Basic {cred}", cred


def _pem(kind: str) -> Family:
    def make(rng: random.Random) -> tuple[str, str]:
        lines = [_b64(rng, 48) for _ in range(6)]
        block = f"-----BEGIN {kind}PRIVATE KEY-----\n" + "\n".join(lines) + f"\n-----END {kind}PRIVATE KEY-----"
        return block, lines[2]
    return make


def _azure_key(rng: random.Random) -> tuple[str, str]:
    key = _b64(rng, 64)
    return f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};EndpointSuffix=core.windows.net", key


def _azure_sas(rng: random.Random) -> tuple[str, str]:
    sig = _b64(rng, 32).replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    return f"https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&se=2030-01-01&sr=b&sp=r&sig={sig}", sig


def _slack_webhook(rng: random.Random) -> tuple[str, str]:
    path = f"T{_r(rng, UPPER_DIGITS, 8)}/B{_r(rng, UPPER_DIGITS, 10)}/{_r(rng, ALNUM, 24)}"
    return f"https://hooks.slack.com/services/{path}", path


FAMILIES: dict[str, Family] = {
    "openai": _token("sk-proj-", ALNUM + "_-", 48),
    "anthropic": _token("sk-ant-api03-", ALNUM + "_-", 60),
    "openai-escaped": lambda rng: (lambda s: (f"keys:\\n{s}", s))("sk-proj-" + _r(rng, ALNUM, 40)),
    "aws-key-id": _token("AKIA", UPPER_DIGITS, 16),
    "aws-temporary-key-id": _token("ASIA", UPPER_DIGITS, 16),
    "aws-escaped": lambda rng: (lambda s: (f"id:\\t{s}", s))("AKIA" + _r(rng, UPPER_DIGITS, 16)),
    "github-classic": _token("ghp_", ALNUM, 36),
    "github-fine-grained": lambda rng: (lambda s: (s, s))(f"github_pat_{_r(rng, ALNUM, 22)}_{_r(rng, ALNUM, 59)}"),
    "github-escaped": lambda rng: (lambda s: (f"tok\\n{s}", s))("ghs_" + _r(rng, ALNUM, 36)),
    "gitlab": _token("glpat-", ALNUM, 20),
    "slack-bot": lambda rng: (lambda s: (s, s))(f"xoxb-{_r(rng, string.digits, 12)}-{_r(rng, string.digits, 12)}-"
                                                f"{_r(rng, ALNUM, 24)}"),
    "slack-app": lambda rng: (lambda s: (s, s))(f"xapp-1-A{_r(rng, UPPER_DIGITS, 10)}-{_r(rng, string.digits, 13)}-"
                                                f"{_r(rng, HEX, 64)}"),
    "slack-webhook": _slack_webhook,
    "stripe-live": _token("sk_live_", ALNUM, 24),
    "stripe-restricted": _token("rk_live_", ALNUM, 24),
    "stripe-webhook": _token("whsec_", ALNUM, 32),
    "google": _token("AIza", ALNUM + "_-", 35),
    "huggingface": _token("hf_", ALNUM, 34),
    "npm": _token("npm_", ALNUM, 36),
    "jwt": _jwt,
    "bearer": _wrapped("Authorization: Bearer {}", ALNUM, 32),
    "basic": _basic,
    "url-password": _wrapped("postgresql://app:{}@db.internal:5432/prod", ALNUM, 18),
    "redis-empty-user": _wrapped("redis://:{}@cache.internal:6379/0", ALNUM, 20),
    "url-token-user": _wrapped("https://{}@github.com/org/repo.git", ALNUM, 40),
    "azure-account-key": _azure_key,
    "azure-sas": _azure_sas,
    "pem-rsa": _pem("RSA "),
    "openssh": _pem("OPENSSH "),
    "pgp": lambda rng: (lambda t: (t[0].replace("PRIVATE KEY", "PRIVATE KEY BLOCK"), t[1]))(_pem("PGP ")(rng)),
    "env-azure-openai-api-key": _wrapped("AZURE_OPENAI_API_KEY={}", HEX, 32),
    "env-aws-secret-access-key": _wrapped("aws_secret_access_key={}", B64, 40),
    "env-postgres-db-password": _wrapped("POSTGRES_DB_PASSWORD={}", ALNUM, 16),
    "env-github-access-token": _wrapped("github_access_token={}", ALNUM, 30),
    "json-client-secret": _wrapped('{{"client_secret": "{}"}}', ALNUM, 24),
    "password-colon": _wrapped("password: {}", ALNUM + "!#", 14),
    "api-key-query": _wrapped("https://api.example.com/v1/x?api_key={}&q=1", ALNUM, 28),
}

# place -> how a call carries the text; each returns nothing and records one call.
MSGS_OF = "cell {}"  # a canary per cell, in a message of its own: proves the record reached the sink


def _manual(text: str, canary: str, place: str) -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": canary}]
    params: dict[str, Any] = {"temperature": 0.1}
    model, session, tags = "gpt-4o-mini", "s-1", {"team": "search"}
    if place == "prompt":
        msgs.append({"role": "user", "content": f"Use this to connect: {text}\nThanks."})
    elif place == "nested params":
        params["config"] = {"layers": [{"note": f"see {text}"}]}
    elif place == "header dict":
        params["extra_headers"] = {"X-Note": text, "Accept": "application/json"}
    elif place == "header list":
        params["headers"] = [("X-Note", text), ("Accept", "application/json")]
    elif place == "model":
        model = f"gpt-4o-mini {text}"
    elif place == "session":
        session = f"user {text}"
    elif place == "tags":
        tags = {"note": f"from {text}"}
    with hm.history(session=session, tags=tags):
        try:
            with hm.call(provider="openai", model=model, messages=msgs, params=params) as c:
                if place == "exception":
                    raise RuntimeError(f"upstream refused the request: {text}")
                out = "ok"
                if place == "output":
                    out = f"Here is what you asked for: {text}"
                c.output(text=out, finish_reason="stop")
                if place == "metadata":
                    c.set(metadata={"note": f"{text}", "n": 1})
                elif place == "system instructions":
                    c.set(system_instructions=[f"You may use {text} when asked."])
                elif place == "tool call arguments":
                    c.output(outputs=[{"type": "function", "name": "connect",
                                       "arguments": json.dumps({"target": text, "retry": 2})}])
        except RuntimeError:
            pass


def _litellm_error(texts: list[str], canary: str) -> None:
    """One LiteLLM call that fails with every family's text in its message (a LiteLLM call costs
    far more than a manual record: one for all families keeps the suite fast)."""
    import litellm

    with pytest.raises(Exception):  # noqa: B017 - LiteLLM wraps the error in its own type
        litellm.completion(model="gpt-4o-mini", messages=[{"role": "user", "content": canary}], num_retries=0,
                           mock_response=RuntimeError("provider said: invalid credentials " + " ; ".join(texts)))


PLACES = ("prompt", "output", "system instructions", "tool call arguments", "nested params", "header dict",
          "header list", "exception", "model", "session", "tags", "metadata", "litellm exception")


def _leaked(core: str, raw: bytes) -> bool:
    """The secret, whole or its distinctive tail (a half-masked key is a leak too)."""
    return core.encode() in raw or core[-12:].encode() in raw


@pytest.fixture
def span_sink() -> Iterator[tuple[Any, Any]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from historymw.backends.otel import OTelBackend

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield OTelBackend(tracer_provider=provider, capture_content=True, metrics=False), spans
    provider.shutdown()


def _report(section: str, values: dict[str, Any]) -> None:
    if _REPORT:
        path = Path(_REPORT)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[section] = values
        path.write_text(json.dumps(data, indent=2))


def test_no_secret_family_in_any_place_reaches_any_sink(sqlite_url: str, span_sink: tuple[Any, Any],
                                                       figures: Any) -> None:
    from historymw.backends.log import LogBackend
    from historymw.backends.sql import SQLBackend
    from historymw.integrations import litellm as hm_litellm

    otel, spans = span_sink
    log_lines = structlog.testing.CapturingLogger()
    log = LogBackend(logger=structlog.wrap_logger(log_lines, processors=[structlog.processors.JSONRenderer()]))
    backends: list[Any] = ["ring", "sql", otel, log]
    pg_url = os.environ.get("HISTORYMW_TEST_POSTGRES_URL")
    pg_check = None
    if pg_url:
        pg_url, pg_check = _pg_schema(pg_url)
        backends.append(SQLBackend(pg_url))
    hm.configure(backends=backends, sql_url=sqlite_url, flush_interval=0.05, maxlen=5000, max_bytes="256MiB")
    rng = random.Random(_SEED)
    cells: dict[tuple[str, str], str] = {}  # (family, place) -> the secret that must not be stored
    litellm_texts: list[str] = []
    hm_litellm.install()
    try:
        with structlog.testing.capture_logs() as internal:
            for family, make in FAMILIES.items():
                for place in PLACES:
                    text, core = make(rng)
                    cells[family, place] = core
                    if place == "litellm exception":
                        litellm_texts.append(text)
                    else:
                        _manual(text, MSGS_OF.format(f"{family}/{place}"), place)
            _litellm_error(litellm_texts, MSGS_OF.format("litellm"))
            assert hm_litellm.flush(10.0)
            assert hm.flush(timeout=60)
    finally:
        hm_litellm.uninstall()
    made = len(cells) - len(FAMILIES) + 1  # the LiteLLM place: one call for all families
    stats = hm.stats()
    assert stats.recorded == made and stats.dropped == 0, stats

    sinks: dict[str, bytes] = {
        "ring": "\n".join(r.model_dump_json() for r in hm.recent(made)).encode(),
        "otel spans": "\n".join(s.to_json() for s in spans.get_finished_spans()).encode(),
        "structlog": "\n".join(str(args[0]) for _, args, _ in log_lines.calls).encode(),
        "historymw's own log": json.dumps(internal, default=str).encode(),
    }
    if pg_check is not None:
        with pg_check.connect() as conn:
            rows = conn.execute(sa.text("SELECT row_to_json(c)::text FROM historymw_calls c")).scalars().all()
            decoded = contents(conn)
        assert len(rows) == made
        sinks["postgresql rows"] = "\n".join(rows).encode() + decoded
    sinks["sqlite file + WAL"] = sqlite_bytes(sqlite_url)
    hm.shutdown(timeout=10)
    sinks["sqlite file + WAL"] += sqlite_bytes(sqlite_url) + sqlite_contents(sqlite_url)
    cli = Path(sys.executable).parent / "historymw"
    exported = subprocess.run([str(cli), "--db", sqlite_url, "export", "--format", "jsonl"], capture_output=True,
                              timeout=120, check=True)
    sinks["historymw export"] = exported.stdout
    assert exported.stdout.count(b"\n") == made

    for name in ("ring", "otel spans", "structlog", "sqlite file + WAL", "historymw export", "postgresql rows"):
        if name in sinks:
            missing = [c for c in cells if c[1] != "litellm exception"
                       and MSGS_OF.format(f"{c[0]}/{c[1]}").encode() not in sinks[name]]
            assert MSGS_OF.format("litellm").encode() in sinks[name], f"{name} lacks the LiteLLM call"
            assert not missing, f"{name} does not hold every call, so its scan proves nothing: {missing[:3]}"
    leaks = sorted({(family, place, sink) for (family, place), core in cells.items()
                    for sink, raw in sinks.items() if _leaked(core, raw)})
    summary = {"seed": _SEED, "families": len(FAMILIES), "places": len(PLACES), "sinks": len(sinks),
               "records": made, "cells": len(cells) * len(sinks), "leaks": len(leaks),
               "leaked": [list(x) for x in leaks[:50]],
               "sink_names": sorted(sinks), "family_names": sorted(FAMILIES), "place_names": list(PLACES)}
    _report("matrix", summary)
    figures(seed=_SEED, families=len(FAMILIES), places=len(PLACES), sinks=len(sinks),
            checked=len(cells) * len(sinks), leaks=len(leaks))
    assert not leaks, f"seed {_SEED}: {len(leaks)} leaks (family, place, sink): {leaks[:20]}"


def _pg_schema(url: str) -> tuple[str, Any]:
    import uuid
    from urllib.parse import quote

    schema = f"hmtest_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    sep = "&" if "?" in url else "?"
    scoped = f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
    return scoped, sa.create_engine(scoped)


# -- false positives ---------------------------------------------------------------------------

_SCHEMA_TOOL = {
    "type": "function",
    "function": {
        "name": "create_user",
        "description": "Create an account. The password must be at least password_min_length characters.",
        "parameters": {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "login name"},
                "password": {"type": "string", "description": "the new user's password", "minLength": 12},
                "page_token": {"type": "string", "description": "token of the next page"},
                "sort_key": {"type": "string", "enum": ["created_at", "name"]},
                "api_key_env": {"type": "string", "description": "name of the variable holding the key"},
            },
            "required": ["username", "password"],
        },
    },
}

CORPUS: list[str] = [
    "Invalid token: expected an identifier but found a number.",
    "The task-management system is risk-free; ask-me-anything threads are popular with desk-bound teams.",
    "Key: the main point is that tokens are cheap. Token: a unit of text. Secret: there is none.",
    "A basic understanding of Basic Authentication helps; the bearer of news was late.",
    "Our password policy: password_min_length=12, password_max_age_days=90.",
    "tokenizer.eos_token = '</s>'; tokenizer.pad_token = tokenizer.eos_token; max_tokens=256",
    "def get(self, key: str, default=None):\n    return self._cache.get(key, default)\n",
    "for sort_key in ('created_at', 'name'):\n    rows.sort(key=lambda r: r[sort_key])\n",
    "page_token: CiAKGjBpNDd2Nmp2Zml2cXRlMjBkbjFjdDE0aBgB (pass it back to get the next page)",
    "request id 3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b, trace 4bf92f3577b34da6a3ce929d0e0e4736",
    "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, git 1a2b3c4d5e6f7a8b9c0d",
    "data:image/png;base64," + base64.b64encode(bytes(range(256)) * 2).decode(),
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    "See https://docs.python.org/3/library/re.html#re.sub and ssh://git@github.com/org/repo.git",
    "Email me at jane.doe@example.com or visit https://example.org/path?q=1&page=2.",
    "export PATH=$HOME/.local/bin:$PATH; export LANG=en_US.UTF-8",
    "The keynote covers monkey-patching, turkey recipes and the Keychain app.",
    "SELECT id, name FROM users WHERE status = 'active' AND created_at > '2024-01-01';",
    "Cost: $0.002 per 1K tokens; authentication: OAuth 2.0; authorization: role-based.",
    "ASIA and AKIA are prefixes; AIza too; sk- is how OpenAI keys begin; xoxb- is Slack's.",
    "The model said: 'I cannot help with that.' Then: 'Here is a summary of the document.'",
    "Configuration: host=localhost port=5432 user=app sslmode=require timeout=30",
    "## Setup\n1. Install the package.\n2. Set `OPENAI_API_KEY` in your shell (never in code).\n",
    "{\"name\": \"search\", \"parameters\": {\"type\": \"object\", \"properties\": {\"password\": "
    "{\"type\": \"string\"}, \"page_token\": {\"type\": \"string\"}, \"sort_key\": {\"type\": \"string\"}}}}",
    "Base64 of 'hello world' is aGVsbG8gd29ybGQ=, and the UUID is 123e4567-e89b-12d3-a456-426614174000.",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUY3Jhc2h0ZXN0\n-----END CERTIFICATE-----",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
]
FP_PARAMS: dict[str, Any] = {"eos_token": "</s>", "pad_token": "<pad>", "page_token": "CiAKGjBpNDd2Nmp2Zml2",
                             "sort_key": "created_at", "password_min_length": 12, "max_tokens": 256,
                             "idempotency_key": "order-42-retry-1", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1"}


def test_ordinary_content_is_not_damaged(figures: Any) -> None:
    hm.configure(maxlen=1000, max_bytes="64MiB")
    for i, text in enumerate(CORPUS):
        with hm.call(provider="openai", model="gpt-4o-mini", messages=[{"role": "user", "content": text}],
                     params={**FP_PARAMS, "tools": [_SCHEMA_TOOL]}) as c:
            c.output(text=text, finish_reason="stop")
            c.set(tool_definitions=[_SCHEMA_TOOL], metadata={"note": text, "i": i})
    damaged: list[str] = []
    checked = 0
    for text, rec in zip(CORPUS, hm.recent(len(CORPUS)), strict=True):
        stored = rec.messages[0]["content"]
        expected = text if len(text) <= 1024 else stored  # a long base64 blob becomes a size placeholder
        for where, got, want in (("prompt", stored, expected), ("output", rec.output_text, expected),
                                 ("metadata", rec.metadata.get("note"), expected),
                                 ("tool schema", rec.tool_definitions, [_SCHEMA_TOOL]),
                                 ("params tools", rec.params.get("tools"), [_SCHEMA_TOOL]),
                                 ("params", {k: rec.params.get(k) for k in FP_PARAMS}, FP_PARAMS)):
            checked += 1
            if got != want:
                damaged.append(f"{where}: {str(want)[:60]!r} -> {str(got)[:60]!r}")
    rate = len(damaged) / checked
    _report("false_positives", {"texts": len(CORPUS), "checked": checked, "damaged": len(damaged),
                                "rate": rate, "examples": damaged[:20]})
    figures(corpus=len(CORPUS), checked=checked, damaged=len(damaged), damage_rate=rate)
    assert not damaged, "\n".join(damaged)
