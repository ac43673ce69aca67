"""The ring buffer: the newest records in memory, bounded by count and by bytes.

Appends and evictions are O(1) (a deque) under one short lock; the byte bound
uses each draft's `size_bytes`. Reads seal drafts into `LMCall` models, so the
ring behaves like the list of records that code written for DSPy's history
expects: `len(ring)`, `ring[-1]`, `ring[-5:]`, iteration.

Records of a `history(session=...)` scope also go to their session's window
(`historymw.sessions`), inside the same byte budget: `bytes_held` counts every
record the ring or a session holds, once, and the sessions' bookkeeping.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from .. import counters
from ..record import materialize
from ..sessions import SessionInfo, SessionTable

if TYPE_CHECKING:
    from ..config import Settings
    from ..models import LMCall


class RingBuffer(Sequence["LMCall"]):  # the model is defined when a record is first read
    """Newest-last sequence of recorded calls, within `maxlen` records and `max_bytes` bytes."""

    def __init__(self, maxlen: int = 1000, max_bytes: int = 16 * 2**20,
                 redactor: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
                 redact_content: bool = True, session_maxlen: int = 100, session_idle: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.maxlen = maxlen
        self.max_bytes = max_bytes
        # None when session_maxlen is 0: a session is then only a field of its records.
        self._sessions = SessionTable(session_maxlen, session_idle, clock) if session_maxlen > 0 else None
        # The live sessions (an empty dict when off): the ring evicts without looking at sessions when none is live.
        self._live: Mapping[str, Any] = self._sessions.live if self._sessions is not None else {}
        self._dropped = 0  # drafts offered and not kept: `appended - _dropped` numbers the kept ones
        self._redactor = redactor
        self._redact_content = redact_content
        self._items: deque[dict[str, Any]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.appended = 0  # drafts offered to append(), kept or not (under _lock)
        self._cleared = 0  # records clear() removed (not evicted: see `evicted`)
        # The largest draft kept: none when maxlen is 0 (append() compares one number).
        self._largest = max_bytes if maxlen > 0 else -1
        _rings.add(self)

    @property
    def evicted(self) -> int:
        """Records removed to hold the bounds: every record kept and no longer in the ring, but
        for those clear() removed (counted from the other counters, so append() keeps one fewer)."""
        with self._lock:
            return self.appended - self._dropped - len(self._items) - self._cleared

    @property
    def bytes_held(self) -> int:
        return self._bytes

    @property
    def clock(self) -> Callable[[], float]:
        """The clock sessions are timed by (time.time); tests set a fake one."""
        return self._sessions.clock if self._sessions is not None else time.time

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        if self._sessions is not None:
            self._sessions.clock = clock

    def append(self, draft: dict[str, Any]) -> None:
        """Add a draft, evicting the oldest until both bounds hold (hot path: at steady state
        each append evicts one record, inline)."""
        size = draft["size_bytes"]
        items = self._items
        lock = self._lock
        lock.acquire()  # acquire() and release() in a try: cheaper than `with` (no bound __exit__)
        try:
            self.appended += 1
            if size > self._largest:
                self._dropped += 1
                counters.COUNTERS.drop("larger_than_ring")
                return
            items.append(draft)
            if "session" in draft and self._sessions is not None:
                held = self._bytes + size + self._sessions.add(draft, self.appended - self._dropped)
            elif len(items) > self.maxlen and not self._live:
                # The steady state: one in, one out. Two sizes' difference is a small int as a rule
                # (no int object made for it), and the byte bound seldom needs more evictions.
                held = self._bytes + (size - items.popleft()["size_bytes"])
                if held <= self.max_bytes:
                    self._bytes = held
                    return
            else:
                held = self._bytes + size
            if len(items) > self.maxlen or held > self.max_bytes:
                if self._live:
                    held = self._evict(held)
                else:  # one in, one out (at most maxlen + 1 were held); more only for bytes
                    held -= items.popleft()["size_bytes"]
                    while held > self.max_bytes:
                        held -= items.popleft()["size_bytes"]
            self._bytes = held
        finally:
            lock.release()

    def _evict(self, held: int) -> int:
        """Evict until both bounds hold, sessions considered (under the lock); the bytes then held."""
        items, table = self._items, self._sessions
        assert table is not None
        while len(items) > self.maxlen:
            held -= self._leave(items.popleft(), table)
        if held > self.max_bytes:
            held -= table.expire(table.clock())
        while held > self.max_bytes:
            # The oldest goes first: the ring's oldest record, or the least recently active session.
            oldest = table.oldest_seq()
            if oldest is not None and (not items or oldest < self.appended - self._dropped - len(items) + 1):
                held -= table.evict_oldest()
            else:
                held -= self._leave(items.popleft(), table)
        return held

    def _leave(self, draft: dict[str, Any], table: SessionTable) -> int:
        """The ring lets go of a record: the bytes freed (none while its session's window holds it)."""
        if "session" in draft and table.keep(draft):
            return 0
        return int(draft["size_bytes"])

    def clear(self) -> None:
        with self._lock:
            self._cleared += len(self._items)
            self._items.clear()
            if self._sessions is not None:
                self._sessions.clear()
            self._bytes = 0

    def sessions(self) -> list[SessionInfo]:
        """The active sessions, least recently active first (idle ones are released first)."""
        table = self._sessions
        if table is None:
            return []
        with self._lock:
            self._bytes -= table.expire(table.clock())
            return table.infos()

    def session_drafts(self, session: str) -> list[dict[str, Any]] | None:
        """One session's window, oldest first; None when sessions are off (session_maxlen=0)."""
        table = self._sessions
        if table is None:
            return None
        with self._lock:
            self._bytes -= table.expire(table.clock())
            return table.window(session) or []

    @property
    def sessions_released(self) -> tuple[int, int]:
        """(sessions released after their idle time, sessions released early to hold max_bytes)."""
        table = self._sessions
        return (0, 0) if table is None else (table.released, table.evicted)

    def _snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)

    def drafts(self) -> list[dict[str, Any]]:
        """The raw drafts, oldest first (for code inside historymw)."""
        return self._snapshot()

    def record(self, draft: dict[str, Any]) -> LMCall:
        """The `LMCall` of one of `drafts()`, sealed under this ring's redaction settings."""
        return materialize(draft, self._redactor, self._redact_content)

    _model = record  # the name code written before `record` used

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> LMCall: ...
    @overload
    def __getitem__(self, index: slice) -> list[LMCall]: ...
    def __getitem__(self, index: int | slice) -> LMCall | list[LMCall]:
        if isinstance(index, slice):
            return [self.record(d) for d in self._snapshot()[index]]
        with self._lock:
            draft = self._items[index]
        return self.record(draft)

    def __iter__(self) -> Iterator[LMCall]:
        for draft in self._snapshot():
            yield self.record(draft)

    def __repr__(self) -> str:
        return f"<RingBuffer {len(self)} records, {self._bytes} of {self.max_bytes} bytes, maxlen={self.maxlen}>"


    def _after_fork_in_child(self) -> None:
        # Another thread of the parent may have held the lock at the fork: the child
        # gets a fresh one, and recounts the bytes an interrupted append may have left.
        self._lock = threading.Lock()
        self._bytes = sum(d["size_bytes"] for d in self._items)
        if self._sessions is not None:
            self._bytes += self._sessions.recount()


_rings: weakref.WeakSet[RingBuffer] = weakref.WeakSet()


def _after_fork() -> None:
    for ring in list(_rings):
        ring._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def create(settings: Settings) -> RingBuffer:
    return RingBuffer(settings.maxlen, settings.max_bytes, settings.redactor, settings.redact_content,
                      settings.session_maxlen, settings.session_idle)
