"""Backends: where records go.

`ring` keeps records in memory on the caller's thread (no I/O). Every other
backend does I/O and is fed by its own export worker (`historymw.pipeline`),
so a slow or broken backend never slows the LM call nor the other backends.

A backend is any object with `export(records)`, `flush(timeout)` and
`shutdown()`; third-party packages register names through the
`historymw.backends` entry-point group, pointing at a factory that takes the
`Settings` and returns the backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..config import Settings
    from ..models import LMCall

ENTRY_POINT_GROUP = "historymw.backends"

# name -> "module:factory", imported only when the backend is used.
BUILTIN: dict[str, str] = {
    "ring": "historymw.backends.ring:create",
    "sql": "historymw.backends.sql:create",
    "otel": "historymw.backends.otel:create",
    "log": "historymw.backends.log:create",
}


@runtime_checkable
class Backend(Protocol):
    """What an export destination implements. Called on a background worker, never on the caller's thread."""

    def export(self, records: Sequence[LMCall]) -> int | None:
        """Deliver a batch; raise to have the worker retry it with backoff.

        May return how many records the destination refused (bad data): those
        are dropped and counted as "rejected" instead of retried. A backend may
        also offer `prepare_drafts(drafts, scan_content, invalid)` and
        `export_prepared(prepared)`, which the worker prefers when no user
        redactor is set: it gets the unsealed plain dicts, seals and converts
        them itself and skips building `LMCall` models (the SQL backend builds
        its rows so; see `historymw.pipeline`)."""

    def flush(self, timeout: float | None = None) -> bool:
        """Push out anything buffered inside the backend; True when done in time."""

    def shutdown(self) -> None:
        """Release resources; called once, at `configure()` replacement or exit."""


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_backend_names() -> tuple[str, ...]:
    return tuple(BUILTIN) + tuple(n for n in _entry_points() if n not in BUILTIN)


def is_known(name: str) -> bool:
    return name in BUILTIN or name in _entry_points()


def factory(name: str) -> Callable[[Settings], Any]:
    """The factory registered for a backend name (imports its module)."""
    if name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    return _entry_points()[name].load()  # type: ignore[no-any-return]
