"""The ring buffer: the newest records in memory, bounded by count and by bytes.

Appends and evictions are O(1) (a deque) under one short lock; the byte bound
uses each draft's `size_bytes`. Reads seal drafts into `LMCall` models, so the
ring behaves like the list of records that code written for DSPy's history
expects: `len(ring)`, `ring[-1]`, `ring[-5:]`, iteration.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from .. import counters
from ..record import materialize

if TYPE_CHECKING:
    from ..config import Settings
    from ..models import LMCall


class RingBuffer(Sequence["LMCall"]):  # the model is defined when a record is first read
    """Newest-last sequence of recorded calls, within `maxlen` records and `max_bytes` bytes."""

    def __init__(self, maxlen: int = 1000, max_bytes: int = 16 * 2**20,
                 redactor: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
                 redact_content: bool = True) -> None:
        self.maxlen = maxlen
        self.max_bytes = max_bytes
        self._redactor = redactor
        self._redact_content = redact_content
        self._items: deque[dict[str, Any]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evicted = 0  # records removed to hold the bounds (under _lock)
        self.appended = 0  # drafts offered to append(), kept or not (under _lock)
        _rings.add(self)

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def append(self, draft: dict[str, Any]) -> None:
        """Add a draft, evicting the oldest until both bounds hold (hot path)."""
        size = draft["size_bytes"]
        items = self._items
        lock = self._lock
        lock.acquire()
        try:
            self.appended += 1
            if size > self.max_bytes or self.maxlen == 0:
                counters.COUNTERS.drop("larger_than_ring")
                return
            items.append(draft)
            held = self._bytes + size
            if held > self.max_bytes or len(items) > self.maxlen:
                while len(items) > self.maxlen or held > self.max_bytes:
                    held -= items.popleft()["size_bytes"]
                    self.evicted += 1
            self._bytes = held
        finally:
            lock.release()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

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


_rings: weakref.WeakSet[RingBuffer] = weakref.WeakSet()


def _after_fork() -> None:
    for ring in list(_rings):
        ring._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def create(settings: Settings) -> RingBuffer:
    return RingBuffer(settings.maxlen, settings.max_bytes, settings.redactor, settings.redact_content)
