"""`historymw ui`: a read-only web viewer over the SQL store (SQLite or PostgreSQL).

Needs the `ui` extra (Starlette, uvicorn, Jinja2). Importing this package imports none
of them; `historymw.ui.app.create_app(open_database(url))` builds the ASGI app for
embedding, `historymw ui` serves it.
"""

from __future__ import annotations
