"""DSPy's history lists as bounded views of historymw's records.

With the DSPy integration installed, DSPy appends nothing: each LM call becomes one
historymw record in the ring. DSPy code still reads `dspy.clients.base_lm.GLOBAL_HISTORY`,
`lm.history` and `module.history` (ReAct, `get_token_usage`, `DummyLM.get_convo`,
`inspect_history`, users' own code), so those names become views: list-like sequences
of DSPy-shaped entries built from the ring's records when read, never on the call path.

- One record, however many views show it; an entry is built once per record and
  shared by the views (cached while its record is in the ring).
- A view shows at most what the ring holds (`maxlen`, `max_bytes`), and within that
  DSPy's own bounds: `max_history_size` in force at each call (per LM and per
  module) and `MAX_HISTORY_SIZE` for the global list.
- A view shows only successful calls that historymw kept: calls under
  `history(disable=True)`, sampled out, with DSPy's `disable_history`, or failed
  (DSPy keeps no failed calls either) are not in it.
- `clear()` is per view: a watermark hides the records before it from that view only.
- The raw provider response is never held: an entry's `"response"` is None.

`lm.history` and `module.history` go through a data descriptor set on `BaseLM` and
`dspy.Module`, so `self.history = []` in DSPy's `__init__` makes a fresh view.
`uninstall()` removes the descriptors and gives every live object a plain list with
the entries its view showed.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, SupportsIndex, TextIO, overload

from ..backends.ring import RingBuffer
from ..record import LMCall

__all__ = ["HistoryView", "install", "installed", "uninstall"]

_MISSING: Any = object()
_GLOBAL = 0  # a view's owner id for GLOBAL_HISTORY: no object has id 0
_DSPY_DEFAULT_MAX = 10_000  # DSPy's default max_history_size, for records that do not say

_lock = threading.Lock()
_patches: list[tuple[Any, str, Any]] = []
# Every live view by its id (views are unhashable, as lists are), for uninstall().
_views: dict[int, weakref.ref[HistoryView]] = {}
# LM views by their LM's id: the model name and type of an entry come from its LM.
_lm_views: weakref.WeakValueDictionary[int, HistoryView] = weakref.WeakValueDictionary()
_global_state: dict[str, Any] = {}
# Entries built for reading, by record id: one per record, shared by every view that
# shows it (code compares them by identity). Pruned to the records in the ring.
_entries: dict[str, dict[str, Any]] = {}
_entries_lock = threading.Lock()


def _ring() -> RingBuffer:
    from ..api import ring

    return ring()


def _settings() -> Any:
    from dspy.dsp.utils.settings import settings

    return settings


def _record_id(ring: RingBuffer, draft: dict[str, Any]) -> str:
    rid = draft.get("id")
    if type(rid) is str:
        return rid
    return ring.record(draft).id  # sealed under the ring's settings: the id is set once, in the draft


def _newest_id() -> str | None:
    """The watermark for "now": the id of the newest record in the ring."""
    try:
        return _ring()[-1].id
    except IndexError:  # an empty ring
        return None


def _local_iso(when: _dt.datetime) -> str:
    # DSPy stamps entries with datetime.now().isoformat(): local time, no zone.
    return when.astimezone().replace(tzinfo=None).isoformat()


def _usage(r: LMCall) -> dict[str, Any]:
    """LiteLLM's usage shape, as DSPy copies it; counts historymw does not know are left out."""
    usage: dict[str, Any] = {}
    for key, value in (("completion_tokens", r.output_tokens), ("prompt_tokens", r.input_tokens),
                       ("total_tokens", r.total_tokens)):
        if value is not None:
            usage[key] = value
    if not usage:
        return usage
    reasoning = getattr(r, "reasoning_tokens", None)
    cached = getattr(r, "cache_read_input_tokens", None)
    usage["completion_tokens_details"] = None if reasoning is None else {"reasoning_tokens": reasoning}
    usage["prompt_tokens_details"] = None if cached is None else {"cached_tokens": cached}
    return usage


def _uuid_shaped(rid: str) -> str:
    """The record id in DSPy's uuid4 text shape (8-4-4-4-12), when it is 32 hex digits."""
    if len(rid) == 32:
        return f"{rid[:8]}-{rid[8:12]}-{rid[12:16]}-{rid[16:20]}-{rid[20:]}"
    return rid


