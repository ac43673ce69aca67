"""Exact counters, and the fail-open error reporter.

Counters are `itertools.count` objects: `next()` on one is a single C call, so
increments from many threads are exact without a lock on the hot path.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Stats as Stats  # re-exported: `historymw.counters.Stats` stays importable

_LOG_EVERY_S = 60.0


class Counter:
    """A thread-safe monotonic counter."""

    __slots__ = ("count", "add")

    def __init__(self) -> None:
        self.count = itertools.count()
        # Calling it adds one. (On a hot path `next(counter.count)` is cheaper still: the
        # interpreter calls `next` directly, a method-wrapper like this one goes the generic way.)
        self.add = self.count.__next__

    @property
    def value(self) -> int:
        # repr is "count(N)": reading it does not advance the counter.
        return int(repr(self.count)[6:-1])


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
            from .errtext import describe
            from .redact import redact_text

            # The text of an exception may quote what failed: a URL with its password, a key.
            logger.warning(
                "historymw.internal_error",
                kind=kind,
                error=None if exc is None else redact_text(describe(exc))[:500],
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


def __getattr__(name: str) -> Any:
    # The pydantic model is defined on first use (see `models`), not at `import historymw`.
    if name == "Stats":
        from .models import Stats

        return Stats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
