"""A batch of drafts straight into rows: sealing and row building in one pass.

`seal()` then `draft_rows()` visits every field of a draft twice, builds a dict
per message that the row only turns into JSON to hash it, and scans each
record's text on its own. For the drafts the hot path makes most (messages as the flat
`_pairs` (role, content, ...) tuple, str and int fields, params of scalars) this
module reads each field once into the row, and checks the whole batch for what
sealing would change with one scan of its joined text. A batch where that scan
finds anything (a secret shape, a lone surrogate, a base64 blob, a non-finite
number, a value of an unexpected type) is checked record by record, and only
the records that need it are sealed and built the general way. The rows are
those `seal()` + `draft_rows()` would write, with the columns in another order
(and, for SQLite, bools as the 0 or 1 SQLite stores for them). Messages are
hashed per (role, content) pair once a batch (`contents.Pending.pair_refs`):
the system prompt of a thousand calls is encoded, hashed and compressed once.

Every fast-path draft gets its id here, under the seal lock, and keeps it: a
ring that holds the same draft seals it later with that id (and finds nothing
to change, or it would not have taken this path).
"""

from __future__ import annotations

import itertools
import json
import math
import operator
from collections.abc import Callable, Sequence
from operator import is_
from typing import Any, NamedTuple

from ..record import id_source, seal_held, sealing, text_needs_clean
from ..redact import has_secret_anchor
from .contents import Pending, referenced
from .ids import offset_of, short_from, short_id
from .rows import draft_rows, strip_nul

Row = tuple[Any, ...]
Groups = dict[tuple[str, ...], list[Row]]

# Draft keys the fast path copies as they are, by what they hold (LMCall's types).
_TEXT_KEYS = ("provider", "model", "operation", "session", "status", "error_type", "error_message", "output_text",
              "finish_reason", "source", "response_id", "response_model", "server_address")
_NUMBER_KEYS = ("input_tokens", "output_tokens", "total_tokens", "cost", "time_to_first_token_s", "trace_flags",
                "size_bytes")
_FLAG_KEYS = ("stream", "cache_hit")
_NUMBER_TYPES = frozenset({int, bool, float, type(None)})
_JSON_KEYS = ("outputs", "tags", "metadata")
_HEX_KEYS = (("trace_id", "%032x"), ("span_id", "%016x"))
# NOT NULL columns (or ones the reader expects) a draft may leave out: LMCall's defaults.
_DEFAULTS = (("operation", "chat"), ("status", "ok"), ("stream", False), ("source", "decorator"), ("size_bytes", 0))
# Keys the fast path handles itself.
_OWN_KEYS = frozenset({"id", "started", "duration", "_pairs", "params"})
_KNOWN = (frozenset(_TEXT_KEYS) | frozenset(_NUMBER_KEYS) | frozenset(_FLAG_KEYS) | frozenset(_JSON_KEYS)
          | {k for k, _ in _HEX_KEYS} | _OWN_KEYS)

_string = json.encoder.encode_basestring  # the C function json uses with ensure_ascii=False
# json's C encoder, made once (json.dumps builds one per call); it returns the text in chunks.
# No NaN: a non-finite float raises, and its record takes the general way, where sealing turns
# it into a string.
_strict_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False,
                                   allow_nan=False, default=str)


def _encode_in_python(value: Any, _level: int) -> list[str]:  # a Python without json's C speedups
    return [_strict_encoder.encode(value)]


_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_chunks: Callable[[Any, int], list[str]] = (
    _make_encoder(None, str, _string, None, ":", ",", False, False, False) if _make_encoder is not None
    else _encode_in_python)


def _strict_json(value: Any) -> str:
    return "".join(_encode_chunks(value, 0))


class _NotFastError(Exception):
    """A draft the fast path does not take (it goes the general way)."""


