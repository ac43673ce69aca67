"""The export pipeline: the caller hands a draft to a bounded queue; a background
worker batches, materializes and exports it.

The hot-path rules: `submit()` never blocks and never raises; when the
queue is full (by records or by bytes) the record is dropped and counted. The
worker retries a failing batch with backoff, for up to `retry_timeout` seconds,
then drops it and counts it. After `fork()` the child starts with an empty queue
and no worker (one is started on its first record), so nothing the parent had
queued is written twice; a child started by multiprocessing (which ends its
children with `os._exit()`, skipping atexit) flushes through multiprocessing's
own exit finalizers. Accounting is exact: every submitted record ends up
exported, dropped (with a reason), or still queued (`queued()` counts the batch
being exported too). A batch still inside `export()` when `shutdown()` gives up
(a hung server) is counted as dropped ("shutdown") at that moment; if that export
returns later, it is not counted a second time.

A backend may offer `prepare_drafts(drafts, scan_content, invalid)` and
`export_prepared(prepared)` next to `export(records)`: the worker then hands it
the drafts, which it seals and converts itself, in one pass (the SQL backend
builds its rows so), and saves building an `LMCall` per record; `prepared` has
a `len()` (the records in it), and a retry exports it again without converting
it again. With a user redactor the worker always builds `LMCall`s, which checks
the types the redactor returned. Every export method may return the number of
records the destination refused (bad data): those are dropped as "rejected".
Nothing here binds to an event loop: asyncio code and threads submit alike.
"""

from __future__ import annotations

import operator
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import counters
from .record import materialize

_size_of = operator.itemgetter("size_bytes")
_BACKOFF_START_S = 0.05
_BACKOFF_MAX_S = 5.0
# fork() waits at most this long for an export in progress to finish (see `_before_fork`).
FORK_WAIT_S = 1.0


@dataclass(frozen=True)
class FlushResult:
    """What `flush()` achieved: truthy when everything queued was delivered."""

    delivered: bool
    pending: int = 0
    detail: str = ""

    def __bool__(self) -> bool:
        return self.delivered


_live: weakref.WeakSet[ExportPipeline] = weakref.WeakSet()


