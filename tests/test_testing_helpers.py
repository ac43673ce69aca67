"""historymw.testing: users can assert on what their code recorded."""

from __future__ import annotations

from typing import Any

import historymw as hm
from historymw.testing import capture_records


@hm.recorded(provider="openai")
def ask(model: str, messages: Any) -> str:
    return "ok"


def test_capture_records_sees_the_calls_and_restores_the_previous_history() -> None:
    hm.configure(maxlen=10, policy="off")
    with capture_records() as records:
        ask("inside", [{"role": "user", "content": "q"}])
        assert [r.model for r in records] == ["inside"]
    assert hm.settings().policy.name == "off" and hm.settings().maxlen == 10
    ask("after", [])
    assert len(hm.ring()) == 0


def test_capture_records_keeps_the_application_ring_and_counters() -> None:
    ask("before", [])
    with capture_records(capture_content=False) as records:
        ask("inside", [{"role": "user", "content": "secret"}])
    assert records[0].messages == []
    assert [r.model for r in hm.ring()] == ["before"] and hm.stats().recorded == 1
