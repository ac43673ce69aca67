"""Round trips to PostgreSQL, counted in a libpq protocol trace (`pgconn.trace`): what tests of
the store's readers and of the viewer assert a read costs."""

from __future__ import annotations


def round_trips(trace: str) -> list[str]:
    """The exchanges in a libpq protocol trace: what the client sent up to a Sync (or a simple Query)
    and the server's answer, up to its ReadyForQuery (idle, in a transaction or in a failed one)."""
    out: list[str] = []
    for line in trace.splitlines(keepends=True):
        fields = line.split("\t")
        if len(fields) > 3 and fields[1] == "F" and (not out or _ready(out[-1])):
            out.append("")
        if out:
            out[-1] += line
    return out


def _ready(exchange: str) -> bool:
    return exchange.rstrip().endswith(("ReadyForQuery\t I", "ReadyForQuery\t T", "ReadyForQuery\t E"))
