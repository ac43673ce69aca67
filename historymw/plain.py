"""Turn whatever a caller passes into plain, bounded data.

A record may hold only copies of primitives, lists and dicts of them: never a
reference to a caller's object, never a cycle. This module does that copy, and
accounts for the memory it keeps (`Budget.used`, in bytes), so that the ring can
stay within `max_bytes`. Long strings are truncated with a visible marker;
bytes and base64 images become a placeholder that says their size.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import math
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .redact import REDACTED, is_secret_key, mask_secret_value, redact_pairs, redact_text

MAX_DEPTH = 24
# Approximate CPython sizes (64-bit), so that size_bytes tracks real memory.
STR_OVERHEAD = 49
DICT_OVERHEAD = 64
DICT_PER_ITEM = 40
LIST_OVERHEAD = 56
LIST_PER_ITEM = 8
SCALAR_SIZE = 32
_B64_HEAD = re.compile(r"[A-Za-z0-9+/=_\-\r\n]{256}")


# Bytes a str object takes, exactly (1, 2 or 4 bytes a char plus its header), in O(1).
str_size = sys.getsizeof


def truncated(s: str, max_chars: int) -> str:
    return f"{s[:max_chars]}…[truncated {len(s) - max_chars} chars]"


def head_tail(s: str, max_chars: int) -> str:
    """Keep max_chars of s: its head and its tail, the cut marked in the middle.

    A prompt's closing lines (DSPy's "Respond with ..." instructions) are what a person
    debugging reads; the head alone would drop them."""
    tail = max_chars // 4
    head = max_chars - tail
    return f"{s[:head]}…[truncated {len(s) - max_chars} chars]…{s[len(s) - tail:] if tail else ''}"


def clip(s: str, max_chars: int) -> str:
    """Bound one string: truncate past max_chars, replace base64 payloads by their size."""
    n = len(s)
    if n <= 1024:
        return s
    if s.startswith("data:") and ";base64," in s[:128]:
        mime = s[5 : s.index(";")]
        return f"<base64 {mime}: {n * 3 // 4} bytes>"
    if " " not in s[:128] and _B64_HEAD.fullmatch(s, 0, 256):
        return f"<base64: {n * 3 // 4} bytes>"
    if n > max_chars:
        return head_tail(s, max_chars)
    return s


class Budget:
    """How many bytes a record may still take, and how many it took."""

    __slots__ = ("max_chars", "remaining", "used", "scan")

    def __init__(self, max_chars: int, limit: int, scan: bool = False) -> None:
        self.max_chars = max_chars
        self.remaining = limit
        self.used = 0
        self.scan = scan  # redact secret-shaped values in strings as they are copied

    def take(self, n: int) -> None:
        self.used += n
        self.remaining -= n


def plain_str(s: str, budget: Budget) -> str:
    s = clip(s, budget.max_chars)
    if budget.scan:
        s = redact_pairs(redact_text(s))
    if budget.remaining < len(s):
        keep = max(budget.remaining, 0)
        s = truncated(s, keep) if keep else f"<omitted: record size limit, {len(s)} chars>"
    budget.take(str_size(s))
    return s


def _key(k: object) -> str:
    if isinstance(k, str):
        return k
    if k is None or type(k) in (int, float, bool):
        return str(k)
    if issubclass(type(k), (int, float)):  # a subclass (an IntEnum): its own __str__ could be anything
        return int.__repr__(k) if issubclass(type(k), int) else float.__repr__(k)  # type: ignore[arg-type]
    return f"<{type(k).__name__}>"


def plain(obj: object, budget: Budget, _depth: int = 0, _path: set[int] | None = None) -> Any:
    """A plain-data copy of `obj` within `budget`: cycles, depth, size and odd types handled."""
    t = type(obj)
    if t is str:
        return plain_str(obj, budget)  # type: ignore[arg-type]
    if obj is None or t is bool or t is int:
        budget.used += SCALAR_SIZE
        budget.remaining -= SCALAR_SIZE
        return obj
    if t is float:
        budget.used += SCALAR_SIZE
        budget.remaining -= SCALAR_SIZE
        return obj if math.isfinite(obj) else str(obj)  # type: ignore[arg-type]
    if budget.remaining <= 0:
        return "<omitted: record size limit>"
    if t is dict:
        return _nested(obj, budget, _depth, _path, _plain_mapping)
    if t is list or t is tuple:
        return _nested(obj, budget, _depth, _path, _plain_items)
    return _plain_other(obj, budget, _depth, _path)


def _nested(obj: Any, budget: Budget, depth: int, path: set[int] | None,
            copy: Callable[[Any, Budget, int, set[int]], Any]) -> Any:
    """copy(obj, ...) under the depth limit and the cycle guard (ids on the current path)."""
    if depth >= MAX_DEPTH:
        return "<omitted: nested too deep>"
    path = path if path is not None else set()
    if id(obj) in path:
        return "<cycle>"
    path.add(id(obj))
    try:
        return copy(obj, budget, depth, path)
    finally:
        path.discard(id(obj))


def _plain_mapping(obj: Mapping[Any, Any], budget: Budget, depth: int, path: set[int]) -> dict[str, Any]:
    budget.take(DICT_OVERHEAD)
    out: dict[str, Any] = {}
    for i, (k, v) in enumerate(obj.items()):
        if budget.remaining <= 0:
            out["<omitted>"] = f"{len(obj) - i} more items: record size limit"
            break
        budget.take(DICT_PER_ITEM)
        key = _key(k)
        if not is_secret_key(key):
            out[key] = plain(v, budget, depth + 1, path)
        elif type(v) is dict or type(v) is list:  # a tool schema's `password` property keeps its definition
            out[key] = mask_secret_value(plain(v, budget, depth + 1, path))
        else:
            out[key] = REDACTED
    return out


def _plain_items(obj: Any, budget: Budget, depth: int, path: set[int]) -> list[Any]:
    budget.take(LIST_OVERHEAD)
    items: list[Any] = []
    for i, v in enumerate(obj):
        if budget.remaining <= 0:
            items.append(f"<omitted: {len(obj) - i} more items, record size limit>")
            break
        budget.take(LIST_PER_ITEM)
        items.append(plain(v, budget, depth + 1, path))
    if len(items) == 2 and type(items[0]) is str and type(items[1]) is str and is_secret_key(items[0]):
        items[1] = REDACTED  # a (name, value) header pair: ("X-Api-Key", "...")
    return items


def _plain_other(obj: object, budget: Budget, depth: int, _path: set[int] | None) -> Any:
    """Everything that is not exactly a str, number, None, dict, list or tuple."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return plain_str(f"<bytes: {obj.nbytes if isinstance(obj, memoryview) else len(obj)} bytes>", budget)
    if isinstance(obj, str):  # str subclasses
        return plain_str(str.__str__(obj), budget)
    if isinstance(obj, enum.Enum):
        return plain(obj.value, budget, depth + 1, _path)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else str(float(obj))
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return plain_str(obj.isoformat(), budget)
    return _nested(obj, budget, depth, _path, _plain_object)


def _plain_object(obj: Any, budget: Budget, depth: int, path: set[int]) -> Any:
    """Mappings and sequences of other types, models and dataclasses; else a placeholder."""
    if isinstance(obj, Mapping):
        return _plain_mapping(obj, budget, depth, path)
    if isinstance(obj, (list, tuple, set, frozenset)):
        return _plain_items(obj, budget, depth, path)
    dumped = _structured(obj)
    if dumped is not None:
        return plain(dumped, budget, depth + 1, path)
    return plain_str(f"<{type(obj).__name__}>", budget)


def _structured(obj: object) -> Any:
    """Plain data an object offers about itself (pydantic, dataclass), else None.

    Arbitrary objects become a placeholder naming their type: their repr may hold
    anything, a client's credentials included.
    """
    dump = getattr(type(obj), "model_dump", None)  # pydantic v2 models (OpenAI, LiteLLM responses)
    if callable(dump):
        try:
            return obj.model_dump()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a broken model_dump is an odd argument, not our error
            return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name, None) for f in dataclasses.fields(obj)}
    return None
