"""Errors about call ids (kept apart so that `historymw.store` imports no SQLAlchemy at import time)."""

from __future__ import annotations


class AmbiguousIdError(LookupError):
    """An id prefix that matches more than one call."""
