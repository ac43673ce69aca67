"""Rows of `historymw_calls`: built from sealed drafts (the general way of
`historymw.sql.batch`) or from `LMCall` models, and turned back into `LMCall` when read.

The export path binds plain tuples in `COLUMNS` order with JSON already
encoded: SQLAlchemy's per-row type processing would cost more than the
insert itself at tens of thousands of rows a second. A list of messages
becomes `message_refs` (its contents go to a `contents.Pending`); anything
else in `messages` is stored as JSON, as before version 4.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

from ..record import LMCall
from .contents import Pending
from .direct import to_datetime as to_datetime  # its home is direct, which imports no SQLAlchemy
from .ids import short_id
from .schema import calls

COLUMNS: tuple[str, ...] = tuple(c.name for c in calls.columns)
JSON_COLUMNS = ("messages", "params", "outputs", "tags", "metadata", "extra")
_TIME_COLUMNS = ("started_at", "ended_at")
# LMCall fields with no column of their own go into `extra` (fields a later release adds).
EXTRA_FIELDS = frozenset(LMCall.model_fields) - set(COLUMNS)
_UTC = _dt.timezone.utc

# Compact, and no ensure_ascii: text stays readable in the database and smaller.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False,
                           allow_nan=True, default=str).encode


def _json(value: Any) -> str | None:
    """JSON text, or NULL for an empty container (most tags, outputs, metadata)."""
    return _encode(value) if value else None


def _json_params(params: Any) -> str | None:
    """JSON of a flat dict of str keys and scalar values (the usual params), else the general encoder."""
    if not params:
        return None
    if type(params) is dict:
        parts = []
        for k, v in params.items():
            t = type(v)
            if type(k) is not str or t not in _SCALAR_JSON:
                break
            parts.append(f"{_string(k)}:{_SCALAR_JSON[t](v)}")
        else:
            return f"{{{','.join(parts)}}}"
    return _encode(params)


_string = json.encoder.encode_basestring  # the C function json uses with ensure_ascii=False
_SCALAR_JSON: dict[type, Any] = {
    str: _string, int: int.__repr__, bool: lambda v: "true" if v else "false", type(None): lambda v: "null",
    float: lambda v: float.__repr__(v) if math.isfinite(v) else _string(str(v)),
}
# Every key a row reads from a draft, with what a missing key means.
_DRAFT_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(COLUMNS), "operation": "chat", "status": "ok", "stream": False, "source": "decorator",
    "size_bytes": 0, "duration": 0.0,
}
# Columns every draft row binds; the others only when the draft has the key (a NULL column
# need not be bound: binding costs about as much per parameter as SQLite spends per row).
_ALWAYS = ("id", "short_id", "started_at", "ended_at", "duration_s", "operation", "status", "stream", "source",
           "size_bytes")
_DRAFT_KEY = {"started_at": "started"}
# frozenset of a draft's keys -> (the columns its row binds, the getter building the row)
_shapes: dict[frozenset[str], tuple[tuple[str, ...], Any]] = {}


def _shape(keys: frozenset[str]) -> tuple[tuple[str, ...], Any]:
    cols = tuple(c for c in COLUMNS if c in _ALWAYS or _DRAFT_KEY.get(c, c) in keys
                 or (c == "extra" and not keys.isdisjoint(EXTRA_FIELDS))
                 or (c == "message_refs" and "messages" in keys))
    getter = operator.itemgetter(*(_DRAFT_KEY.get(c, c) for c in cols))
    if len(_shapes) < 1024:  # drafts come in a few shapes; odd ones must not grow this without bound
        _shapes[keys] = cols, getter
    return cols, getter


def draft_rows(drafts: Sequence[Mapping[str, Any]], pending: Pending) -> dict[tuple[str, ...], list[tuple[Any, ...]]]:
    """Rows from sealed drafts, grouped by the columns they bind (times as epoch seconds); their
    message contents go to `pending`."""
    out: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    shapes = _shapes
    for d in drafts:
        keys = frozenset(d)
        cols, getter = shapes.get(keys) or _shape(keys)
        rows = out.get(cols)
        if rows is None:
            rows = out[cols] = []
        rows.append(getter(_draft_values(d, pending)))
    return out


def _messages(m: dict[str, Any], pending: Pending, started: float) -> None:
    """`message_refs` for a list of messages; JSON in `messages` for anything else."""
    messages = m["messages"]
    if type(messages) is list:
        m["message_refs"] = pending.refs(messages, started)
        m["messages"] = None
    else:
        m["message_refs"] = None
        m["messages"] = _json(messages)


def _draft_values(d: Mapping[str, Any], pending: Pending) -> dict[str, Any]:
    m = {**_DRAFT_DEFAULTS, **d}
    m["short_id"] = short_id(m["id"])
    started = m["started"]
    duration = m["duration_s"] = m["duration"]
    m["ended_at"] = started + duration
    _messages(m, pending, started)
    m["params"] = _json_params(m["params"])
    v = m["outputs"]
    m["outputs"] = _encode(v) if v else None
    v = m["tags"]
    m["tags"] = _encode(v) if v else None
    v = m["metadata"]
    m["metadata"] = _encode(v) if v else None
    v = m["trace_id"]
    if type(v) is int:
        m["trace_id"] = f"{v:032x}"
    v = m["span_id"]
    if type(v) is int:
        m["span_id"] = f"{v:016x}"
    if EXTRA_FIELDS:
        extra = {k: d[k] for k in EXTRA_FIELDS if k in d}
        m["extra"] = _encode(extra) if extra else None
    return m


def record_row(r: LMCall, pending: Pending) -> tuple[Any, ...]:
    """A row from an `LMCall` (the path for records that did not come as drafts)."""
    f = r.__dict__
    started = r.started_at.timestamp()
    extra = {k: f[k] for k in EXTRA_FIELDS if f.get(k) is not None} if EXTRA_FIELDS else None
    values = {**f, "short_id": short_id(r.id), "started_at": started, "ended_at": r.ended_at.timestamp(),
              "extra": extra}
    _messages(values, pending, started)
    return tuple(values[c] if c == "messages" or c not in JSON_COLUMNS else _json(values[c]) for c in COLUMNS)


def strip_nul(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """PostgreSQL refuses NUL in text and \\u0000 in JSONB; LM output may hold either."""
    if not any(type(v) is str and ("\x00" in v or "\\u0000" in v) for v in row):
        return row
    return tuple(v.replace("\x00", "\ufffd").replace("\\u0000", "\\ufffd") if type(v) is str else v for v in row)


def to_stored_time(dialect_name: str, epoch: float) -> Any:
    """What a time compares against in this dialect's `started_at` column."""
    return epoch if dialect_name == "sqlite" else _dt.datetime.fromtimestamp(epoch, _UTC)


def row_to_call(row: Any) -> LMCall:
    """The `LMCall` a stored row describes (JSON columns already decoded by SQLAlchemy, messages
    already read from their contents: `contents.resolve`)."""
    fields: dict[str, Any] = {k: v for k, v in row.items() if v is not None and k in LMCall.model_fields}
    for name in _TIME_COLUMNS:
        fields[name] = to_datetime(row[name])
    extra = row.get("extra")
    if isinstance(extra, dict):
        fields.update((k, v) for k, v in extra.items() if k in LMCall.model_fields and k not in fields)
    return LMCall.model_validate(fields)