def _build(ring: RingBuffer, draft: dict[str, Any]) -> dict[str, Any]:
    """The DSPy history entry of one record (what DSPy's finalize would have appended)."""
    r = ring.record(draft)
    ids = draft.get("_dspy") or (0,)
    view = _lm_views.get(ids[0])
    lm = view._owner() if view is not None and view._owner is not None else None
    model = getattr(lm, "model", None)
    if not isinstance(model, str):
        model = f"{r.provider}/{r.model}" if r.provider and r.model else r.model
    messages: Any = r.messages
    prompt = None
    if draft.get("_dspy_prompt") and len(messages) == 1 and isinstance(messages[0], dict):
        prompt, messages = messages[0].get("content"), None  # lm("...") was called with a prompt
    if r.outputs:
        outputs: list[Any] = list(r.outputs)
    elif r.output_text is not None:
        outputs = [r.output_text]
    else:  # capture_content is off: DSPy's printer needs one output to show
        outputs = [""]
    return {
        "prompt": prompt,
        "messages": messages,
        "kwargs": dict(r.params),
        "response": None,  # the provider's response object is never kept
        "outputs": outputs,
        "usage": {} if r.cache_hit else _usage(r),
        "cost": r.cost,
        "timestamp": _local_iso(r.ended_at),
        "uuid": _uuid_shaped(r.id),
        "model": model,
        "response_model": r.response_model,
        "model_type": getattr(lm, "model_type", None) or r.operation,
    }


def _entry(ring: RingBuffer, draft: dict[str, Any]) -> dict[str, Any]:
    rid = _record_id(ring, draft)
    entry = _entries.get(rid)
    if entry is None:
        built = _build(ring, draft)
        with _entries_lock:
            entry = _entries.setdefault(rid, built)
    return entry


def _prune_entries(ring: RingBuffer, drafts: list[dict[str, Any]]) -> None:
    if len(_entries) <= 2 * len(drafts) + 64:
        return
    live = {d.get("id") for d in drafts}
    with _entries_lock:
        for rid in [k for k in _entries if k not in live]:
            del _entries[rid]


class _Foreign:
    """An entry appended by DSPy code or a user, placed after the record newest at the time."""

    __slots__ = ("anchor", "entry")

    def __init__(self, anchor: str | None, entry: Any) -> None:
        self.anchor = anchor
        self.entry = entry


