"""Short ids: the 8 hex digits that `historymw tail` shows and `historymw show` accepts.

A call's id is time-ordered (48 bits of milliseconds, 48 bits drawn once per
process, a 32-bit sequence number), so the rows of a store are appended in
order and its primary-key index stays compact. But the calls of one burst
share 31 of their 32 digits: no prefix of a few characters tells them apart.

The short id is a function of the id: the sequence number plus an offset made
from the process's bits, modulo 2**32, in 8 hex digits. Within one process any
two calls get different short ids (up to 2**32 calls) and consecutive calls get
consecutive ones; two processes share one with a probability of about
(calls of both) / 2**32. Ids of another shape (given by the caller) get the
first 8 hex digits of a BLAKE2b hash. Being a function of the id, the short id
needs no coordination, can be computed again from any record, and is filled in
for old rows by a migration. The store keeps it in an indexed column so that
`show` finds it without a scan; because it grows with the sequence number, each
process adds to that index at one place, as it does to the time-ordered primary
key (a scrambled short id scatters index writes: benchmarks/short_ids.py).

Lookup rule (`Store.get`, `historymw show`), any case: the full id; else 4 to 8
hex digits are a prefix of short ids; 9 or more a prefix of full ids. Several
matches raise `AmbiguousIdError` listing them.

Kept apart from the SQL modules: `historymw.store` and the command line import
this without SQLAlchemy.
"""

from __future__ import annotations

import re

SHORT_LEN = 8
MIN_PREFIX = 4
LISTED = 10  # candidates an ambiguous id lists
_M32 = 0xFFFFFFFF
_OURS = re.compile(r"^[0-9a-f]{32}$")


def offset_of(prefix: str) -> int:
    """The per-process offset added to the sequence number (from the id's 48 process bits)."""
    p = int(prefix, 16)
    return ((p & _M32) ^ (p >> 32)) & _M32


def short_from(seq: int, offset: int) -> str:
    """The short id of the call with this sequence number (& 0xFFFFFFFF) in a process with this offset."""
    return "%08x" % ((seq + offset) & _M32)


def short_id(call_id: str) -> str:
    """The short form of a call's id (8 lower-case hex digits)."""
    if _OURS.match(call_id):
        return short_from(int(call_id[24:], 16), offset_of(call_id[12:24]))
    import hashlib  # here: the command line's imports (tail, sessions) then need no hashlib

    return hashlib.blake2b(call_id.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()


class AmbiguousIdError(LookupError):
    """An id prefix that matches more than one call; `candidates` holds (some of) their ids."""

    def __init__(self, prefix: str, candidates: list[str] | tuple[str, ...] = ()) -> None:
        self.prefix = prefix
        self.candidates = tuple(candidates)
        shown = ", ".join(f"{short_id(c)} ({c})" for c in self.candidates[:LISTED])
        if len(self.candidates) > LISTED:
            shown += ", and more"
        super().__init__(f"id {prefix!r} matches several calls: {shown}" if shown
                         else f"id {prefix!r} matches several calls")
