"""Fail-open: nothing inside historymw reaches the LM call; what goes wrong is counted and logged."""

from __future__ import annotations

import gc
import json
import math
import weakref
from typing import Any

import pytest
import structlog

import historymw as hm


class Opaque:
    """A caller's object historymw knows nothing about (a client, a response, a module...)."""

    def __init__(self, payload: str = "x") -> None:
        self.payload = payload


def test_a_raising_extractor_never_reaches_the_caller() -> None:
    def extractor(result: Any) -> dict[str, Any]:
        raise KeyError("the extractor has a bug")

    @hm.recorded(extract=extractor)
    def ask(model: str, messages: Any) -> str:
        return "fine"

    with structlog.testing.capture_logs() as logs:
        assert [ask("m", []) for _ in range(3)] == ["fine"] * 3
    assert hm.stats().errors == {"extract": 3}
    assert len(hm.ring()) == 3  # the calls are still recorded, without the extracted fields
    warnings = [e for e in logs if e["event"] == "historymw.internal_error"]
    assert len(warnings) == 1  # at most once a minute per kind
    assert warnings[0]["kind"] == "extract" and "KeyError" in warnings[0]["error"]


def test_an_internal_error_in_capture_is_counted_and_the_call_runs() -> None:
    class Hostile(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise RuntimeError("hostile mapping")

    @hm.recorded
    def ask(model: str, messages: Any, **params: Any) -> str:
        return "ran"

    assert ask("m", [{"role": "user", "content": "q"}], options=Hostile(a=1)) == "ran"
    assert sum(hm.stats().errors.values()) == 1


def odd_values() -> list[Any]:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    cyclic_dict: dict[str, Any] = {"a": 1}
    cyclic_dict["self"] = cyclic_dict
    deep: Any = "leaf"
    for _ in range(10_000):
        deep = [deep]
    return [
        cyclic, cyclic_dict, deep, Opaque(), object(), b"\x00\xff" * 100, bytearray(b"abc"),
        memoryview(b"xyz"), "x" * 1_000_000, float("nan"), float("inf"), -float("inf"),
        "lone \ud800 surrogate", {1: "int key", (1, 2): "tuple key", None: "none key"}, {1, 2, 3},
        10**100, Opaque, lambda: None, type, math,
    ]


@pytest.mark.parametrize("value", odd_values(), ids=lambda v: type(v).__name__)
def test_odd_arguments_and_results_never_raise_and_records_stay_valid_json(value: Any) -> None:
    hm.configure(max_field_chars=1000)

    @hm.recorded
    def ask(model: Any, messages: Any, **params: Any) -> Any:
        return value

    assert ask(value, value, option=value, **{"nested": {"v": value}}) is value
    [rec] = hm.recent(1)
    dumped = rec.model_dump_json()
    json.loads(dumped)
    assert len(dumped) < 200_000
    assert rec.size_bytes < hm.settings().max_bytes


def test_no_caller_object_outlives_the_call_and_no_reference_cycle_is_made() -> None:
    """With the cycle collector off, everything a call touched is freed by reference counting."""

    class Message(dict):  # type: ignore[type-arg]
        pass  # a dict subclass can be weak-referenced

    class Response:
        def __init__(self) -> None:
            self.choices = [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]
            self.usage = {"prompt_tokens": 1, "completion_tokens": 1}

    @hm.recorded
    def ask(model: str, messages: Any, **params: Any) -> Any:
        return Response()

    @hm.recorded
    def fails(model: str, messages: Any, **params: Any) -> Any:
        raise ValueError("no")

    @hm.recorded
    def stream(model: str, messages: Any, **params: Any) -> Any:
        yield Response()

    gc.collect()
    gc.disable()
    try:
        refs = []
        for policy in ("bounded", "errors"):
            hm.configure(policy=policy)
            for fn in (ask, fails, stream):
                msg, client, result_holder = Message(role="user", content="q"), Opaque(), []
                out: Any = None
                try:
                    out = fn("m", [msg], client=client)
                    result_holder.extend(out if hasattr(out, "__next__") else [out])
                except ValueError:
                    pass
                refs += [weakref.ref(msg), weakref.ref(client)] + [weakref.ref(r) for r in result_holder]
                del msg, client, result_holder, out
        list(hm.ring())  # reading (sealing) must not create references either
        assert all(r() is None for r in refs), [r() for r in refs if r() is not None]
        assert hm.stats().recorded > 0
    finally:
        gc.enable()
    assert gc.collect() == 0  # nothing was left for the cycle collector