def _tuple_getter(keys: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """Like operator.itemgetter(*keys), but always a tuple (itemgetter of one key is not)."""
    if len(keys) >= 2:
        return operator.itemgetter(*keys)
    if len(keys) == 1:
        key = keys[0]
        return lambda d: (d[key],)
    return lambda d: ()


class _Plan(NamedTuple):
    """How a draft of one shape becomes a row."""

    texts: Callable[[Any], tuple[Any, ...]]  # the str (or None) fields, as they are
    numbers: Callable[[Any], tuple[Any, ...]]  # the int and float (or None) fields
    flags: Callable[[Any], tuple[Any, ...]]  # the bool (or None) fields
    rest: Callable[[Any, list[str]], list[Any]] | None  # JSON of containers, trace ids as hex
    consts: tuple[Any, ...]  # the defaults of the fields the draft leaves out
    sqlite_consts: tuple[Any, ...]  # the same, bools as ints (see _SQLITE_FLAGS)
    columns: tuple[str, ...]
    # len(keys) when the plan reads every key of the shape: then a draft of that length whose keys
    # it can all read has exactly these keys (else -1: the keys are compared).
    size: int


# tuple(draft's keys) -> its plan, or None for drafts the fast path does not take.
_plans: dict[tuple[str, ...], _Plan | None] = {}


def _plan(keys: tuple[str, ...]) -> _Plan | None:
    """How a draft with these keys (in this order) becomes a row, if the fast path takes it."""
    present = frozenset(keys)
    public = {k for k in present if k[0] != "_"} | (present & _OWN_KEYS)
    plan: _Plan | None = None
    if "_pairs" in present and "_sealed" not in present and public <= _KNOWN and _OWN_KEYS - {"id"} <= present:
        texts = [k for k in _TEXT_KEYS if k in present]
        numbers = [k for k in _NUMBER_KEYS if k in present]
        flags = [k for k in _FLAG_KEYS if k in present]
        json_keys = [k for k in _JSON_KEYS if k in present]
        hex_keys = [(k, f) for k, f in _HEX_KEYS if k in present]
        consts = tuple(v for k, v in _DEFAULTS if k not in present)
        unread = {k for k in present if k[0] == "_"} - {"_pairs"}  # the plan ignores these
        plan = _Plan(_tuple_getter(texts), _tuple_getter(numbers), _tuple_getter(flags), _rest(json_keys, hex_keys),
                     consts, tuple(int(v) if type(v) is bool else v for v in consts),
                     ("id", "short_id", "started_at", "ended_at", "duration_s", "message_refs", "params", *texts,
                      *numbers,
                      *flags, *json_keys, *(k for k, _ in hex_keys), *(k for k, _ in _DEFAULTS if k not in present)),
                     -1 if unread else len(keys))
    if len(_plans) < 1024:  # drafts come in a few shapes; odd ones must not grow this without bound
        _plans[keys] = plan
    return plan


# SQLite: bools are bound as the ints they are stored as. sqlite3 binds int, float and str
# directly, but looks for an adapter for anything else, bool included, at ~3,000 instructions
# (an AttributeError raised and cleared): more than binding the rest of the row. A plan's flags
# (one or two) as a tuple -> the same as ints, in one lookup.
_SQLITE_FLAGS: dict[tuple[Any, ...], tuple[Any, ...]] = {
    flags: tuple(None if f is None else int(f) for f in flags)
    for flags in [(), *itertools.product((True, False, None), repeat=1),
                  *itertools.product((True, False, None), repeat=2)]}


def _rest(json_keys: list[str], hex_keys: list[tuple[str, str]]) -> Callable[[Any, list[str]], list[Any]] | None:
    """The less usual columns: JSON of outputs, tags, metadata (their text joins `jtexts`, to be
    scanned), trace ids as hex."""
    if not json_keys and not hex_keys:
        return None

    def rest(d: Any, jtexts: list[str]) -> list[Any]:
        out: list[Any] = []
        for k in json_keys:
            v = d[k]
            if v:
                text = _strict_json(v)
                jtexts.append(text)
                out.append(text)
            else:
                out.append(None)
        for k, fmt in hex_keys:
            v = d[k]
            if type(v) is int:
                out.append(fmt % v)
            elif v is None:
                out.append(None)
            else:
                raise _NotFastError(k)
        return out

    return rest


def _clean(strs: list[Any], numbers: list[Any], jtexts: list[str]) -> tuple[bool, str, str]:
    """(would sealing leave these records as they are?, their joined text, their joined JSON).

    `strs`: their str fields and messages (None allowed); `numbers`: their number fields;
    `jtexts`: the JSON built from their containers (params, outputs, tags, metadata)."""
    types = set(map(type, numbers))
    if not types <= _NUMBER_TYPES or (float in types and not all(
            math.isfinite(v) for v in numbers if type(v) is float)):
        return False, "", ""
    try:
        # Each distinct string once: roles, model, provider, a system prompt recur in most records.
        distinct = set(strs)
        distinct.discard(None)
        blob = "\n".join(distinct)
    except TypeError:  # a field that should hold a str does not
        return False, "", ""
    distinct_json = set(jtexts)  # the same params, call after call
    jblob = "\n".join(distinct_json)
    if text_needs_clean(blob, distinct):
        return False, blob, jblob
    # JSON escapes no character of any anchor, but it does escape whitespace that a shape may
    # need (`Bearer\ntoken` becomes `Bearer\\ntoken`): on JSON text only the anchors are trusted,
    # and a long string (a base64 blob?) is left for the general way to decide.
    clean = not jtexts or not (has_secret_anchor(jblob) or max(map(len, distinct_json)) > 1024
                               or not _encodable(jblob))
    return clean, blob, jblob


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def _has_nul(blob: str, jblob: str) -> bool:
    """Would PostgreSQL refuse this text (NUL) or JSON (\\u0000)?"""
    return "\x00" in blob or "\\u0000" in blob or "\\u0000" in jblob


class Built(NamedTuple):
    """A batch ready to insert: its rows grouped by the columns they bind, and the message contents
    they refer to (`contents.Pending.rows()`: digest, stored body, last_used)."""

    groups: Groups
    contents: list[tuple[bytes, bytes, float]]


def build_rows(drafts: Sequence[dict[str, Any]], *, scan_content: bool = True, postgres: bool = False,
               invalid: Callable[[BaseException], None] | None = None) -> Built:
    """Seal `drafts` and build their rows, grouped by the columns they bind, and their contents.

    A draft that cannot be sealed or made a row is left out and handed to `invalid`
    (without it, the error propagates). `postgres`: NUL characters replaced (see `strip_nul`)."""
    pending = Pending()
    with sealing():
        groups, all_referenced = _build(drafts, scan_content, postgres, invalid, pending)
    if all_referenced:
        return Built(groups, pending.rows())
    # Some drafts left the fast path after their messages were hashed (sealing changes them): store
    # only the contents the rows written refer to, never what sealing took out.
    keep: set[bytes] = set()
    for cols, rows in groups.items():
        if "message_refs" in cols:
            keep |= referenced(rows, cols.index("message_refs"))
    return Built(groups, pending.rows(keep))


def _build(drafts: Sequence[dict[str, Any]], scan: bool, postgres: bool,
           invalid: Callable[[BaseException], None] | None, pending: Pending) -> tuple[Groups, bool]:
    """The rows; and whether every content in `pending` is surely referred to by one of them."""
    general: list[dict[str, Any]] = []  # drafts that take the general way
    fast_drafts: list[dict[str, Any]] = []
    fast_rows: list[Any] = []  # (a row becomes None when a recheck sends its draft the general way)
    fast_plans: list[_Plan] = []
    strs: list[Any] = []  # every str the fast rows hold, except in JSON built from containers
    numbers: list[Any] = []
    jtexts: list[str] = []
    if not scan:  # prompts kept as they are: only sealing knows which fields it still scans
        general.extend(drafts)
        drafts = ()
    plans = _plans
    pair_refs = pending.pair_refs
    encode = _encode_chunks
    prefix, seq = id_source()
    # An id is ID_FORMAT's 128 bits: milliseconds, the process's prefix, a sequence number.
    # The first two are the same for the records of one millisecond: `high` is made once for them.
    low = int(prefix, 16) << 32
    offset = offset_of(prefix)  # short ids: see historymw.sql.ids
    high, ms_from, ms_to = 0, 1.0, 0.0  # `high` holds for started * 1000 in [ms_from, ms_to)
    last_keys: tuple[str, ...] = ()
    last_names: tuple[str, ...] = ()  # the last params' names, values and JSON
    last_values: tuple[Any, ...] = ()
    last_json = ""
    plan: _Plan | None = None
    texts_of = numbers_of = flags_of = _tuple_getter(())  # (the plan's, once there is one)
    rest: Callable[[Any, list[str]], list[Any]] | None = None
    consts: tuple[Any, ...] = ()
    sqlite = not postgres
    sqlite_flags = _SQLITE_FLAGS
    ends = 0.0  # a sum of the rows' end times: finite only if every start and duration is
    size = -1  # the current plan's `size`
    given_id = False
    for d in drafts:
        try:
            # Drafts come in runs of one shape. Within a run the length tells it: the plan reads
            # every key of its shape (the id too, when the shape has one), so a draft of another
            # shape and the same length fails on a key it lacks, below.
            if len(d) != size:
                keys = tuple(d)
                if keys != last_keys:
                    plan = plans[keys] if keys in plans else _plan(keys)
                    last_keys = keys
                    size = -1
                    given_id = "id" in keys
                    if plan is not None:
                        texts_of, numbers_of, flags_of, rest, consts, sqlite_consts, _, size = plan
                        if sqlite:
                            consts = sqlite_consts
            if plan is None:
                general.append(d)
                continue
            started = d["started"]
            duration = d["duration"]
            ended = started + duration
            ends += ended
            if given_id:  # sealed before (a ring's reader): it keeps its id
                rid = d["id"]
                short = short_id(rid)
            else:
                ms = started * 1000
                if not ms_from <= ms < ms_to:
                    ms_from = float(int(ms))
                    ms_to = ms_from + 1
                    high = (int(ms) << 80) | low
                number = next(seq) & 0xFFFFFFFF
                rid = (high | number).to_bytes(16, "big").hex()
                short = short_from(number, offset)
            pairs = d["_pairs"]
            strs += pairs
            texts = texts_of(d)
            strs += texts
            nums = numbers_of(d)
            numbers += nums
            flags = flags_of(d)
            if sqlite:
                flags = sqlite_flags[flags]  # (a KeyError for anything but a bool or None: the general way)
            else:
                numbers += flags
            params = d["params"]
            if params:
                values = tuple(params.values())
                # Callers pass the same param objects call after call (literals, a config's
                # attributes): the same objects make the same JSON. Identity, not equality:
                # True == 1 and 0.0 == -0.0, yet their JSON differs.
                if tuple(params) == last_names and all(map(is_, values, last_values)):
                    params = last_json
                else:
                    last_names, last_values = tuple(params), values
                    params = last_json = "".join(encode(params, 0))
                jtexts.append(params)
            else:
                params = None
            messages = pair_refs(pairs, started) if pairs else None
            if rest is None:
                row = (rid, short, started, ended, duration, messages, params, *texts, *nums, *flags, *consts)
            else:
                row = (rid, short, started, ended, duration, messages, params, *texts, *nums, *flags,
                       *rest(d, jtexts), *consts)
            # Stored last, once every key of the plan was there: a draft of another shape (found out
            # by a KeyError above) must not lose the id it may have.
            d["id"] = rid
        except Exception:  # noqa: BLE001 - anything odd: the general way decides (and reports)
            general.append(d)
            size, last_keys = -1, ()  # the next draft's keys are compared
            continue
        fast_drafts.append(d)
        fast_rows.append(row)
        fast_plans.append(plan)

    if fast_rows:
        clean, blob, jblob = _clean(strs, numbers, jtexts)
        if not (clean and math.isfinite(ends)):
            fast_rows = _recheck(fast_drafts, fast_rows, fast_plans, general)
            blob = "\x00"  # not known: strip_nul checks each row
        if postgres and _has_nul(blob, jblob):
            fast_rows = [r if r is None else strip_nul(r) for r in fast_rows]
    groups = _group(fast_rows, fast_plans)
    for d in general:
        try:
            seal_held(d, None, scan)
            ((cols, rows),) = draft_rows([d], pending).items()
        except Exception as exc:  # one bad record must not sink the batch
            if invalid is None:
                raise
            invalid(exc)
            continue
        groups.setdefault(cols, []).extend([strip_nul(r) for r in rows] if postgres else rows)
    # A draft that went the general way may have been hashed by the fast path first, as it was
    # before sealing: then not every content is referred to.
    return groups, not general


def _recheck(drafts: list[dict[str, Any]], rows: list[Any], plans: list[_Plan],
             general: list[dict[str, Any]]) -> list[Any]:
    """Check a batch record by record; send the records sealing would change the general way.
    Rows of those become None in the list returned."""
    out: list[Any] = []
    for d, row, plan in zip(drafts, rows, plans, strict=True):
        texts_of, rest = plan.texts, plan.rest
        strs: list[Any] = [*d["_pairs"], *texts_of(d)]
        jtexts = [v for v in row[6:7] if v is not None]  # params
        if rest is not None:
            rest(d, jtexts)
        if math.isfinite(row[3]) and _clean(strs, [*plan.numbers(d), *plan.flags(d)], jtexts)[0]:
            out.append(row)
        else:
            general.append(d)
            out.append(None)
    return out


def _group(rows: list[Any], plans: list[_Plan]) -> Groups:
    """Rows by their plan's columns (None rows left out)."""
    groups: Groups = {}
    if not rows:
        return groups
    first = plans[0]
    if plans.count(first) == len(plans) and None not in rows:
        groups[first.columns] = rows
        return groups
    for row, plan in zip(rows, plans, strict=True):
        if row is not None:
            groups.setdefault(plan.columns, []).append(row)
    return groups
