"""historymw's spans as Arize Phoenix and MLflow show them: sent over OTLP/HTTP by the
real SDK, read back through each server's own API."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from apm_helpers import Server, mlflow_experiment, mlflow_traces, phoenix_spans
from scenario import SECRET, SYSTEM, Run, provider, run

import historymw as hm
from historymw import semconv as sc


@dataclass
class Shown:
    """One span as the server shows it, whatever its API's shape."""

    name: str
    span_id: str
    parent_id: str | None
    kind: str
    status: str
    attrs: dict[str, Any]
    events: list[dict[str, Any]]


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Phoenix nests dotted attribute names ({"gen_ai": {"usage": ...}}): flatten them back."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat(v, key + "."))
        else:
            out[key] = v
    return out


def wait_for_spans(read: Callable[[], list[Shown]], count: int, timeout: float = 60.0) -> list[Shown]:
    """Servers ingest asynchronously: poll (bounded) until `count` historymw spans are readable."""
    deadline = time.monotonic() + timeout
    spans = read()
    while time.monotonic() < deadline and len(ours(spans)) < count:
        time.sleep(1.0)
        spans = read()
    return spans


def decoded(value: Any) -> Any:
    """MLflow hands back JSON-valued attributes decoded, Phoenix as the string sent."""
    return json.loads(value) if isinstance(value, str) else value


def ours(spans: list[Shown]) -> list[Shown]:
    return [s for s in spans if sc.HM_RECORD_ID in s.attrs]


def check(spans: list[Shown], sent: Run, *, content: bool, llm_kinds: set[str]) -> dict[str, Shown]:
    """What a user relies on, for every call of the run; returns our span per call label."""
    mine = ours(spans)
    ids = [s.attrs[sc.HM_RECORD_ID] for s in mine]
    assert sorted(ids) == sorted(r.id for r in sent.records), "every call present exactly once"
    by_label: dict[str, Shown] = {}
    for label, app_id in sent.app_spans.items():
        children = [s for s in mine if s.parent_id == app_id]
        assert len(children) == 1, f"{label}: {len(children)} LLM spans under the app span, expected 1"
        by_label[label] = children[0]
    for label, s in by_label.items():
        assert s.kind in llm_kinds, f"{label}: kind {s.kind!r}"
        assert s.attrs.get(sc.REQUEST_MODEL), label
        assert (sc.INPUT_MESSAGES in s.attrs) is content, label
    sync = by_label["sync"].attrs
    assert (sync[sc.USAGE_INPUT_TOKENS], sync[sc.USAGE_OUTPUT_TOKENS]) == (1200, 80)
    assert (sync[sc.USAGE_CACHE_READ_INPUT_TOKENS], sync[sc.USAGE_REASONING_OUTPUT_TOKENS]) == (1024, 64)
    system = by_label["system"].attrs
    assert system[sc.USAGE_CACHE_CREATION_INPUT_TOKENS] == 300
    assert (sc.SYSTEM_INSTRUCTIONS in system) is content
    if content:
        assert decoded(system[sc.SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": SYSTEM}]
        assert "Paris." in json.dumps(decoded(by_label["http_stream"].attrs[sc.OUTPUT_MESSAGES]))
    for label in ("stream", "http_stream", "async_stream"):
        assert by_label[label].attrs[sc.REQUEST_STREAM] is True, label
    error = by_label["error"]
    assert error.status.upper().endswith("ERROR")
    (event,) = [e for e in error.events if e["name"] == "exception"]
    assert event["attributes"][sc.EXCEPTION_TYPE] == "PermissionError"
    assert "invalid api key" in event["attributes"][sc.EXCEPTION_MESSAGE]
    assert "ask_failing" in event["attributes"][sc.EXCEPTION_STACKTRACE]
    assert list(decoded(error.attrs[sc.RESPONSE_FINISH_REASONS])) == ["error"]
    assert SECRET not in json.dumps([s.__dict__ for s in spans], default=str), "a secret reached the APM"
    if "litellm_error" in by_label:
        failed = by_label["litellm_error"]
        assert failed.status.upper().endswith("ERROR")
        assert [e for e in failed.events if e["name"] == "exception"]
    return by_label


# -- Phoenix ------------------------------------------------------------------------------------


def phoenix_read(server: Server, project: str) -> Callable[[], list[Shown]]:
    def read() -> list[Shown]:
        try:
            raw = phoenix_spans(server, project)
        except Exception:  # noqa: BLE001 - the project exists only once its first span arrived
            return []
        return [Shown(s["name"], s["context"]["span_id"], s.get("parent_id"), s.get("span_kind", ""),
                      s.get("status_code", ""), flat(s.get("attributes") or {}),
                      [{"name": e["name"], "attributes": flat(e.get("attributes") or {})}
                       for e in s.get("events") or []]) for s in raw]
    return read


def _phoenix_run(server: Server, *, content: bool, compat: str | None, litellm: bool) -> tuple[Run, list[Shown]]:
    project = f"historymw-{uuid.uuid4().hex[:8]}"
    tp = provider(f"{server.url}/v1/traces", project=project)
    try:
        sent = run(tp, content=content, compat=compat, litellm=litellm)
        tp.force_flush()
    finally:
        hm.shutdown(5.0)
        tp.shutdown()
    return sent, wait_for_spans(phoenix_read(server, project), len(sent.records))


@pytest.mark.parametrize("content", [True, False], ids=["content", "no-content"])
def test_phoenix_shows_every_call_once_under_its_app_span(phoenix: Server, content: bool) -> None:
    sent, spans = _phoenix_run(phoenix, content=content, compat=None, litellm=content)
    check(spans, sent, content=content, llm_kinds={"LLM"})


def test_phoenix_spans_table_has_input_and_output_with_openinference_compat(phoenix: Server) -> None:
    sent, spans = _phoenix_run(phoenix, content=True, compat="openinference", litellm=False)
    by_label = check(spans, sent, content=True, llm_kinds={"LLM"})
    for label, s in by_label.items():
        assert s.attrs.get("input.value"), f"{label}: no input in Phoenix's spans table"
        assert s.attrs.get("output.value") or label == "error", f"{label}: no output"
        assert s.attrs.get("llm.model_name"), label
    sync = by_label["sync"].attrs
    assert (sync["llm.token_count.prompt"], sync["llm.token_count.completion"]) == (1200, 80)
    assert sync["output.value"] == "Paris."


# -- MLflow ---------------------------------------------------------------------------------------


def mlflow_read(server: Server, experiment: str) -> Callable[[], list[Shown]]:
    def read() -> list[Shown]:
        return [Shown(s["name"], s["span_id"], s.get("parent_id"), s.get("span_type") or "", s["status"],
                      s.get("attributes") or {}, s.get("events") or [])
                for t in mlflow_traces(server, experiment) for s in t["spans"]]
    return read


@pytest.mark.parametrize("content", [True, False], ids=["content", "no-content"])
def test_mlflow_shows_every_call_once_under_its_app_span(mlflow: Server, content: bool) -> None:
    experiment = mlflow_experiment(mlflow, f"historymw-{uuid.uuid4().hex[:8]}")
    tp = provider(f"{mlflow.url}/v1/traces", headers={"x-mlflow-experiment-id": experiment})
    try:
        sent = run(tp, content=content, litellm=content)
        tp.force_flush()
    finally:
        hm.shutdown(5.0)
        tp.shutdown()
    spans = wait_for_spans(mlflow_read(mlflow, experiment), len(sent.records))
    check(spans, sent, content=content, llm_kinds={"LLM", "CHAT_MODEL"})
