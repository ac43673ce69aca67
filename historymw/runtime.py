"""The process-wide state: current settings, the ring, the export pipelines.

`configure()` builds a new `Runtime`, bumps a generation number and marks every
scope's cached decision stale; scopes recompute what they decide on their next
call. Nothing here runs on the hot path except `Runtime.commit`.

Each configuration keeps its own counters: the previous configuration's export
workers, stopped by `configure()`, count what they deliver or drop into the
previous configuration's tally (`hm.stats(previous=True)`), never into the new one.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import counters, pipeline
from .backends import factory
from .backends.ring import RingBuffer
from .config import Problem, build_settings, load_settings, mask_url, parse_values
from .errors import ConfigError
from .pipeline import ExportPipeline, FlushResult
from .policy import STALE, SampledOut, Sampler

if TYPE_CHECKING:
    from .config_model import Settings
    from .models import Stats


class Unavailable:
    """Stands in for a backend that could not start from the environment (a bad HISTORYMW_SQL_URL, a
    database that cannot be opened). The records meant for it are counted as dropped, with the reason
    `backend_unavailable`, and `flush()` says it did not deliver: nothing vanishes uncounted."""

    def __init__(self, name: str, reason: str, tally: counters.Counters) -> None:
        self.name = name
        self.reason = mask_url(reason)
        self.backend = None
        self.exported = 0
        self.dropped = 0
        self._counters = tally

    def submit(self, draft: dict[str, Any]) -> None:
        self.dropped += 1
        self._counters.drop("backend_unavailable")

    def queued(self) -> int:
        return 0

    def flush(self, timeout: float | None = None) -> FlushResult:
        return FlushResult(False, 0, f"{self.name}: backend unavailable ({self.reason}); "
                                     f"{self.dropped} records dropped as backend_unavailable")

    def shutdown(self, timeout: float | None = None) -> FlushResult:
        return self.flush(timeout)


class Runtime:
    """Where records go under one configuration, and its counters."""

    def __init__(self, settings: Settings, *, strict: bool,
                 unavailable: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.counters = counters.COUNTERS  # configure() starts fresh counters before building the runtime
        # Sampled-out calls are counted by the samplers that skip them (policy.Sampler), read with the rest.
        c = self.counters
        sampled_out = c.sampled_out
        if not isinstance(sampled_out, SampledOut):
            sampled_out = c.sampled_out = SampledOut(sampled_out.value)
        self._sampled_out = sampled_out
        self.ring: RingBuffer | None = None
        self.pipelines: list[ExportPipeline | Unavailable] = []
        self._stopped: list[ExportPipeline | Unavailable] = []  # shut down; stats() still counts them
        unavailable = unavailable or {}
        for item in settings.backends:
            name = item if isinstance(item, str) else type(item).__name__
            if name in unavailable:  # already reported when the environment was read
                self.pipelines.append(Unavailable(name, unavailable[name], self.counters))
                continue
            try:
                backend = factory(item)(settings) if isinstance(item, str) else item
            except Exception as raw:
                exc = _without_password(raw)
                if strict:  # configure(): the boundary, where a bad setup is an error
                    if isinstance(exc, (ConfigError, ImportError)):
                        if exc is raw:
                            raise
                        raise exc from None  # the original's text holds a database password
                    raise ConfigError(f"backend {name!r} could not start: {type(exc).__name__}: {exc}") from None
                # Lazy start from the environment, inside an LM call: fail open, loudly, and count
                # what this backend would have received.
                self.counters.error(f"backend_start:{name}", exc)
                self.pipelines.append(Unavailable(name, f"{type(exc).__name__}: {exc}", self.counters))
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

    def sampler(self, rate: float, counted: bool) -> Sampler:
        """The Bernoulli sampler of this configuration's scopes that sample at `rate` (`counted`: its
        skips are sampled-out calls; under errors+sample they are tail decisions, counted at the end)."""
        return self._sampled_out.sampler(rate, counted)

    def _make_commit(self) -> Callable[[dict[str, Any]], None]:
        """The function that hands a finished draft to every backend (hot path)."""
        if self._ring_only and self.ring is not None:
            # The default setup: the ring counts what it is given, under the lock it takes anyway.
            return self.ring.append
        count = self.counters.recorded.add
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
        return self.counters.recorded.value

    def stats(self) -> Stats:
        """This configuration's counters (see `historymw.stats`)."""
        from .models import Stats

        c = self.counters
        dropped = {k: v.value for k, v in c.dropped.items()}
        ring = self.ring
        pipelines = self._stopped + self.pipelines
        return Stats(
            recorded=self.recorded(),
            sampled_out=c.sampled_out.value,
            filtered_out=c.filtered_out.value,
            dropped=sum(dropped.values()),
            dropped_by_reason=dropped,
            evicted=c.evicted.value + (ring.evicted if ring is not None else 0),
            records_held=len(ring) if ring is not None else 0,
            bytes_held=ring.bytes_held if ring is not None else 0,
            max_bytes=self.settings.max_bytes,
            queued=sum(p.queued() for p in pipelines),
            exported=sum(p.exported for p in pipelines),
            errors={k: v.value for k, v in c.errors.items()},
        )

    def flush(self, timeout: float | None) -> FlushResult:
        """Flush every export pipeline within one shared deadline."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return _combine([p.flush(_remaining(deadline)) for p in self.pipelines])

    def shutdown(self, timeout: float | None = None) -> FlushResult:
        """Flush and stop every export pipeline within one shared deadline."""
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        pipelines, self.pipelines = self.pipelines, []
        self._stopped += pipelines
        return _combine([p.shutdown(_remaining(deadline) or 0.0) for p in pipelines])


def _without_password(exc: Exception) -> Exception:
    """`exc`, or a copy of it whose message has every URL's password masked (a URL SQLAlchemy could not
    parse is quoted whole in its error)."""
    text = str(exc)
    masked = mask_url(text)
    if masked == text:
        return exc
    try:
        return type(exc)(masked)
    except Exception:  # noqa: BLE001 - an exception type with another constructor
        return RuntimeError(f"{type(exc).__name__}: {masked}")


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _combine(results: list[FlushResult]) -> FlushResult:
    failed = [r for r in results if not r]
    if not failed:
        return FlushResult(True)
    return FlushResult(False, sum(r.pending for r in failed), "; ".join(r.detail for r in failed))


def _report(problems: list[Problem], backends: tuple[Any, ...]) -> None:
    """Log each bad environment value once, clearly, and count it (`stats().errors["config"]`)."""
    if not problems:
        return
    from ._log import logger

    tally = counters.COUNTERS
    for p in problems:
        tally._counter(tally.errors, "config").add()
        if p.setting == "sql_url":
            instead = ("the 'sql' backend does not start: the calls meant for it are counted as dropped "
                       "(backend_unavailable)" if "sql" in backends
                       else "not used for recording ('sql' is not among the backends)")
        else:
            instead = f"using the default {p.default!s}" if not isinstance(p.default, tuple) \
                else f"using the default {','.join(map(str, p.default))}"
        try:
            logger.warning("historymw.bad_environment_value", variable=p.variable,
                           value=mask_url(p.value), allowed=p.allowed, instead=instead,
                           note="configure() raises ConfigError for the same value")
        except Exception:  # noqa: BLE001 - a logging setup that fails must not break the import either
            pass


class _State:
    """Module-level singleton; `gen` changes whenever the configuration does."""

    def __init__(self) -> None:
        self.gen = 1
        self.lock = threading.RLock()
        # The decisions scopes have cached (scope.Effective) under this generation, to mark stale when
        # it ends. A lock of their own: a scope deciding never waits for a configure() under way.
        self._decisions: weakref.WeakSet[Any] = weakref.WeakSet()
        self.decisions_lock = threading.Lock()
        # Read and check the environment now, when the recorder is first used (`import historymw` loads
        # this module on first use), with plain code (no model is built until the
        # configuration is first used). A bad HISTORYMW_* value never raises here: an application that
        # imports historymw through a library must keep working. It is logged and counted when the
        # configuration is first used, and its default is used; configure() raises for the same value.
        self._values, self.problems = parse_values(strict=False)
        self._unreported = list(self.problems)
        self._settings: Settings | None = None
        self.runtime: Runtime | None = None
        self.previous: Stats | None = None  # the final tally of the configuration configure() replaced

    @property
    def settings(self) -> Settings:
        s = self._settings
        if s is None:
            # Logged when the configuration is first used, not at import: a process that only reads
            # the store (the `historymw` command) is not concerned, and its stdout stays its output.
            unreported, self._unreported = self._unreported, []
            _report(unreported, self._values["backends"])
            s = self._settings = build_settings(self._values)
        return s

    @settings.setter
    def settings(self, value: Settings) -> None:
        self._settings = value

    def new_generation(self) -> None:
        """The configuration changed (the caller holds `lock`): every cached decision is now stale."""
        self.gen += 1
        with self.decisions_lock:
            for eff in list(self._decisions):
                eff.mode = STALE
            self._decisions.clear()

    def keep(self, eff: Any) -> bool:
        """May a scope cache `eff`, decided under generation `eff.gen`? Not when the configuration
        changed meanwhile (its next call decides again); else it is marked stale with the rest."""
        with self.decisions_lock:
            if eff.gen != self.gen:
                return False
            self._decisions.add(eff)
            return True

    def unavailable(self) -> dict[str, str]:
        """Backends the environment asked for with a value that cannot work (reported at first use)."""
        bad_url = [p.message for p in self.problems if p.setting == "sql_url"]
        return {"sql": bad_url[0]} if bad_url else {}


STATE = _State()


def _after_fork_in_child() -> None:
    STATE.lock = threading.RLock()  # configure() may have held it in another thread at the fork
    STATE.decisions_lock = threading.Lock()
    sampled_out = counters.COUNTERS.sampled_out
    if isinstance(sampled_out, SampledOut):
        sampled_out.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def current() -> Runtime:
    """The runtime, built from the environment on first use."""
    rt = STATE.runtime
    if rt is None:
        with STATE.lock:
            if STATE.runtime is None:
                STATE.runtime = Runtime(STATE.settings, strict=False, unavailable=STATE.unavailable())
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
        STATE.new_generation()
    if old is not None:
        old.shutdown()
        _keep_tally(old)
    return new_settings


def _keep_tally(old: Runtime) -> None:
    """Keep the replaced configuration's final tally for `stats(previous=True)`; log it if it lost records."""
    tally = old.stats()
    STATE.previous = tally
    if tally.dropped:
        try:
            from ._log import logger

            logger.warning("historymw.previous_configuration_dropped", recorded=tally.recorded,
                           exported=tally.exported, dropped=tally.dropped,
                           dropped_by_reason=tally.dropped_by_reason,
                           note="counted in hm.stats(previous=True), not in the new configuration's stats()")
        except Exception:  # noqa: BLE001
            pass


def previous_stats() -> Stats | None:
    """The final tally of the configuration the last `configure()` replaced; None before that."""
    return STATE.previous


def shutdown(timeout: float | None = None) -> FlushResult:
    """Flush and stop every export worker; the ring stays readable."""
    rt = STATE.runtime
    return rt.shutdown(timeout) if rt is not None else FlushResult(True)


pipeline.child_exit_flush = shutdown  # a multiprocessing child flushes through it (see pipeline)


@atexit.register
def _flush_at_exit() -> None:
    # Bounded by shutdown_timeout: a dead database must not hang interpreter exit.
    rt = STATE.runtime
    if rt is not None and rt.pipelines:
        try:
            rt.shutdown()
        except Exception as exc:  # noqa: BLE001
            rt.counters.error("exit_flush", exc)
