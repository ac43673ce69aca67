"""The text of an exception, read without depending on code that can hang the caller.

`str(exc)` runs the exception's `__str__` (and its arguments' `__str__`/`__repr__`): user code,
which may raise, sleep or never return. historymw reads an error's text on the caller's thread
(the record's `error_message` and `error_stacktrace`, the internal-error log line), so:

- when the text is produced by a built-in exception type's own `__str__` from plain arguments
  (str, int, float, bool, None, bytes), it is read directly: no user code runs;
- otherwise `str()` runs on a helper thread and the caller waits at most `TIMEOUT_S`; past that
  the text is a placeholder naming the type. While `MAX_OVERDUE` helpers are still stuck past
  their bound, further messages get the placeholder at once, so a `__str__` that never returns
  costs the caller at most `MAX_OVERDUE * TIMEOUT_S` in all, then nothing.

The type's name is always read from the type itself (never through a metaclass property).
"""

from __future__ import annotations

import builtins
import threading
import traceback
from collections.abc import Callable
from typing import Any

TIMEOUT_S = 0.5
MAX_OVERDUE = 4

_PLAIN = frozenset({str, int, float, bool, type(None), bytes})
# Built-in exception types: their __str__ is C code that reads only the fields checked below.
_BUILTIN = frozenset(v for v in vars(builtins).values() if isinstance(v, type) and issubclass(v, BaseException))
# Fields that a built-in type's own __str__ formats besides args.
_FIELDS: tuple[tuple[type[BaseException], tuple[str, ...]], ...] = (
    (OSError, ("errno", "strerror", "filename", "filename2")),
    (SyntaxError, ("msg", "filename", "lineno", "offset", "text")),
    (ImportError, ("msg",)),
    (UnicodeError, ("encoding", "object", "start", "end", "reason")),
)

_type_name = type.__dict__["__name__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_dict = type.__dict__["__dict__"].__get__
_args = BaseException.__dict__["args"].__get__
_cause = BaseException.__dict__["__cause__"].__get__
_context = BaseException.__dict__["__context__"].__get__
_suppress = BaseException.__dict__["__suppress_context__"].__get__
_tb = BaseException.__dict__["__traceback__"].__get__

_lock = threading.Lock()
_overdue = 0


def type_name(exc: BaseException) -> str:
    name = _type_name(type(exc))
    return name if type(name) is str else "<exception>"


def _str_owner(t: type) -> type | None:
    """The class in t's MRO whose __str__ str() would run."""
    for klass in _type_mro(t):
        if "__str__" in _type_dict(klass):
            return klass  # type: ignore[no-any-return]
    return None


def _plain_fields(exc: BaseException) -> bool:
    if not all(type(a) in _PLAIN for a in _args(exc)):
        return False
    t = type(exc)
    for base, fields in _FIELDS:
        if issubclass(t, base):
            for name in fields:
                value = _type_dict(base)[name].__get__(exc, base)
                if type(value) not in _PLAIN:
                    return False
    return True


def message(exc: BaseException) -> str:
    """`str(exc)`, or a placeholder when reading it would run code that did not finish in time."""
    try:
        if _str_owner(type(exc)) in _BUILTIN and _plain_fields(exc):
            return str(exc)
    except Exception:  # noqa: BLE001 - an odd exception: read it the careful way
        pass
    return bounded(lambda: str(exc), f"<{type_name(exc)}: its message was not read>")


def bounded(fn: Callable[[], Any], fallback: str) -> str:
    """fn()'s str result, computed on a helper thread within TIMEOUT_S; `fallback` past that, when fn
    fails or returns no str, or while MAX_OVERDUE earlier helpers are still running past their bound."""
    global _overdue
    with _lock:
        if _overdue >= MAX_OVERDUE:
            return fallback
    box: list[Any] = []
    done = threading.Event()
    state = {"late": False}

    def run() -> None:
        global _overdue
        try:
            box.append(fn())
        except BaseException:  # noqa: BLE001 - any failure gives the fallback
            pass
        finally:
            with _lock:
                done.set()
                if state["late"]:
                    _overdue -= 1

    try:
        threading.Thread(target=run, name="historymw-error-text", daemon=True).start()
    except RuntimeError:  # interpreter shutting down
        return fallback
    if not done.wait(TIMEOUT_S):
        with _lock:
            if not done.is_set():
                state["late"] = True
                _overdue += 1
                return fallback
    text = box[0] if box else None
    return text if type(text) is str else fallback


def describe(exc: BaseException) -> str:
    """"TypeName: message" (the message read as `message` reads it)."""
    text = message(exc)
    return f"{type_name(exc)}: {text}" if text else type_name(exc)


def text_of(value: Any) -> str:
    """`str(value)` for a value a caller handed over (an extract= field that is not a str): read
    directly when it is plain data, else as `bounded` reads it."""
    t = type(value)
    if t in _PLAIN:
        return str(value)
    if issubclass(t, str):
        return str.__str__(value)
    return bounded(lambda: str(value), f"<{_type_name(t)}>")


def stacktrace(exc: BaseException, first: str | None = None) -> str:
    """What `traceback.format_exception(exc)` prints, with every message in the chain read as
    `message` reads it (`first`: exc's own message, when it was read already)."""
    chain: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        cause = _cause(current)
        if cause is not None:
            current, link = cause, "The above exception was the direct cause of the following exception:\n"
        elif not _suppress(current) and _context(current) is not None:
            current, link = _context(current), ("During handling of the above exception, "
                                                "another exception occurred:\n")
        else:
            current = None
    out: list[str] = []
    for error, joined_by in reversed(chain):
        tb = _tb(error)
        if tb is not None:
            out.append("Traceback (most recent call last):\n")
            out.extend(traceback.format_tb(tb))
        t = type(error)
        name = _type_qualname(t)
        module = _type_dict(t).get("__module__") if "__module__" in _type_dict(t) else None
        if type(module) is str and module not in ("__main__", "builtins"):
            name = f"{module}.{name}"
        text = first if error is exc and first is not None else message(error)
        out.append(f"{name}: {text}\n" if text else f"{name}\n")
        if joined_by is not None:
            out.append(f"\n{joined_by}\n")
    return "".join(out)
