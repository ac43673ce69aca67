"""The module-level functions of the public surface."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, overload

from . import counters as _stats
from . import runtime
from .backends.ring import RingBuffer
from .pipeline import FlushResult
from .plain import head_tail
from .sessions import SessionInfo

if TYPE_CHECKING:
    from .config_model import Settings
    from .models import LMCall, Stats


def configure(**settings: Any) -> Settings:
    """Replace the whole configuration.

    Takes every setting of the environment table (policy, maxlen, max_bytes,
    sample_rate, backends, sql_url, capture_content, max_field_chars, ...) plus
    `redactor=`. Settings not named fall back to HISTORYMW_* variables, then to
    defaults. Starts a new ring and new counters; export workers of the previous
    configuration are flushed and stopped; what they still deliver or drop is
    counted in that configuration's final tally, `stats(previous=True)`, never in
    the new one. A bad keyword, or a bad HISTORYMW_* value it reads, raises
    `ConfigError` naming it, the value and what is allowed.
    """
    return runtime.configure(**settings)


def settings() -> Settings:
    """The configuration in force."""
    return runtime.current().settings


def ring() -> RingBuffer:
    """The ring buffer (a Sequence of LMCall, newest last). An empty one when
    the configuration has no 'ring' backend."""
    rt = runtime.current()
    if rt.ring is None:
        return RingBuffer(maxlen=0, max_bytes=0)
    return rt.ring


def recent(n: int = 10, *, session: str | None = None,
           status: Literal["ok", "error"] | None = None) -> list[LMCall]:
    """The newest `n` records from the ring, newest last, optionally filtered.

    `session=`: that session's own window in memory (its newest `session_maxlen` records,
    kept beyond the ring's turnover until it has been idle for `session_idle`).
    With `session` and a 'sql' backend, calls the ring no longer holds (evicted, from before a
    restart, from other processes) come from the store: see `historymw.store.with_stored`."""
    if status not in (None, "ok", "error"):
        raise ValueError(f"recent(status=...): expected 'ok', 'error' or None, not {status!r}")
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"recent(n): n must be a whole number of records, not {n!r}")
    r = ring()
    window = r.session_drafts(_session_key(session)) if session is not None else None
    drafts = window if window is not None else r.drafts()
    if session is not None or status is not None:
        drafts = [d for d in drafts
                  if (session is None or d.get("session") == _session_key(session))
                  and (status is None or d.get("status", "ok") == status)]
    found = [r.record(d) for d in drafts[-n:]] if n > 0 else []
    if session is not None and len(found) < n:  # with a 'sql' backend, the store holds the rest
        from .store import with_stored

        return with_stored(found, n, session=session, status=status)
    return found


def sessions() -> list[SessionInfo]:
    """The active sessions in memory, least recently active first: id, first and last
    activity, calls, errors, tokens, cost, and how many of its records are held. A session
    is active from its first recorded call until it has been idle for `session_idle`
    (HISTORYMW_SESSION_IDLE, 10 minutes by default); under byte pressure the least recently
    active ones are released first. Empty with `session_maxlen=0` or without a ring."""
    return ring().sessions()


def _session_key(session: str) -> str:
    # Records keep a session truncated at max_field_chars: look a long id up the same way.
    limit = settings().max_field_chars
    return head_tail(session, limit) if isinstance(session, str) and len(session) > limit else session


@overload
def stats() -> Stats: ...
@overload
def stats(*, previous: Literal[True]) -> Stats | None: ...
@overload
def stats(*, previous: bool) -> Stats | None: ...


def stats(*, previous: bool = False) -> Stats | None:
    """Exact counters since the last `configure()`.

    `previous=True`: the final tally of the configuration the last `configure()`
    replaced (after its export workers stopped), or None when there was none.
    Within each configuration, exported + dropped + queued = recorded for every
    I/O backend.
    """
    if previous:
        return runtime.previous_stats()
    return runtime.current().stats()


# Run first by flush(): integrations hand over records still held outside historymw
# (an outcome whose event loop has closed before its framework reported it).
BEFORE_FLUSH: list[Callable[[], None]] = []


def flush(timeout: float | None = 5.0) -> FlushResult:
    """Deliver everything queued to the I/O backends; says what it could not."""
    for hook in list(BEFORE_FLUSH):
        try:
            hook()
        except Exception as exc:  # noqa: BLE001 - fail open
            _stats.COUNTERS.error("flush_hook", exc)
    return runtime.current().flush(timeout)


def shutdown(timeout: float | None = None) -> FlushResult:
    """Flush within `timeout` (default `shutdown_timeout`) and stop the export workers."""
    return runtime.shutdown(timeout)
