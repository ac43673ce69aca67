"""historymw: bounded, policy-driven, redacted history of LLM calls.

    import historymw as hm
    hm.configure(policy="bounded", maxlen=1000, backends=["ring"])

    @hm.recorded(provider="openai")
    def ask(model, messages, **params): ...

    with hm.history(session="u-42"):
        ask("gpt-4o-mini", [{"role": "user", "content": "hi"}])
    hm.inspect_history(1)

`import historymw` imports no optional dependency (sqlalchemy, opentelemetry,
litellm, dspy): each is imported when its backend or integration is used.
"""

import sys as _sys
import types as _types
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from .api import configure, flush, recent, ring, sessions, settings, shutdown, stats
    from .backends import Backend
    from .backends.ring import RingBuffer
    from .capture import StreamAbandoned, call, recorded
    from .config_model import Settings
    from .inspect import inspect_history
    from .models import LMCall, Stats
    from .pipeline import FlushResult
    from .policy import Policy
    from .scope import ContextExecutor, history, wrap
    from .sessions import SessionInfo
    from .store import AmbiguousIdError, CallStats, Store, StoreError

# Every public name is imported from its module on first use. A process that records pays for the
# recorder when it first touches it (hm.recorded, hm.configure, ...); one that only reads the store
# (the `historymw` command, `historymw.store`) never imports it: the recorder's modules (runtime,
# pipeline, ring, drafts) and the pydantic models would be most of what the command costs.
_LAZY = {
    **dict.fromkeys(("configure", "flush", "recent", "ring", "sessions", "settings", "shutdown", "stats"), "api"),
    "Backend": "backends", "RingBuffer": "backends.ring",
    "StreamAbandoned": "capture", "call": "capture", "recorded": "capture",
    "inspect_history": "inspect", "FlushResult": "pipeline", "Policy": "policy",
    "ContextExecutor": "scope", "history": "scope", "wrap": "scope", "SessionInfo": "sessions",
    "Store": "store", "CallStats": "store", "StoreError": "store", "AmbiguousIdError": "store",
    "Settings": "config_model", "LMCall": "models", "Stats": "models",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'historymw' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # found directly from now on: __getattr__ runs once per name
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY.keys())  # the lazy names too (tab completion, help())


class _Package(_types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        # `historymw.sessions` is the function `hm.sessions()`. Loading the submodule of the same name
        # (historymw/sessions.py, which the recorder imports) would bind the module there: the import
        # system sets a package's attribute to each submodule it loads. The module stays importable
        # (`from historymw.sessions import SessionTable`), as when this package imported it eagerly.
        if name == "sessions" and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

__all__ = [
    "AmbiguousIdError",
    "Backend",
    "CallStats",
    "ConfigError",
    "ContextExecutor",
    "FlushResult",
    "LMCall",
    "MissingDependencyError",
    "Policy",
    "RingBuffer",
    "SessionInfo",
    "Settings",
    "Stats",
    "Store",
    "StoreError",
    "StreamAbandoned",
    "__version__",
    "call",
    "configure",
    "flush",
    "history",
    "inspect_history",
    "recent",
    "recorded",
    "ring",
    "sessions",
    "settings",
    "shutdown",
    "stats",
    "wrap",
]