class HistoryView(list):  # type: ignore[type-arg]
    """A list-like, read-mostly view of the DSPy calls historymw recorded for one owner.

    It subclasses `list` for `isinstance` checks; its own list storage stays empty.
    C code that reads a list's storage directly (`json.dumps`, `str.join`) sees `[]`:
    pass `list(view)` there."""

    __slots__ = ("_owner", "_oid", "_mark", "_foreign", "_hidden", "__weakref__")

    def __init__(self, owner: Any = None, mark: str | None = None, entries: Iterable[Any] = ()) -> None:
        super().__init__()
        self._owner: weakref.ref[Any] | None = None
        self._oid = _GLOBAL
        self._mark = mark
        self._foreign: list[_Foreign] = [_Foreign(None, e) for e in entries]
        self._hidden: set[str] = set()
        if owner is not None:
            self._bind(owner)
        key = id(self)
        _views[key] = weakref.ref(self, lambda _ref: _views.pop(key, None))

    def _bind(self, owner: Any) -> None:
        self._owner = weakref.ref(owner)
        self._oid = id(owner)
        if _is_lm(owner):
            _lm_views[self._oid] = self

    def _owned_by(self, obj: Any) -> bool:
        return self._owner is not None and self._owner() is obj

    # -- what the view shows ---------------------------------------------------------

    def _limit(self) -> int:
        if self._oid == _GLOBAL:
            return int(getattr(_global_state.get("module"), "MAX_HISTORY_SIZE", _DSPY_DEFAULT_MAX))
        try:
            return int(_settings().max_history_size)
        except Exception:  # noqa: BLE001
            return _DSPY_DEFAULT_MAX

    def _items(self) -> tuple[RingBuffer, list[Any]]:
        """The view's items, oldest first: ring drafts (built on demand) and foreign entries."""
        ring = _ring()
        drafts = ring.drafts()
        _prune_entries(ring, drafts)
        start = 0
        if self._mark is not None:
            for i in range(len(drafts) - 1, -1, -1):
                if drafts[i].get("id") == self._mark:
                    start = i + 1
                    break
        oid, hidden, is_global = self._oid, self._hidden, self._oid == _GLOBAL
        by_anchor: dict[str | None, list[Any]] = {}
        for f in self._foreign:
            by_anchor.setdefault(f.anchor, []).append(f)
        seen: set[str] = set()
        picked: list[Any] = []
        for d in drafts[start:]:
            ids = d.get("_dspy")
            rid = d.get("id")
            if ids is not None and d.get("status", "ok") == "ok" and (is_global or (
                    oid in ids and d.get("_dspy_max", 1) != 0)) and (not hidden or rid not in hidden):
                picked.append(d)
            if by_anchor and type(rid) is str and rid in by_anchor:
                picked.extend(by_anchor[rid])
                seen.add(rid)
        if by_anchor:
            # Foreign entries whose anchor left the ring are older than every record in it.
            older = [f for a, fs in by_anchor.items() if a not in seen for f in fs]
            picked[:0] = older
        if hidden and len(hidden) > 64:
            live = {d.get("id") for d in drafts}
            hidden.intersection_update(live)
        return ring, self._trim(picked)

    def _trim(self, picked: list[Any]) -> list[Any]:
        """DSPy's bound, replayed: at each append, one oldest entry goes when the list is full."""
        default = self._limit()
        if self._oid == _GLOBAL:
            return picked[-default:] if default > 0 else []
        start = 0
        kept = 0
        out: list[Any] = []
        for item in picked:
            limit = item.get("_dspy_max", default) if type(item) is dict else default
            if kept - start >= limit:
                start += 1
            out.append(item)
            kept += 1
        return out[start:]

    def _entry_of(self, ring: RingBuffer, item: Any) -> Any:
        return item.entry if type(item) is _Foreign else _entry(ring, item)

    def _hide(self, item: Any) -> None:
        if type(item) is _Foreign:
            self._foreign.remove(item)
        else:
            self._hidden.add(str(item.get("id")))

    # -- the list protocol -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items()[1])

    def __bool__(self) -> bool:
        return len(self) > 0

    @overload  # type: ignore[override]
    def __getitem__(self, index: SupportsIndex) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> Any:
        ring, items = self._items()
        if isinstance(index, slice):
            return [self._entry_of(ring, it) for it in items[index]]
        return self._entry_of(ring, items[index])

    def __iter__(self) -> Iterator[Any]:
        ring, items = self._items()
        return iter([self._entry_of(ring, it) for it in items])

    def __reversed__(self) -> Iterator[Any]:
        items: list[Any] = self[:]
        return iter(items[::-1])

    def __contains__(self, value: object) -> bool:
        return any(e is value or e == value for e in self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list):
            return self[:] == (other[:] if isinstance(other, HistoryView) else other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self[:])

    def __add__(self, other: Any) -> list[Any]:  # type: ignore[override]
        return self[:] + list(other)

    def __radd__(self, other: Any) -> list[Any]:
        return list(other) + self[:]

    def __mul__(self, n: SupportsIndex) -> list[Any]:
        return self[:] * n

    __rmul__ = __mul__

    def __iadd__(self, other: Iterable[Any]) -> HistoryView:  # type: ignore[override,misc]
        self.extend(other)
        return self

    def index(self, value: Any, *args: Any) -> int:
        return self[:].index(value, *args)

    def count(self, value: Any) -> int:
        return self[:].count(value)

    def copy(self) -> list[Any]:
        return self[:]

    def append(self, entry: Any) -> None:
        """Add an entry of the caller's own: kept in this view only, in call order."""
        self._foreign.append(_Foreign(_newest_id(), entry))
        limit = max(self._limit(), 0)
        if len(self._foreign) > limit:
            del self._foreign[: len(self._foreign) - limit]

    def extend(self, entries: Iterable[Any]) -> None:
        for entry in list(entries):
            self.append(entry)

    def clear(self) -> None:
        """Hide from this view every record made so far (other views keep showing them)."""
        self._mark = _newest_id()
        self._foreign.clear()
        self._hidden.clear()

    def pop(self, index: SupportsIndex = -1) -> Any:
        ring, items = self._items()
        item = items[index]
        self._hide(item)
        return self._entry_of(ring, item)

    def __delitem__(self, index: SupportsIndex | slice) -> None:
        _, items = self._items()
        chosen = items[index] if isinstance(index, slice) else [items[index]]
        for item in chosen:
            self._hide(item)

    def remove(self, value: Any) -> None:
        ring, items = self._items()
        for item in items:
            entry = self._entry_of(ring, item)
            if entry is value or entry == value:
                self._hide(item)
                return
        raise ValueError("HistoryView.remove(x): x not in history")

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("DSPy's history is a view of historymw's records: it can be appended to, "
                        "cleared and popped, not reordered or overwritten; use list(history) for a copy")

    __setitem__ = _read_only  # type: ignore[assignment]
    insert = _read_only  # type: ignore[assignment]
    sort = _read_only  # type: ignore[assignment]
    reverse = _read_only  # type: ignore[assignment]
    __imul__ = _read_only  # type: ignore[assignment]

    # -- copies ------------------------------------------------------------------------

    def __copy__(self) -> list[Any]:
        return self[:]

    def __deepcopy__(self, memo: dict[int, Any]) -> HistoryView:
        # A copied module or LM starts with an empty history: copying the entries into
        # every copy (teleprompters make many) would hold memory past the ring's bound.
        return HistoryView(mark=_newest_id())

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        return (list, ())


