"""The viewer's web app: Starlette routes rendering Jinja2 templates (autoescaped) over `queries`.

Every response carries a strict Content-Security-Policy: scripts and styles only from
this server's /static (no inline script, no inline style, no eval), no framing, no
referrer (a token may sit in the URL). Recorded text is only ever put into the page
as escaped text. With a token, a request needs it (query `?token=`, which sets a cookie,
or `Authorization: Bearer`); without one, only loopback Host headers are served, so a
web page elsewhere cannot read the viewer through DNS rebinding.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..config import parse_duration
from ..sql import StoreError
from . import charts, queries
from .db import Database
from .queries import BadQueryError, Cursor, Query

HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
COOKIE = "historymw_ui_token"  # + the port: browsers share cookies between the ports of one host
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
RANGES = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
LIVE_INTERVAL_MS = 2000
FILTER_KEYS = ("model", "provider", "session", "status", "tag", "since", "until", "range", "q", "limit")
PAGE_SIZES = (25, 50, 100, 200)
MODEL_CACHE_S = 60.0


def _fmt_time(t: Any) -> str:
    if t is None:
        return ""
    if not isinstance(t, _dt.datetime):
        t = _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc)
    return str(t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"))


def _fmt_duration(v: Any) -> str:
    if v is None:
        return "–"
    v = float(v)
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _fmt_tokens(v: Any) -> str:
    return "–" if v is None else f"{int(v):,}"


def _fmt_cost(v: Any) -> str:
    if v is None:
        return "–"
    v = float(v)
    if v == 0:
        return "$0"
    if v < 0.01:  # per-call costs are often fractions of a cent: keep two significant digits
        digits = max(2, 1 - math.floor(math.log10(v)))
        return f"${v:.{digits}f}"
    return f"${v:.4f}" if v < 1 else f"${v:,.2f}"


def _pretty_json(v: Any) -> str:
    return json.dumps(v, indent=2, ensure_ascii=False, default=str, sort_keys=True)


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(time=_fmt_time, duration=_fmt_duration, tokens=_fmt_tokens, cost=_fmt_cost,
                       pretty=_pretty_json, text=queries._text_of)
    return env


class Viewer:
    """The state every route shares: the database, the templates, the options."""

    def __init__(self, db: Database, *, token: str | None, trace_url: str | None) -> None:
        self.db = db
        self.token = token
        self.trace_url = trace_url
        self.env = _environment()
        self._models: tuple[float, list[str]] = (0.0, [])

    def models(self) -> list[str]:
        """The models for the filter's suggestions, read at most once a minute."""
        at, values = self._models
        if time.monotonic() - at > MODEL_CACHE_S:
            values = queries.distinct_values(self.db, "model")
            self._models = (time.monotonic(), values)
        return values

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(request=request, db_url=self.db.url, nav=name, **ctx)
        return HTMLResponse(html, status_code=status)

    def trace_link(self, trace_id: str | None) -> str | None:
        if not trace_id or not self.trace_url:
            return None
        return self.trace_url.replace("{trace_id}", quote(str(trace_id), safe=""))


def _one(request: Request, key: str) -> str | None:
    v = request.query_params.get(key)
    if v is None:
        return None
    v = v.strip()
    if len(v) > 500:
        raise BadQueryError(f"the {key} filter is longer than 500 characters")
    return v or None


def parse_query(request: Request, *, default_range: str | None = None,
                anchor: Callable[[], float | None] | None = None) -> tuple[Query, dict[str, str]]:
    """The filters of a request, and the form's values to show back. `range` is relative to now."""
    form = {k: (request.query_params.get(k) or "").strip()[:500] for k in FILTER_KEYS}
    status = _one(request, "status")
    if status not in (None, "ok", "error"):
        raise BadQueryError(f"status must be ok or error, not {status[:20]!r}")
    tags = []
    for raw in request.query_params.getlist("tag"):
        if not raw.strip():
            continue
        key, sep, value = raw.strip().partition("=")
        if not sep or not key:
            raise BadQueryError(f"a tag filter is key=value, not {raw[:40]!r}")
        tags.append((key.strip(), value.strip()))
    since = _one(request, "since")
    until = _one(request, "until")
    q = Query(model=_one(request, "model"), provider=_one(request, "provider"), session=_one(request, "session"),
              status=status, tags=tuple(tags), text=_one(request, "q"),
              since=queries.parse_time(since, "since") if since else None,
              until=queries.parse_time(until, "until") if until else None)
    rng = _one(request, "range") or default_range
    if rng and rng != "all" and q.since is None:
        if rng not in RANGES:
            try:
                span = parse_duration(rng)
            except ValueError:
                raise BadQueryError(f"range must be one of {', '.join(RANGES)} or all, not {rng[:20]!r}") from None
        else:
            span = RANGES[rng]
        end = q.until if q.until is not None else (anchor() if anchor is not None else None)
        end = time.time() if end is None else end
        q = queries.in_window(q, end - span, q.until)
    form["range"] = rng or ""
    return q, form


