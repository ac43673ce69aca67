"""The record users see: `LMCall`, and how the hot path's draft becomes one.

On the caller's thread a call is captured into a plain dict (the draft): cheap
to build, already bounded and holding only plain data. The draft is *sealed*
once, the first time anything reads it (the ring, an export worker): it gets
its id, its prompts and outputs are scanned for secrets, odd unicode is made
encodable, and the user's redactor runs. Only then does an `LMCall` exist.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import os
import threading
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

from .plain import clip
from .redact import might_hold_secret, redact_text

if TYPE_CHECKING:
    from .models import LMCall as LMCall  # re-exported: `historymw.record.LMCall` stays importable

_UTC = _dt.timezone.utc


def __getattr__(name: str) -> Any:
    # The pydantic model is defined on first use (see `models`), not when the hot path imports this module.
    if name == "LMCall":
        from .models import LMCall

        return LMCall
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_seal_lock = threading.Lock()
_id_prefix = os.urandom(6).hex()
_id_seq = itertools.count()


def _after_fork_in_child() -> None:
    # A forked child must not share the parent's id prefix, nor inherit its seal
    # lock in whatever state another thread of the parent had it.
    global _id_prefix, _id_seq, _seal_lock
    _id_prefix, _id_seq, _seal_lock = os.urandom(6).hex(), itertools.count(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


ID_FORMAT = "%012x%s%08x"  # (milliseconds, the process's prefix, sequence number & 0xFFFFFFFF)


def new_id(started: float) -> str:
    """Time-ordered and unique across processes: 48 bits of milliseconds, 48 random
    bits drawn once per process, a 32-bit sequence number (cheaper than urandom per id)."""
    return ID_FORMAT % (int(started * 1000), _id_prefix, next(_id_seq) & 0xFFFFFFFF)


def id_source() -> tuple[str, Iterator[int]]:
    """(prefix, sequence) of `new_id`, for code that makes many ids in a loop. Read them
    again after a fork: the child gets its own."""
    return _id_prefix, _id_seq


def sealing() -> threading.Lock:
    """The lock drafts are sealed under. Code that seals a batch takes it once and calls
    `seal_held` (a reader of the ring may be sealing the same drafts)."""
    return _seal_lock


def _clean(obj: Any, scan: bool = True) -> Any:
    """Redact secret-shaped text (when `scan`), replace base64 payloads and
    non-finite floats, and make every string UTF-8 encodable. Returns `obj`
    itself when nothing in it needs a change (the common case: no copy)."""
    t = type(obj)
    if t is str:
        s = redact_text(obj) if scan and len(obj) >= 15 else obj  # 15: shorter than any secret shape
        if len(s) > 1024:
            s = clip(s, len(s))  # base64 images and blobs become a placeholder with their size
        if not s.isascii():
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates
                s = s.encode("utf-8", "replace").decode("utf-8")
        return s
    if t is dict:
        for k, v in obj.items():
            if _clean(v, scan) is not v or _clean(k, scan) is not k:
                return {_clean(k, scan): _clean(v, scan) for k, v in obj.items()}
        return obj
    if t is list:
        for v in obj:
            if _clean(v, scan) is not v:
                return [_clean(v, scan) for v in obj]
        return obj
    if t is float and not math.isfinite(obj):
        return str(obj)
    return obj


def _strings(obj: Any, out: list[str]) -> bool:
    """Append every str in obj (dict keys too) to out; True if a non-finite float was seen."""
    t = type(obj)
    if t is str:
        out.append(obj)
        return False
    odd = False
    if t is dict:
        out.extend(obj)  # keys: always str in a draft
        items: Any = obj.values()
    elif t is list or t is tuple:
        items = obj
    else:
        return t is float and not math.isfinite(obj)
    for v in items:
        tv = type(v)
        if tv is str:
            out.append(v)
        elif tv is dict or tv is list or tv is tuple:
            odd |= _strings(v, out)
        elif tv is float and not math.isfinite(v):
            odd = True
    return odd


def _needs_clean(strings: list[str], scan: bool) -> bool:
    """Would `_clean` change any of these strings? (One scan of their joined text.)"""
    if not strings:
        return False
    return text_needs_clean("\x00".join(strings), strings, scan)


def text_needs_clean(blob: str, strings: Collection[str], scan: bool = True) -> bool:
    """Would `_clean` change any of `strings`, whose joined text (any separator) is `blob`?

    A match that spans two strings only makes this say True for nothing, never False
    wrongly: every match inside one string is a match inside `blob`."""
    if scan and might_hold_secret(blob):
        return True
    if not blob.isascii():
        try:
            blob.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates
            return True
    if len(blob) <= 1024 or max(map(len, strings)) <= 1024:
        return False
    return any(len(s) > 1024 and clip(s, len(s)) is not s for s in strings)


# Prompts and outputs: scanned for secret shapes unless redact_content is off.
# Every other field is always scanned (they are small).
_CONTENT_FIELDS = frozenset({"messages", "outputs", "output_text", "system_instructions", "tool_definitions"})


def seal(draft: dict[str, Any], redactor: Any = None, scan_content: bool = True) -> dict[str, Any]:
    """Finish a draft in place, once: id, secret scan, encodable text, user redactor."""
    if draft.get("_sealed"):
        return draft
    with _seal_lock:
        return seal_held(draft, redactor, scan_content)


def seal_held(draft: dict[str, Any], redactor: Any = None, scan_content: bool = True) -> dict[str, Any]:
    """`seal` for a caller that holds `sealing()`."""
    if not draft.get("_sealed"):
        fill = draft.pop("_fill", None)  # fields a hot path left to set here: (function, its data)
        if fill is not None:
            fill[0](draft, fill[1])
        if "id" not in draft:
            draft["id"] = new_id(draft.get("started", 0.0))
        pairs = draft.pop("_pairs", None)  # capture.start's flat (role, content, ...) tuple
        if pairs is not None:
            draft["messages"] = [{"role": pairs[i], "content": pairs[i + 1]} for i in range(0, len(pairs), 2)]
        messages = draft.get("messages")
        if messages and type(messages[0]) is tuple:  # draft.fast_messages' (role, content) pairs
            draft["messages"] = [{"role": role, "content": content} for role, content in messages]
        # Collect every string of the record (keys too) and check them in one go: the
        # common record needs no change, and one scan of the joined text is much
        # cheaper than one per string. Only a record that needs it is rebuilt.
        content: list[str] = []
        other: list[str] = []
        odd_float = False
        for name, value in draft.items():
            t = type(value)
            if t is str:
                (content if name in _CONTENT_FIELDS else other).append(value)
            elif (t is list or t is dict) and name[0] != "_":
                odd_float |= _strings(value, content if name in _CONTENT_FIELDS else other)
            elif t is float and not math.isfinite(value):
                odd_float = True
        dirty_content = _needs_clean(content, scan_content)
        # (`name=value` credentials in params, metadata and errors were redacted when
        # they were copied: see plain.plain_str.)
        if odd_float or dirty_content or _needs_clean(other, True):
            for name, value in draft.items():
                if name[0] != "_" and (type(value) is str or type(value) is list or type(value) is dict):
                    is_content = name in _CONTENT_FIELDS
                    if not is_content or dirty_content or odd_float:
                        draft[name] = _clean(value, scan_content or not is_content)
        if redactor is not None:
            _apply_redactor(draft, redactor)
        draft["_sealed"] = True
    return draft


def _apply_redactor(draft: dict[str, Any], redactor: Any) -> None:
    from . import counters
    from .models import LMCall

    try:
        view = {k: v for k, v in draft.items() if not k.startswith("_")}
        result = redactor(view)
        if result is None:
            result = view
        for k, v in result.items():
            if not k.startswith("_") and k in LMCall.model_fields:
                draft[k] = v
    except Exception as exc:  # noqa: BLE001 - a broken redactor must not leak what it was meant to hide
        counters.COUNTERS.error("redactor", exc)
        for name in ("messages", "outputs", "params", "metadata"):
            draft[name] = [] if name in ("messages", "outputs") else {}
        draft["output_text"] = None
        draft["error_message"] = None
        draft["metadata"] = {"historymw": "content removed: the redactor raised"}


# Every field's default, given explicitly: pydantic's model_construct is slow at
# filling in defaults (it inspects default factories on every call). Built with the model.
_scalar_defaults: dict[str, Any] | None = None


def materialize(draft: dict[str, Any], redactor: Any = None, scan_content: bool = True) -> LMCall:
    """The `LMCall` for a draft (sealing it first if nobody has)."""
    global _scalar_defaults
    from .models import LMCall

    defaults = _scalar_defaults
    if defaults is None:
        defaults = _scalar_defaults = {name: f.default for name, f in LMCall.model_fields.items()
                                       if f.default_factory is None}
    d = seal(draft, redactor, scan_content)
    started = d.get("started", 0.0)
    duration = d.get("duration", 0.0)
    fields = {**defaults, "tags": {}, "messages": [], "params": {}, "outputs": [], "metadata": {},
              "system_instructions": [], "tool_definitions": []}
    fields.update((k, v) for k, v in d.items() if k[0] != "_" and k != "started" and k != "duration")
    trace_id, span_id = fields.pop("trace_id", None), fields.pop("span_id", None)
    fields["started_at"] = _dt.datetime.fromtimestamp(started, _UTC)
    fields["ended_at"] = _dt.datetime.fromtimestamp(started + duration, _UTC)
    fields["duration_s"] = duration
    fields["trace_id"] = f"{trace_id:032x}" if isinstance(trace_id, int) else trace_id
    fields["span_id"] = f"{span_id:016x}" if isinstance(span_id, int) else span_id
    if redactor is not None:  # a user's function may have changed types: check them
        return LMCall.model_validate(fields)
    # Drafts are built by this package from plain data of the right types.
    return LMCall.model_construct(**fields)