class ExportPipeline:
    """One bounded queue and one worker thread feeding one I/O backend."""

    def __init__(self, backend: Any, name: str, *, queue_size: int = 10000,
                 queue_bytes: int = 16 * 2**20, batch_size: int = 512, interval: float = 1.0,
                 retry_timeout: float = 30.0,
                 redactor: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
                 redact_content: bool = True) -> None:
        self.backend = backend
        self.name = name
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.batch_size = batch_size
        self.interval = interval
        self.retry_timeout = retry_timeout
        self._redactor = redactor
        self._redact_content = redact_content
        # The configuration's own counters: after configure() replaced it, what this pipeline still
        # delivers or drops at shutdown belongs to its tally, not to the new configuration's.
        self._counters = counters.COUNTERS
        # The worker reports errors through structlog: import it here, not on the worker's first error.
        # A fork() while a thread is importing leaves that module's import lock held in the child forever.
        from . import _log  # noqa: F401
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._io = threading.Lock()  # held by the worker while the backend does I/O
        self._io_held_for_fork = False
        self._queue: deque[dict[str, Any]] = deque()
        self._bytes = 0
        self._wake = threading.Event()
        self._progress = threading.Condition(threading.Lock())
        self._stopping = False
        self._give_up_at: float | None = None  # set by shutdown: stop retrying after this
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # cuts a retry backoff short at shutdown
        self._inflight = 0  # taken from the queue, not yet exported or dropped (guarded by _lock)
        self._batch_seq = 0  # the batch in flight (guarded by _lock)
        self._abandoned = -1  # the batch shutdown stopped waiting for and counted as dropped (guarded by _lock)
        self.submitted = 0  # guarded by _lock
        self.exported = 0  # guarded by _progress
        self.dropped = 0  # guarded by _progress (after queuing)
        self._pid = os.getpid()

    # -- caller side -------------------------------------------------------

    def submit(self, draft: dict[str, Any]) -> None:
        """Queue a draft for export; drop and count it if the queue is full. Never blocks on I/O."""
        size = draft["size_bytes"]
        with self._lock:
            if self._stopping:
                self._counters.drop("shut_down")
                return
            if len(self._queue) >= self.queue_size or self._bytes + size > self.queue_bytes:
                self._counters.drop("queue_full")
                return
            self._queue.append(draft)
            self._bytes += size
            self.submitted += 1
            n = len(self._queue)
            if self._thread is None:
                self._start_worker()
        if n == self.batch_size:  # a full batch: wake the worker once, not on every later submit
            self._wake.set()

    def queued(self) -> int:
        """Records submitted and not yet exported or dropped (the batch in flight included)."""
        return len(self._queue) + self._inflight

    def _start_worker(self) -> None:
        _flush_when_multiprocessing_child_exits()
        self._thread = threading.Thread(target=self._run, name=f"historymw-export-{self.name}", daemon=True)
        self._thread.start()

    # -- worker side -------------------------------------------------------

    def _take_batch(self) -> list[dict[str, Any]]:
        with self._lock:
            q = self._queue
            batch = [q.popleft() for _ in range(min(self.batch_size, len(q)))]
            self._bytes -= sum(map(_size_of, batch))
            self._inflight = len(batch)
            self._batch_seq += 1
            return batch

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            while self._queue:
                batch = self._take_batch()
                if batch:
                    self._deliver(batch)
                del batch  # an idle worker must not keep its last batch's records alive
            if self._stopping:
                return

    def _deliver(self, drafts: list[dict[str, Any]]) -> None:
        seq = self._batch_seq
        try:
            self._deliver_batch(drafts, seq)
        except Exception as exc:  # noqa: BLE001 - a bug here must not stop the worker, nor lose count of the batch
            self._counters.error(f"worker:{self.name}", exc)
        finally:
            with self._lock:
                left = self._inflight if self._abandoned != seq else 0
                self._inflight = 0
            if left:
                self._count_dropped("export_failed", left)

    def _claim(self, seq: int, n: int) -> bool:
        """Take n records of batch `seq` out of flight before counting them. False when shutdown has
        already counted the whole batch as dropped: counting them again would count them twice."""
        with self._lock:
            if self._abandoned == seq:
                return False
            self._inflight -= n
            return True

    def _prepare(self, drafts: list[dict[str, Any]], seq: int) -> tuple[Any, Callable[[Any], Any]]:
        """Hand the drafts to the backend to convert (fast path) or materialize each; a record that
        fails is dropped alone."""
        def invalid(exc: BaseException) -> None:
            self._counters.error("materialize", exc)
            if self._claim(seq, 1):
                self._count_dropped("invalid_record", 1)

        backend = self.backend
        if self._redactor is None:
            prepare = getattr(backend, "prepare_drafts", None)
            if prepare is not None:  # the backend seals and converts the batch itself, in one pass
                return prepare(drafts, self._redact_content, invalid), backend.export_prepared
        out: list[Any] = []
        for d in drafts:
            try:
                out.append(materialize(d, self._redactor, self._redact_content))
            except Exception as exc:  # noqa: BLE001 - one bad record must not sink the batch
                invalid(exc)
        return out, backend.export

    def _deliver_batch(self, drafts: list[dict[str, Any]], seq: int) -> None:
        records, export = self._prepare(drafts, seq)
        delay, first_failure = _BACKOFF_START_S, None
        while records:
            try:
                with self._io:
                    refused = export(records)
            except Exception as exc:  # noqa: BLE001 - backends fail; the worker must not
                self._counters.error(f"export:{self.name}", exc)
                now = time.monotonic()
                first_failure = first_failure or now
                give_up = self._give_up_at
                if now - first_failure >= self.retry_timeout or (give_up is not None and now >= give_up):
                    if self._claim(seq, len(records)):
                        self._count_dropped("export_failed", len(records))
                    return
                wait = delay if give_up is None else max(0.0, min(delay, give_up - now))
                self._stop.wait(wait)
                give_up = self._give_up_at  # shutdown may have started during the wait
                if give_up is not None and time.monotonic() >= give_up:
                    if self._claim(seq, len(records)):
                        self._count_dropped("export_failed", len(records))
                    return
                delay = min(delay * 2, _BACKOFF_MAX_S)
                continue
            if not self._claim(seq, len(records)):
                return  # shutdown gave up on this batch and counted it as dropped
            bad = refused if type(refused) is int and 0 < refused <= len(records) else 0
            if bad:
                self._count_dropped("rejected", bad)
            with self._progress:
                self.exported += len(records) - bad
                self._progress.notify_all()
            return

    def _count_dropped(self, reason: str, n: int) -> None:
        self._counters.drop(reason, n)
        with self._progress:
            self.dropped += n
            self._progress.notify_all()

    # -- flush and shutdown -------------------------------------------------

    def flush(self, timeout: float | None = 5.0) -> FlushResult:
        """Wait until everything submitted so far is exported or dropped, then flush the backend."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self.submitted
            running = self._thread is not None and self._thread.is_alive()
        if not running and self._queue:
            return FlushResult(False, len(self._queue), f"{self.name}: export worker is not running")
        self._wake.set()
        with self._progress:
            while self.exported + self.dropped < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    pending = target - self.exported - self.dropped
                    return FlushResult(False, pending, f"{self.name}: {pending} records not delivered in time")
                self._progress.wait(remaining if remaining is None else min(remaining, 0.1))
                self._wake.set()
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            ok = self.backend.flush(remaining)
        except Exception as exc:  # noqa: BLE001
            self._counters.error(f"flush:{self.name}", exc)
            return FlushResult(False, 0, f"{self.name}: backend flush failed: {exc}")
        if ok is False:
            return FlushResult(False, 0, f"{self.name}: backend did not flush in time")
        return FlushResult(True)

    def shutdown(self, timeout: float = 5.0) -> FlushResult:
        """Deliver what is queued within `timeout`, count the rest as dropped, release the backend."""
        deadline = time.monotonic() + timeout
        self._give_up_at = deadline
        result = self.flush(timeout)
        with self._lock:
            self._stopping = True
            leftover = len(self._queue)
            self._queue.clear()
            self._bytes = 0
        if leftover:
            self._count_dropped("shutdown", leftover)
        self._stop.set()  # a worker waiting to retry gives up now (the deadline has passed)
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:  # a batch still inside export() (a hung server): given up on, and counted
            abandoned, self._inflight = self._inflight, 0
            if abandoned:
                self._abandoned = self._batch_seq
        if abandoned:
            self._count_dropped("shutdown", abandoned)
        _call_bounded(self.backend.shutdown, max(0.1, deadline - time.monotonic()), self.name)
        _live.discard(self)
        return result

    def _before_fork(self) -> None:
        """Let an export in progress finish (bounded) and have the backend let go of what a child must not
        inherit: a connection in use by another thread, an open SQLite file (its locks are per process)."""
        self._io_held_for_fork = self._io.acquire(timeout=FORK_WAIT_S)
        if not self._io_held_for_fork:
            self._counters.error(f"fork_during_export:{self.name}")
            return
        self._backend_hook("before_fork")

    def _after_fork_in_parent(self) -> None:
        if self._io_held_for_fork:
            self._io_held_for_fork = False
            self._io.release()

    def _after_fork_in_child(self) -> None:
        # The parent's queue belongs to the parent: the child forgets it, so nothing is written twice.
        self._reset()
        self._backend_hook("after_fork")

    def _backend_hook(self, name: str) -> None:
        """Call the backend's optional fork hook `name`; a failing hook is counted, never raised."""
        hook = getattr(self.backend, name, None)
        if callable(hook):
            try:
                hook()
            except Exception as exc:  # noqa: BLE001
                self._counters.error(f"{name}:{self.name}", exc)


