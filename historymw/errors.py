"""Exceptions historymw raises at its boundaries (configuration, CLI, install).

Nothing here is ever raised inside a recorded LM call: the hot path is fail-open.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting has a value historymw cannot use.

    The message names the setting (the environment variable or the keyword
    argument), the bad value, and what is allowed.
    """


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(
            f"{what} needs the optional dependency {module!r}, which is not installed. "
            f"Install it with: pip install 'historymw[{extra}]'"
        )
        self.extra = extra
        self.module_name = module


def require(module: str, *, what: str, extra: str) -> object:
    """Import an optional dependency, or raise one clear error naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(what, extra, module) from exc