def _is_lm(obj: Any) -> bool:
    base = _global_state.get("BaseLM")
    return base is not None and isinstance(obj, base)


class _HistoryAttribute:
    """The `history` attribute of DSPy LMs and modules: a view per instance.

    A data descriptor on the class wins over the instance's `__dict__`, so DSPy's
    `self.history = []` goes through `__set__`. The view lives in the instance's
    `__dict__["history"]` (what `uninstall()` turns back into a list)."""

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self
        d = obj.__dict__.get("history", _MISSING)
        if type(d) is HistoryView and d._owned_by(obj):
            return d
        if d is _MISSING:
            raise AttributeError(f"{type(obj).__name__!r} object has no attribute 'history'")
        if type(d) is HistoryView:  # a copied object's view, or one not yet bound
            view = HistoryView(obj, d._mark)
        elif type(d) is list:  # an object made before install(): its entries, then the calls since
            view = HistoryView(obj, _global_state.get("mark"), d)
        else:
            return d  # something else a program keeps under that name
        obj.__dict__["history"] = view
        return view

    def __set__(self, obj: Any, value: Any) -> None:
        if type(value) is HistoryView and value._owner is None:
            value._bind(obj)
        elif isinstance(value, list):
            value = HistoryView(obj, _newest_id(), list(value))
        obj.__dict__["history"] = value

    def __delete__(self, obj: Any) -> None:
        try:
            del obj.__dict__["history"]
        except KeyError:
            raise AttributeError("history") from None


# -- inspect_history, read from the views ------------------------------------------------


def _inspect_global(n: int = 1, file: TextIO | None = None) -> None:
    """`dspy.inspect_history(n)`: DSPy's own printer on GLOBAL_HISTORY."""
    from dspy.utils.inspect_history import pretty_print_history

    module = _global_state.get("module")
    pretty_print_history(getattr(module, "GLOBAL_HISTORY", []), n, file=file)


def _inspect_owner(self: Any, n: int = 1, file: TextIO | None = None) -> None:
    """`lm.inspect_history(n)` / `module.inspect_history(n)`: DSPy's printer on `self.history`."""
    from dspy.utils.inspect_history import pretty_print_history

    pretty_print_history(self.history, n, file=file)


# -- install -----------------------------------------------------------------------------


def installed() -> bool:
    return bool(_patches)


def _patch(owner: Any, name: str, value: Any) -> None:
    _patches.append((owner, name, vars(owner).get(name, _MISSING)))
    setattr(owner, name, value)


def install() -> None:
    """Make DSPy's history lists views of historymw's records (called by the integration's install)."""
    with _lock:
        if _patches:
            return
        dspy = importlib.import_module("dspy")
        base_lm = importlib.import_module("dspy.clients.base_lm")
        _global_state["module"] = base_lm
        _global_state["BaseLM"] = base_lm.BaseLM
        before = base_lm.GLOBAL_HISTORY
        _global_state["list"] = before
        _global_state["mark"] = mark = _newest_id()
        view = HistoryView(mark=mark, entries=before if isinstance(before, list) else ())
        _global_state["view"] = view
        _patch(base_lm, "GLOBAL_HISTORY", view)

        attribute = _HistoryAttribute()
        _patch(base_lm.BaseLM, "history", attribute)
        module_cls = getattr(dspy, "Module", None)
        if module_cls is not None:
            _patch(module_cls, "history", attribute)

        clients = _optional("dspy.clients")
        for module in (dspy, clients, base_lm):
            if module is not None and hasattr(module, "inspect_history"):
                _patch(module, "inspect_history", _inspect_global)
        _patch(base_lm.BaseLM, "inspect_history", _inspect_owner)
        if module_cls is not None:
            _patch(module_cls, "inspect_history", _inspect_owner)


def uninstall() -> None:
    """Remove the views: every live LM and module gets a plain list of the entries it showed."""
    with _lock:
        if not _patches:
            return
        for ref in list(_views.values()):
            view = ref()
            owner = view._owner() if view is not None and view._owner is not None else None
            if owner is not None and owner.__dict__.get("history") is view:
                owner.__dict__["history"] = view[:]
        global_view = _global_state.get("view")
        global_list = _global_state.get("list")
        while _patches:
            owner, name, before = _patches.pop()
            if before is _MISSING:
                try:
                    delattr(owner, name)
                except AttributeError:
                    pass
            else:
                setattr(owner, name, before)
        if isinstance(global_view, HistoryView) and isinstance(global_list, list):
            # The original list object (code may hold it), holding what the view showed.
            global_list[:] = global_view[:]
        _global_state.clear()
        _lm_views.clear()
        with _entries_lock:
            _entries.clear()


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
