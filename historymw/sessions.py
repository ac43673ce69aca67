"""Sessions in memory: each `history(session=...)` keeps its own window of records.

The ring (backends/ring.py) keeps the newest `maxlen` records of every call. A
session also keeps its own newest `session_maxlen` records, so a conversation's
window survives the ring's turnover, and a summary (first and last activity,
calls, errors, tokens, cost) that `hm.sessions()` lists. Everything counts
against the ring's one `max_bytes` budget: a record held by both the ring and
its session is counted once; a session's own bookkeeping is counted too.

Lifecycle, with no thread per session: the table is an OrderedDict of sessions
by last activity, oldest first. A session idle for `session_idle` seconds is
released at the next session call or read (popping from the front: amortised
O(1)). Under byte pressure the oldest goes first: a ring record by age, or the
least recently active session, whole.

Every method here runs under the ring's lock.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from .draft import str_bytes

_UTC = _dt.timezone.utc

# What a live session takes besides its records' own bytes (calibrated with tracemalloc in
# tests/test_sessions.py): the Session object, its window list's header and growth slack,
# the table's OrderedDict entry, the floats and ints of its summary.
SESSION_BYTES = 560
SLOT_BYTES = 9  # a record's slot in a window list, with the list's growth slack


class SessionInfo(NamedTuple):
    """One active session, as `hm.sessions()` lists it (a NamedTuple: `._asdict()` for JSON)."""

    id: str
    first_activity: _dt.datetime
    last_activity: _dt.datetime
    calls: int  # calls recorded in this session since it became active
    errors: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: float | None  # None until a call reports a cost
    held: int  # of its records, how many memory holds now (at most session_maxlen)


class Session:
    __slots__ = ("id", "first", "last", "seq", "calls", "errors", "input_tokens", "output_tokens",
                 "total_tokens", "cost", "window", "outside", "outside_bytes")

    def __init__(self, sid: str, now: float) -> None:
        self.id = sid
        self.first = self.last = now
        self.seq = 0  # the ring's append number of its last call
        self.calls = self.errors = self.input_tokens = self.output_tokens = self.total_tokens = 0
        self.cost: float | None = None
        # Its newest records, oldest first. The first `outside` have left the ring: only the
        # session holds them, and their bytes (`outside_bytes`) are the session's to count.
        self.window: list[dict[str, Any]] = []
        self.outside = 0
        self.outside_bytes = 0

    def info(self) -> SessionInfo:
        return SessionInfo(self.id, _dt.datetime.fromtimestamp(self.first, _UTC),
                           _dt.datetime.fromtimestamp(self.last, _UTC), self.calls, self.errors,
                           self.input_tokens, self.output_tokens, self.total_tokens, self.cost, len(self.window))

    def held_bytes(self) -> int:
        return SESSION_BYTES + str_bytes(self.id) + SLOT_BYTES * len(self.window) + self.outside_bytes


class SessionTable:
    """The live sessions of one ring. `bytes` is what they add to the ring's count."""

    def __init__(self, maxlen: int, idle: float, clock: Callable[[], float] = time.time) -> None:
        self.maxlen = maxlen
        self.idle = idle
        self.clock = clock
        self.live: OrderedDict[str, Session] = OrderedDict()
        self.bytes = 0
        self.released = 0  # sessions released after their idle time
        self.evicted = 0  # sessions released early, to hold max_bytes

    def add(self, draft: dict[str, Any], seq: int) -> int:
        """Put a record in its session's window; the change in bytes held (may be negative)."""
        now = self.clock()
        before = self.bytes
        self.expire(now)
        sid = draft["session"]
        live = self.live
        s = live.get(sid)
        if s is None:
            s = live[sid] = Session(sid, now)
            self.bytes += SESSION_BYTES + str_bytes(sid)
        else:
            live.move_to_end(sid)
        s.last = now
        s.seq = seq
        s.calls += 1
        if draft.get("status") == "error":
            s.errors += 1
        i, o, t = draft.get("input_tokens"), draft.get("output_tokens"), draft.get("total_tokens")
        s.input_tokens += i or 0
        s.output_tokens += o or 0
        s.total_tokens += t if t is not None else (i or 0) + (o or 0)
        cost = draft.get("cost")
        if cost is not None:
            s.cost = (s.cost or 0.0) + cost
        window = s.window
        window.append(draft)
        if len(window) > self.maxlen:
            old = window.pop(0)
            if s.outside:  # only the session held it: its bytes go
                s.outside -= 1
                s.outside_bytes -= old["size_bytes"]
                self.bytes -= old["size_bytes"]
        else:
            self.bytes += SLOT_BYTES
        return self.bytes - before

    def keep(self, draft: dict[str, Any]) -> bool:
        """The ring lets go of a record: True when its session's window still holds it (its bytes
        become the session's). The ring lets go in order, so it can only be the oldest of the
        window's records still in the ring."""
        s = self.live.get(draft["session"])
        if s is None or s.outside >= len(s.window) or s.window[s.outside] is not draft:
            return False
        s.outside += 1
        s.outside_bytes += draft["size_bytes"]
        self.bytes += draft["size_bytes"]
        return True

    def expire(self, now: float) -> int:
        """Release every session idle for `idle` seconds; the bytes freed."""
        live = self.live
        freed = 0
        deadline = now - self.idle
        while live:
            s = next(iter(live.values()))
            if s.last > deadline:
                break
            freed += self._release(s)
            self.released += 1
        return freed

    def oldest_seq(self) -> int | None:
        """The ring append number of the least recently active session's last call."""
        return next(iter(self.live.values())).seq if self.live else None

    def evict_oldest(self) -> int:
        """Release the least recently active session early (byte pressure); the bytes freed."""
        self.evicted += 1
        return self._release(next(iter(self.live.values())))

    def _release(self, s: Session) -> int:
        # Its records still in the ring stay there, counted by the ring; the others go now.
        del self.live[s.id]
        freed = s.held_bytes()
        self.bytes -= freed
        return freed

    def window(self, sid: str) -> list[dict[str, Any]] | None:
        s = self.live.get(sid)
        return None if s is None else list(s.window)

    def infos(self) -> list[SessionInfo]:
        return [s.info() for s in self.live.values()]

    def clear(self) -> None:
        self.live.clear()
        self.bytes = 0

    def recount(self) -> int:
        self.bytes = sum(s.held_bytes() for s in self.live.values())
        return self.bytes
