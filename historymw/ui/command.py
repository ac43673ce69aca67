"""`historymw ui`: check the options, open the database read-only, serve the viewer with uvicorn.

Loopback only by default. A non-loopback --host needs a token: one is generated and
printed (as Jupyter does) unless --token gives one; an empty --token there is refused.
The listening socket is bound here, before uvicorn starts, so that a port in use is
one clear line and `--port 0` picks a free port (the printed URL names it).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import ConfigError

if TYPE_CHECKING:
    import argparse
    import socket

# The command line imports this module to build its parser for every command: what only serving needs
# (ipaddress, secrets, socket, threading) is imported when the viewer starts.

TRACE_URL_ENV = "HISTORYMW_UI_TRACE_URL"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"the address to listen on (default {DEFAULT_HOST}; any other needs a token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the port (default {DEFAULT_PORT}; 0: any free)")
    p.add_argument("--open", action="store_true", help="open the viewer in a web browser")
    p.add_argument("--token", help="require this token (a non-loopback --host gets a generated one without it)")


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def access_token(host: str, token: str | None) -> str | None:
    """The token that protects the viewer, or None (loopback without --token); ConfigError to refuse."""
    if token is not None and not token.strip():
        if is_loopback(host):
            return None
        raise ConfigError(f"refusing to serve on {host} without a token: anyone who can reach it could read "
                          "the history (drop the empty --token to get a generated one)")
    if token is not None:
        if any(ch.isspace() for ch in token) or len(token) > 200:
            raise ConfigError("--token must be one word of at most 200 characters")
        return token
    import secrets

    return None if is_loopback(host) else secrets.token_urlsafe(24)


def trace_url_template(env: dict[str, str] | None = None) -> str | None:
    value = (os.environ if env is None else env).get(TRACE_URL_ENV, "").strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")) or "{trace_id}" not in value:
        raise ConfigError(f"{TRACE_URL_ENV}={value!r} is not a link template: expected an http(s) URL "
                          "holding {trace_id}, e.g. https://apm.example/trace/{trace_id}")
    return value


def _bind(host: str, port: int) -> socket.socket:
    import socket

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0-65535, not {port}")
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run(url: str, args: argparse.Namespace, out: TextIO) -> int:
    """Serve until interrupted. Raises ConfigError, StoreError or MissingDependencyError before serving."""
    from ..errors import require

    for module in ("starlette", "uvicorn", "jinja2"):
        require(module, what="historymw ui", extra="ui")
    token = access_token(args.host, args.token)
    trace_url = trace_url_template()

    from .app import create_app
    from .db import open_database

    db = open_database(url)
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown_host = f"[{args.host.strip('[]')}]" if ":" in args.host.strip("[]") else args.host
    link = f"http://{shown_host}:{port}/" + (f"?token={token}" if token else "")
    print(f"historymw ui: {db.url} (read-only) at {link}", file=out)
    print("press Ctrl-C to stop", file=out, flush=True)
    if args.open:
        import threading
        import webbrowser

        threading.Timer(0.5, webbrowser.open, args=(link,)).start()
    _serve(create_app(db, token=token, trace_url=trace_url), sock)
    db.engine.dispose()
    return 0


def _serve(app: Any, sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