def _link(request: Request, path: str, **changes: str | None) -> str:
    """`path` with the request's filters, changed by `changes` (None drops a parameter)."""
    params = [(k, v) for k, v in request.query_params.multi_items()
              if k in FILTER_KEYS and k not in changes and v]
    params += [(k, v) for k, v in changes.items() if v is not None]
    return path + ("?" + urlencode(params) if params else "")


# -- routes -------------------------------------------------------------------------------------


async def calls_page(request: Request) -> Response:
    v: Viewer = request.app.state.viewer
    q, form = parse_query(request)
    before = request.query_params.get("before")
    after = request.query_params.get("after")
    size = request.query_params.get("limit") or str(queries.PAGE_SIZE)
    if not size.isdigit() or int(size) not in PAGE_SIZES:
        raise BadQueryError(f"limit must be one of {', '.join(map(str, PAGE_SIZES))}, not {size[:10]!r}")
    page = await run_in_threadpool(queries.page, v.db, q, before=Cursor.decode(before) if before else None,
                                   after=Cursor.decode(after) if after else None, limit=int(size))
    models = await run_in_threadpool(v.models)
    live = page.newer is None  # the newest page follows new calls
    return v.render(request, "calls.html", page=page, form=form, models=models, live=live,
                    live_url=_link(request, "/fragments/new-calls"), live_interval=LIVE_INTERVAL_MS,
                    older_url=_link(request, "/", before=page.older.encode(), after=None) if page.older else None,
                    newer_url=_link(request, "/", after=page.newer.encode(), before=None) if page.newer else None,
                    newest_url=_link(request, "/", before=None, after=None))


async def new_calls(request: Request) -> Response:
    """Rows newer than `after` (an HTML fragment of <tr>), for the live list; X-Newest names the new top."""
    v: Viewer = request.app.state.viewer
    q, _ = parse_query(request)
    after = request.query_params.get("after")
    if after:
        rows = await run_in_threadpool(queries.newer_than, v.db, q, Cursor.decode(after))
    else:
        rows = (await run_in_threadpool(queries.page, v.db, q)).rows
    html = v.env.get_template("_rows.html").render(rows=rows, fresh=True)
    headers = {"X-Newest": queries.key_of(rows[0]).encode()} if rows else {}
    return HTMLResponse(html, headers=headers)


async def call_page(request: Request) -> Response:
    v: Viewer = request.app.state.viewer
    call_id = request.path_params["call_id"]
    call = await run_in_threadpool(queries.get_call, v.db, call_id) if len(call_id) <= 64 else None
    if call is None:
        return v.render(request, "error.html", status=404, title="No such call",
                        message=f"There is no call with id {call_id[:64]!r} in this database.")
    return v.render(request, "call.html", call=call, trace_link=v.trace_link(call.get("trace_id")))


async def sessions_page(request: Request) -> Response:
    v: Viewer = request.app.state.viewer

    def build() -> tuple[Query, dict[str, str], list[dict[str, Any]]]:
        q, form = parse_query(request, default_range="7d", anchor=lambda: queries.newest_time(v.db))
        return q, form, queries.sessions(v.db, q)

    q, form, rows = await run_in_threadpool(build)
    return v.render(request, "sessions.html", sessions=rows, form=form, q=q, limit=queries.SESSIONS_MAX)


async def session_page(request: Request) -> Response:
    v: Viewer = request.app.state.viewer
    sid = (request.query_params.get("id") or "").strip()
    if not sid or len(sid) > 500:
        raise BadQueryError("which session? /session?id=SESSION")
    rows = await run_in_threadpool(queries.session_calls, v.db, sid)
    if not rows:
        return v.render(request, "error.html", status=404, title="No such session",
                        message=f"There are no calls of session {sid[:80]!r} in this database.")
    more = len(rows) > queries.SESSION_CALLS_MAX
    rows = rows[: queries.SESSION_CALLS_MAX]
    totals = {"calls": len(rows), "errors": sum(r["status"] == "error" for r in rows),
              "tokens": sum(int(r["total_tokens"] or 0) for r in rows),
              "cost": sum(float(r["cost"] or 0) for r in rows) if any(r["cost"] is not None for r in rows) else None}
    return v.render(request, "session.html", session=sid, rows=rows, more=more, totals=totals,
                    limit=queries.SESSION_CALLS_MAX)


