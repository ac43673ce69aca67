"""A LiteLLM call keeps the caller's context wherever LiteLLM reports its outcome.

The active OpenTelemetry span (the record's parent) and the scope's head decision
(sampling by trace id) are taken where the call starts, on the caller's context,
even when LiteLLM reports the outcome from its logging thread (sync streams) or
from a task on the caller's event loop (async calls). And an async call made with
`asyncio.run(...)`, whose loop closes before LiteLLM reports it, is still recorded,
once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

import litellm
import pytest
from opentelemetry.sdk.trace import TracerProvider

import historymw as hm
from historymw.integrations import litellm as hm_litellm

MSGS = [{"role": "user", "content": "hello"}]
MODEL = "gpt-4o-mini"


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    hm_litellm.install()
    yield
    hm_litellm.flush(5.0)
    hm_litellm.uninstall()


@pytest.fixture
def tracer() -> Any:
    return TracerProvider().get_tracer("app")


def sync_plain() -> None:
    litellm.completion(model=MODEL, messages=MSGS, mock_response="plain")


def sync_stream() -> None:
    stream = litellm.completion(model=MODEL, messages=MSGS, mock_response="a sync stream", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "a sync stream"


def sync_error() -> None:
    with pytest.raises(litellm.RateLimitError):
        litellm.completion(model=MODEL, messages=MSGS, mock_response="litellm.RateLimitError")


async def async_plain() -> None:
    await litellm.acompletion(model=MODEL, messages=MSGS, mock_response="async")


async def async_stream() -> None:
    stream = await litellm.acompletion(model=MODEL, messages=MSGS, mock_response="an async stream", stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "an async stream"


async def async_error() -> None:
    with pytest.raises(litellm.RateLimitError):
        await litellm.acompletion(model=MODEL, messages=MSGS, mock_response="litellm.RateLimitError")


PATHS = {"sync": sync_plain, "sync stream": sync_stream, "sync error": sync_error,
         "async": async_plain, "async stream": async_stream, "async error": async_error}


@pytest.mark.parametrize("path", list(PATHS))
def test_every_path_keeps_the_span_active_where_the_call_started(path: str, tracer: Any) -> None:
    call = PATHS[path]
    with tracer.start_as_current_span("handler") as parent:
        if asyncio.iscoroutinefunction(call):
            asyncio.run(call())
        else:
            call()
    assert hm_litellm.flush(5.0)
    (r,) = hm.recent(10)
    ctx = parent.get_span_context()
    assert (r.trace_id, r.span_id) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert r.status == ("error" if "error" in path else "ok")


def test_sampling_by_trace_id_is_decided_on_the_callers_context(tracer: Any) -> None:
    # A sync stream's outcome arrives on LiteLLM's logging thread, where no span is active:
    # decided there, the sample would not follow the trace ids.
    hm.configure(policy="sample", sample_rate=0.5)
    expected = []
    for _ in range(16):
        with tracer.start_as_current_span("request") as span:
            sync_stream()
        trace_id = span.get_span_context().trace_id
        if (trace_id & ((1 << 64) - 1)) < round(0.5 * 2**64):
            expected.append(f"{trace_id:032x}")
    assert hm_litellm.flush(5.0)
    assert 0 < len(expected) < 16  # else this draw tests nothing (chance: 2 in 65536)
    assert sorted(r.trace_id for r in hm.recent(100)) == sorted(expected)
    assert hm.stats().sampled_out == 16 - len(expected)


def test_asyncio_run_of_acompletion_is_delivered_once_by_hm_flush() -> None:
    asyncio.run(async_plain())  # the loop is closed before LiteLLM's logging task could run
    assert hm.flush(5.0)
    (r,) = hm.recent(10)
    assert (r.output_text, r.status, r.source) == ("async", "ok", "litellm")
    assert r.input_tokens is not None and r.metadata.get("litellm_call_id")
    # Whatever LiteLLM reports later (its own exit flush, another loop), the call stays one record.
    assert hm_litellm.flush(2.0)
    asyncio.run(asyncio.sleep(0.05))
    assert hm_litellm.pending() == 0 and len(hm.recent(10)) == 1


def test_asyncio_run_of_acompletion_is_delivered_at_exit(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = tmp_path / "app.py"
    db = tmp_path / "h.db"
    script.write_text(
        "import asyncio, litellm\n"
        "import historymw as hm\n"
        "from historymw.integrations import litellm as hm_litellm\n"
        f"hm.configure(backends=['sql'], sql_url='sqlite:///{db}')\n"
        "hm_litellm.install()\n"
        "asyncio.run(litellm.acompletion(model='gpt-4o-mini', messages=[{'role': 'user', 'content': 'hi'}],"
        " mock_response='bye'))\n")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=120)
    calls = hm.Store(f"sqlite:///{db}").recent(10)
    assert [c.output_text for c in calls] == ["bye"]


def test_a_call_given_up_is_not_recorded_when_litellm_reports_it_late() -> None:
    # asyncio.run() closes its loop before LiteLLM's logging task runs; uninstall() gives the
    # parked call up (counted). LiteLLM carries that task onto the next loop and reports the
    # call there: it must not come back as a record under whatever scope is current then.
    asyncio.run(async_plain())
    assert hm_litellm.pending() == 1
    hm_litellm.uninstall()
    assert hm.stats().dropped_by_reason.get("integration_uninstalled") == 1
    hm_litellm.install()
    with hm.history(session="a later request"):
        asyncio.run(asyncio.sleep(0.05))  # the carried task runs here
        assert hm_litellm.flush(2.0)
    assert hm.recent(10) == []


def test_a_call_expired_or_trimmed_is_not_recorded_when_its_outcome_arrives() -> None:
    # Over max_items, the oldest parked call expires and the older half of the noted ones is
    # forgotten (both counted). A late report of either is a repeat, not a call no pre-call hook
    # saw (which would be recorded where it is reported, under the scope current then).
    parked = hm_litellm._Pending(max_items=2, max_age=60.0)
    for i in range(3):
        parked.put(f"id{i}", hm.call(model="m", messages=MSGS).start())
    assert parked.take("id0") is hm_litellm._REPEAT
    assert isinstance(parked.take("id2"), hm.call)
    noted = hm_litellm._Pending(max_items=2, max_age=60.0)
    for i in range(3):
        noted.note(f"n{i}")
    assert not noted.claim("n0") and noted.take("n0") is hm_litellm._REPEAT
    assert noted.claim("n2")