def _call_bounded(fn: Callable[[], Any], timeout: float, name: str) -> None:
    """Run fn on a daemon thread and wait at most `timeout`: a hung backend must not hang exit."""
    def run() -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            counters.COUNTERS.error(f"shutdown:{name}", exc)

    t = threading.Thread(target=run, name=f"historymw-shutdown-{name}", daemon=True)
    t.start()
    t.join(timeout)


_mp_exit_hook_pid = 0


def _flush_when_multiprocessing_child_exits() -> None:
    """In a child started by multiprocessing, flush at exit through multiprocessing's finalizers.

    Its fork and forkserver children end with `os._exit()` after running those finalizers, never
    atexit, so the exit hook in `runtime` would not run and everything still queued would be lost.
    Registered when a worker starts (once per process): a forked child's finalizer registry starts
    empty, and its first record starts its worker."""
    global _mp_exit_hook_pid
    process = sys.modules.get("multiprocessing.process")
    util = sys.modules.get("multiprocessing.util")
    pid = os.getpid()
    if process is None or util is None or _mp_exit_hook_pid == pid or process.parent_process() is None:
        return
    _mp_exit_hook_pid = pid
    util.Finalize(None, _flush_at_child_exit, exitpriority=100)


def _no_flush() -> object:
    return None


# What a multiprocessing child runs at exit: `runtime.shutdown` (bounded by shutdown_timeout), which
# `runtime` sets here when it is imported; this module does not import `runtime` (which imports it).
child_exit_flush: Callable[[], object] = _no_flush


def _flush_at_child_exit() -> None:
    try:
        child_exit_flush()
    except Exception as exc:  # noqa: BLE001
        counters.COUNTERS.error("exit_flush", exc)


_forking: list[ExportPipeline] = []


def _before_fork() -> None:
    _forking[:] = list(_live)
    for p in _forking:
        p._before_fork()


def _after_fork_in_parent() -> None:
    for p in _forking:
        p._after_fork_in_parent()
    _forking.clear()


def _after_fork() -> None:
    # (record.py resets its own seal lock in the child: a worker may have held it at the fork.)
    _forking.clear()
    for p in list(_live):
        p._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork)