async def overview_page(request: Request) -> Response:
    v: Viewer = request.app.state.viewer

    def build() -> tuple[Query, dict[str, str], queries.Overview | None]:
        q, form = parse_query(request)
        newest = queries.newest_time(v.db)
        if newest is None:
            return q, form, None
        until = q.until if q.until is not None else newest + 1e-3
        since = q.since
        if since is None:
            # "all": from the oldest call; by default the last day of activity (up to the newest call).
            first = queries.oldest_time(v.db, None if form["range"] == "all" else until - RANGES["24h"])
            since = min(first if first is not None else until, until - 60.0)
        return q, form, queries.overview(v.db, queries.in_window(q, since, until))

    q, form, ov = await run_in_threadpool(build)
    ctx: dict[str, Any] = {"form": form, "ov": ov, "q": q}
    if ov is not None:
        ctx.update(
            calls_chart=charts.calls_chart(ov.buckets, ov.width),
            latency_chart=charts.latency_chart(ov.buckets, ov.width),
            tokens_chart=charts.hbars([(str(m["model"]), float(m["tokens"] or 0)) for m in ov.models],
                                      lambda x: f"{x:,.0f}", "tokens per model"),
            cost_chart=charts.hbars([(str(m["model"]), float(m["cost"] or 0)) for m in ov.models],
                                    _fmt_cost, "cost per model"),
        )
    return v.render(request, "overview.html", **ctx)


# -- errors, access, headers --------------------------------------------------------------------


def _host_name(header: str) -> str:
    """The host of a Host header, without its port ("[::1]:8765" -> "[::1]")."""
    h = header.strip().lower()
    if h.startswith("["):
        return h.split("]", 1)[0] + "]"
    return h.rsplit(":", 1)[0]


async def _dispatch(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    v: Viewer = request.app.state.viewer
    t0 = time.perf_counter()
    response = await _guarded(v, request, call_next)
    for k, val in SECURITY_HEADERS.items():
        response.headers.setdefault(k, val)
    # The time the server spent on the page (queries and rendering), shown by browsers' dev tools.
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.1f}"
    return response


async def _guarded(v: Viewer, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    if v.token is None:
        if _host_name(request.headers.get("host", "")) not in LOOPBACK_HOSTS:
            return HTMLResponse("<h1>Forbidden</h1><p>This viewer answers only on its loopback address.</p>",
                                status_code=403)
    else:
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given.encode(), v.token.encode()):
            # Trade the URL's token for a cookie, and drop it from the address bar (and history).
            params = [(k, x) for k, x in request.query_params.multi_items() if k != "token"]
            target = request.url.path + ("?" + urlencode(params) if params else "")
            resp = RedirectResponse(target, status_code=303)
            resp.set_cookie(f"{COOKIE}_{request.url.port}", v.token, httponly=True, samesite="strict")
            return resp
        auth = request.headers.get("authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else ""
        supplied = request.cookies.get(f"{COOKIE}_{request.url.port}") or bearer
        if not hmac.compare_digest(supplied.encode(), v.token.encode()):
            return v.render(request, "error.html", status=401, title="Token required",
                            message="This viewer is protected by a token: open the URL that "
                                    "`historymw ui` printed (it ends in ?token=...).", bare=True)
    try:
        return await call_next(request)
    except BadQueryError as exc:
        return v.render(request, "error.html", status=400, title="Bad request", message=str(exc))
    except StoreError as exc:
        return v.render(request, "error.html", status=503, title="Database error", message=str(exc))


def create_app(db: Database, *, token: str | None = None, trace_url: str | None = None) -> Starlette:
    """The viewer for an opened database; `token` protects every route."""
    app = Starlette(
        routes=[
            Route("/", calls_page),
            Route("/calls/{call_id}", call_page),
            Route("/sessions", sessions_page),
            Route("/session", session_page),
            Route("/overview", overview_page),
            Route("/fragments/new-calls", new_calls),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_dispatch)],
    )
    app.state.viewer = Viewer(db, token=token, trace_url=trace_url)
    return app
