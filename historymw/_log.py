"""historymw's own logger: structlog, looked up lazily so that an application's
later `structlog.configure()` still applies to it."""

from __future__ import annotations

import structlog

logger = structlog.get_logger("historymw")
