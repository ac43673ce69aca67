"""Exact counters, and the fail-open error reporter.

Counters are `itertools.count` objects: `next()` on one is a single C call, so
increments from many threads are exact without a lock on the hot path.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any

from pydantic import BaseModel, Field

_LOG_EVERY_S = 60.0


class Counter:
    """A thread-safe monotonic counter."""

    __slots__ = ("_c", "add")

    def __init__(self) -> None:
        self._c = itertools.count()
        self.add = self._c.__next__  # calling it adds one

    @property
    def value(self) -> int:
        # repr is "count(N)": reading it does not advance the counter.
        return int(repr(self._c)[6:-1])


class Counters:
    """Every count historymw keeps about itself since the last `configure()`."""

    def __init__(self) -> None:
        self.recorded = Counter()
        self.sampled_out = Counter()
        self.filtered_out = Counter()
        self.evicted = Counter()
        self._lock = threading.Lock()
        self.dropped: dict[str, Counter] = {}
        self.errors: dict[str, Counter] = {}
        self._last_logged: dict[str, float] = {}

    def _counter(self, table: dict[str, Counter], key: str) -> Counter:
        c = table.get(key)
        if c is None:
            with self._lock:
                c = table.setdefault(key, Counter())
        return c

    def drop(self, reason: str, n: int = 1) -> None:
        c = self._counter(self.dropped, reason)
        for _ in range(n):
            c.add()

    def error(self, kind: str, exc: BaseException | None = None) -> None:
        """Count an exception caught inside historymw and log it at most once a minute per kind."""
        self._counter(self.errors, kind).add()
        now = time.monotonic()
        last = self._last_logged.get(kind)
        if last is not None and now - last < _LOG_EVERY_S:
            return
        self._last_logged[kind] = now
        try:
            from ._log import logger
            from .redact import redact_text

            # The text of an exception may quote what failed: a URL with its password, a key.
            logger.warning(
                "historymw.internal_error",
                kind=kind,
                error=None if exc is None else redact_text(f"{type(exc).__name__}: {exc}")[:500],
                total=self.errors[kind].value,
                note="the observed call was not affected; repeats of this kind are logged at most once a minute",
            )
        except Exception:  # noqa: BLE001 - logging must never break the caller either
            pass


COUNTERS = Counters()


def _after_fork_in_child() -> None:
    COUNTERS._lock = threading.Lock()  # it may have been held by another thread at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def reset() -> Counters:
    global COUNTERS
    COUNTERS = Counters()
    return COUNTERS


class Stats(BaseModel):
    """A snapshot of what historymw kept, skipped, dropped and why."""

    recorded: int = Field(description="records kept by the policy and handed to the backends")
    sampled_out: int = Field(description="calls a head decision (sampling) chose not to record")
    filtered_out: int = Field(description="calls a tail decision (errors-only) chose not to keep")
    dropped: int = Field(description="records lost on the way: full export queue, failed export, ...")
    dropped_by_reason: dict[str, int]
    evicted: int = Field(description="records the ring removed to stay within maxlen and max_bytes")
    records_held: int = Field(description="records in the ring now")
    bytes_held: int = Field(description="bytes the ring accounts for now (sum of size_bytes)")
    max_bytes: int
    queued: int = Field(description="records waiting in export queues")
    exported: int = Field(description="records delivered to I/O backends")
    errors: dict[str, int] = Field(description="exceptions caught inside historymw, by kind")

    @property
    def kept(self) -> int:
        """Another name for `recorded`: the calls the policy kept."""
        return self.recorded

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)
