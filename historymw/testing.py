"""Helpers for testing code that records LM calls (like `structlog.testing`).

    from historymw.testing import capture_records

    def test_my_feature_calls_the_model_once():
        with capture_records() as records:
            my_feature()
        assert len(records) == 1 and records[0].model == "gpt-4o-mini"

Inside the block every call is recorded (policy `bounded`, ring only, unless
other settings are given) into a fresh ring; afterwards the previous
configuration, its ring, its export workers and its counters are back as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import counters, runtime
from .backends.ring import RingBuffer
from .config import load_settings


@contextmanager
def capture_records(**settings: Any) -> Iterator[RingBuffer]:
    """Record the calls made inside the block into a ring of their own and yield it."""
    settings.setdefault("policy", "bounded")
    settings.setdefault("backends", ["ring"])
    settings.setdefault("maxlen", 100_000)
    new_settings = load_settings(settings, environ={})
    state = runtime.STATE
    with state.lock:
        saved = (state.settings, state.runtime, counters.COUNTERS)
        counters.reset()
        temp = runtime.Runtime(new_settings, strict=True)
        state.settings, state.runtime = new_settings, temp
        state.new_generation()
    try:
        assert temp.ring is not None
        yield temp.ring
    finally:
        temp.shutdown(timeout=5.0)
        with state.lock:
            state.settings, state.runtime, counters.COUNTERS = saved
            state.new_generation()
