"""The process-wide state: current settings, the ring, the export pipelines.

`configure()` builds a new `Runtime` and bumps a generation number; scopes see
the new generation on their next call and recompute what they decide. Nothing
here runs on the hot path except `Runtime.commit`.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import counters
from .backends import factory
from .backends.ring import RingBuffer
from .config import Settings, load_settings
from .errors import ConfigError
from .pipeline import ExportPipeline, FlushResult


class Runtime:
    """Where records go under one configuration."""

    def __init__(self, settings: Settings, *, strict: bool) -> None:
        self.settings = settings
        self.ring: RingBuffer | None = None
        self.pipelines: list[ExportPipeline] = []
        for item in settings.backends:
            name = item if isinstance(item, str) else type(item).__name__
            try:
                backend = factory(item)(settings) if isinstance(item, str) else item
            except Exception as exc:
                if strict:  # configure(): the boundary, where a bad setup is an error
                    if isinstance(exc, (ConfigError, ImportError)):
                        raise
                    raise ConfigError(f"backend {name!r} could not start: {type(exc).__name__}: {exc}") from exc
                # Lazy start from the environment, inside an LM call: fail open, loudly.
                counters.COUNTERS.error(f"backend_start:{name}", exc)
                continue
            if isinstance(backend, RingBuffer):
                self.ring = backend
            else:
                self.pipelines.append(ExportPipeline(
                    backend, name, queue_size=settings.queue_size, queue_bytes=settings.queue_bytes,
                    batch_size=settings.batch_size, interval=settings.flush_interval,
                    redactor=settings.redactor, redact_content=settings.redact_content))

        self._ring_only = self.ring is not None and not self.pipelines
        self.commit = self._make_commit()

    def _make_commit(self) -> Callable[[dict[str, Any]], None]:
        """The function that hands a finished draft to every backend (hot path)."""
        if self._ring_only and self.ring is not None:
            # The default setup: the ring counts what it is given, under the lock it takes anyway.
            return self.ring.append
        count = counters.COUNTERS.recorded.add
        sinks = ([self.ring.append] if self.ring is not None else []) + [p.submit for p in self.pipelines]

        def commit(draft: dict[str, Any]) -> None:
            count()
            for sink in sinks:
                sink(draft)
        return commit

    def recorded(self) -> int:
        """Drafts committed under this configuration (see `_make_commit`)."""
        if self._ring_only and self.ring is not None:
            return self.ring.appended
        return counters.COUNTERS.recorded.value

    def flush(self, timeout: float | None) -> FlushResult:
        """Flush every export pipeline within one shared deadline."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return _combine([p.flush(_remaining(deadline)) for p in self.pipelines])

    def shutdown(self, timeout: float | None = None) -> FlushResult:
        """Flush and stop every export pipeline within one shared deadline."""
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        pipelines, self.pipelines = self.pipelines, []
        return _combine([p.shutdown(_remaining(deadline) or 0.0) for p in pipelines])


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _combine(results: list[FlushResult]) -> FlushResult:
    failed = [r for r in results if not r]
    if not failed:
        return FlushResult(True)
    return FlushResult(False, sum(r.pending for r in failed), "; ".join(r.detail for r in failed))


class _State:
    """Module-level singleton; `gen` changes whenever the configuration does."""

    def __init__(self) -> None:
        self.gen = 1
        self.lock = threading.RLock()
        # Read and check the environment now, at import: a bad HISTORYMW_* value is
        # an error here, never later inside an LM call.
        self.settings: Settings = load_settings()
        self.runtime: Runtime | None = None


STATE = _State()


def _after_fork_in_child() -> None:
    STATE.lock = threading.RLock()  # configure() may have held it in another thread at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def current() -> Runtime:
    """The runtime, built from the environment on first use."""
    rt = STATE.runtime
    if rt is None:
        with STATE.lock:
            if STATE.runtime is None:
                STATE.runtime = Runtime(STATE.settings, strict=False)
            rt = STATE.runtime
    return rt


def configure(**settings: Any) -> Settings:
    """Replace the whole configuration; see `historymw.configure`."""
    new_settings = load_settings(settings)
    with STATE.lock:
        old_counters = counters.COUNTERS
        counters.reset()  # before the runtime, which binds the new counters
        try:
            new_runtime = Runtime(new_settings, strict=True)
        except BaseException:
            counters.COUNTERS = old_counters
            raise
        old = STATE.runtime
        STATE.settings, STATE.runtime = new_settings, new_runtime
        STATE.gen += 1
    if old is not None:
        old.shutdown()
    return new_settings


def shutdown(timeout: float | None = None) -> FlushResult:
    """Flush and stop every export worker; the ring stays readable."""
    rt = STATE.runtime
    return rt.shutdown(timeout) if rt is not None else FlushResult(True)


def backends_of(rt: Runtime) -> Sequence[Any]:
    return [p.backend for p in rt.pipelines]


@atexit.register
def _flush_at_exit() -> None:
    # Bounded by shutdown_timeout: a dead database must not hang interpreter exit.
    rt = STATE.runtime
    if rt is not None and rt.pipelines:
        try:
            rt.shutdown()
        except Exception as exc:  # noqa: BLE001
            counters.COUNTERS.error("exit_flush", exc)
