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

from typing import TYPE_CHECKING

from ._version import __version__
from .api import configure, flush, recent, ring, sessions, settings, shutdown, stats
from .backends import Backend
from .backends.ring import RingBuffer
from .capture import StreamAbandoned, call, recorded
from .errors import ConfigError, MissingDependencyError
from .inspect import inspect_history
from .pipeline import FlushResult
from .policy import Policy
from .scope import ContextExecutor, history, wrap
from .sessions import SessionInfo

if TYPE_CHECKING:
    from .config_model import Settings
    from .models import LMCall, Stats
    from .store import AmbiguousIdError, CallStats, Store, StoreError

_LAZY = {"Store": "store", "CallStats": "store", "StoreError": "store", "AmbiguousIdError": "store",
         "Settings": "config_model", "LMCall": "models", "Stats": "models"}


def __getattr__(name: str) -> object:
    # The SQL read API is imported on first use (most processes only record), and so are the
    # pydantic models: the first model a process defines makes pydantic import most of itself,
    # which would be most of what `import historymw` costs.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'historymw' has no attribute {name!r}")


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
