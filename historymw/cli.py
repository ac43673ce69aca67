"""`historymw`: read and prune the persisted history from a shell.

    historymw tail [-n N] [--follow]        the newest calls, one line each
    historymw show ID                       one call in full
    historymw stats [--by model] [--json]   calls, errors, tokens, cost, latency
    historymw sessions [ID] [--json]        sessions, newest activity first; or one in full
    historymw export --format jsonl|csv     every call, for other tools
    historymw prune --older-than 30d        delete old calls (or --keep N)
    historymw ui [--port 8765] [--open]     a read-only web viewer (historymw/ui/)

The store is `--db URL` (before or after the command; a bare path is a SQLite
file), else HISTORYMW_SQL_URL, else sqlite:///historymw.db. The CLI reads no
other setting. Readers never write to the database. Recorded text is printed
with control characters escaped. Errors are one line on stderr and an exit
code scripts can rely on (see EXIT_*). docs/CLI.md is the reference.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from .errors import ConfigError, MissingDependencyError
from .inspect import format_cost, format_duration, render, safe_text
from .sql import DEFAULT_SQL_URL, GROUPS, StoreError
from .sql.ids import LISTED, AmbiguousIdError, short_id

if TYPE_CHECKING:
    from .models import LMCall
    from .sql.direct import CallLine

# Each command imports what it needs when it runs: `historymw sessions` is typed by people, and what
# a command costs them is mostly its imports. The pydantic models (LMCall) are defined only by the
# commands that print whole calls; the recorder (historymw.runtime and the rest) is never imported.
EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3
_DEFAULT_URL = DEFAULT_SQL_URL
# Ranges both databases hold: a 64-bit count; a moment after year 1 (PostgreSQL timestamps).
_MAX_COUNT = 2**63 - 1
_MAX_AGO_S = 60_000_000_000.0  # about 1,900 years
_MAX_INTERVAL_S = 86400.0
_EPILOG = f"""\
database: --db URL (before or after the command), else $HISTORYMW_SQL_URL, else {_DEFAULT_URL}
          (sqlite:///path/to/file.db, a bare path to a SQLite file,
          or postgresql+psycopg://user@host:5432/db); read-only except for prune

ids: tail shows each call's 8-digit short id; show takes the full id, the short id, or a unique
     prefix of either (4-8 hex digits: short ids, 9 or more: full ids), in any case

exit codes:
  0  success
  1  not found (show ID: no such call)
  2  usage error or bad input (unknown option, bad duration or date, bad URL)
  3  database error (missing database file, server unreachable, query failed)
"""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# -- parsing values -------------------------------------------------------------


def _parse_duration(text: str) -> float:
    # Imported when a duration is given: config imports the policies (dataclasses, inspect), which no
    # command needs otherwise.
    from .config import parse_duration

    return parse_duration(text)


def _duration(text: str) -> float:
    if text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: a duration cannot be negative")
    try:
        seconds = _parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad duration {text!r}: expected e.g. 90s, 15m, 12h, 30d, 2w") from None
    if not math.isfinite(seconds) or seconds > _MAX_AGO_S:
        raise argparse.ArgumentTypeError(f"duration {text!r} is out of range (at most {_MAX_AGO_S / 86400:,.0f}d)")
    return seconds


def _interval(text: str) -> float:
    seconds = _duration(text)
    if not 0.01 <= seconds <= _MAX_INTERVAL_S:
        raise argparse.ArgumentTypeError(f"interval {text!r} is out of range (10ms to 1d)")
    return seconds


def _when(text: str) -> float:
    """A point in time: a duration ago (`24h`) or an ISO date/time (`2026-05-01`, `2026-05-01T12:00Z`)."""
    try:
        ago = _parse_duration(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(ago) or ago > _MAX_AGO_S:
            raise argparse.ArgumentTypeError(
                f"time {text!r} is out of range (at most {_MAX_AGO_S / 86400:,.0f}d ago)")
        return time.time() - ago
    try:
        moment = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad time {text!r}: expected a duration ago (24h, 7d) or a date/time (2026-05-01, "
            "2026-05-01T12:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, ValueError):
        raise argparse.ArgumentTypeError(f"time {text!r} is out of range") from None


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    n = int(text)
    if n > _MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text.strip()} is out of range (at most {_MAX_COUNT})")
    return n


# -- formatting -------------------------------------------------------------------


def _time(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _preview(call: LMCall | CallLine, width: int = 48) -> str:
    if call.status == "error":
        text = f"{call.error_type or 'error'}: {call.error_message or ''}"
    else:
        text = call.output_text or ""
    text = safe_text(" ".join(text.split()), one_line=True)
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if text[width - 1] != " ":  # mid-word: back to the last space, unless that leaves less than half
        space = cut.rfind(" ")
        cut = cut[:space] if space >= width // 2 else cut
    return cut.rstrip() + "…"


def _cell(value: str | None) -> str:
    return "-" if not value else safe_text(value, one_line=True)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], right: set[int], out: TextIO,
           widths: list[int] | None = None) -> list[int]:
    """Print aligned columns (numbers right-aligned); returns the widths used."""
    rows = list(rows)
    if widths is None:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows] if header else rows:
        pairs = enumerate(zip(r, widths, strict=False))
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in pairs]
        out.write("  ".join(cells).rstrip() + "\n")
    return widths


_TAIL_HEADER = ("TIME (UTC)", "ID", "MODEL", "STATUS", "LATENCY", "TOKENS", "COST", "SESSION", "OUTPUT")
_TAIL_RIGHT = {4, 5, 6}


def _tail_row(c: LMCall | CallLine) -> list[str]:
    return [_time(c.started_at), short_id(c.id), _cell(c.model), _cell(c.status), format_duration(c.duration_s),
            _int(c.total_tokens), format_cost(c.cost), _cell(c.session), _preview(c)]


# JSON escapes C0 controls itself; DEL and the C1 controls (U+009B is a CSI) only inside strings, where
# these are the only place they can be: \u escapes parse back to the same text.
# (A str.translate table: compiling the character class as a regex cost 2.6 million instructions.)
_JSON_UNSAFE = {o: f"\\u{o:04x}" for o in (*range(0x7f, 0xa0), 0x61c, 0x200e, 0x200f, *range(0x202a, 0x202f),
                                           *range(0x2066, 0x206a))}


def _json_safe(text: str) -> str:
    return text.translate(_JSON_UNSAFE)


def _json_line(c: LMCall) -> str:
    return _json_safe(c.model_dump_json())


# -- commands -----------------------------------------------------------------------


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k, None) for k in ("session", "model", "status", "since", "until")}


def cmd_tail(store: Any, args: argparse.Namespace, out: TextIO) -> int:
    calls = store.recent(args.n, **_filters(args)) if args.n else []
    widths: list[int] | None = None
    if args.json:
        for c in calls:
            out.write(_json_line(c) + "\n")
    elif args.n == 0:
        pass  # like tail -n 0: nothing (with --follow, only what comes next)
    elif calls or not args.follow:
        if calls:
            widths = _table(_TAIL_HEADER, [_tail_row(c) for c in calls], _TAIL_RIGHT, out)
        else:
            out.write("no calls recorded\n")
    out.flush()
    if not args.follow:
        return EXIT_OK
    return _follow(store, args, out, calls, widths)


def _follow(store: Any, args: argparse.Namespace, out: TextIO, seen_calls: list[LMCall],
            widths: list[int] | None) -> int:
    import signal
    from collections import deque

    # Calls from several processes land out of order: look back a little, skip the ids already shown.
    lookback = 10.0
    seen: deque[str] = deque(maxlen=10000)
    seen.extend(c.id for c in seen_calls)
    seen_set = set(seen)
    # -n 0: only calls that start from now on.
    newest = max((c.started_at.timestamp() for c in seen_calls),
                 default=time.time() - (0.0 if args.n == 0 else lookback))
    filters = {k: v for k, v in _filters(args).items() if k != "since"}
    # Calls in the look-back window that are not newer than the last one shown count as seen; a call
    # that started later is always printed, even if it was stored while this ran.
    for c in store.recent(1000, since=newest - lookback, **filters):
        if c.id not in seen_set and c.started_at.timestamp() <= newest:
            seen.append(c.id)
            seen_set.add(c.id)
    # Ctrl-C sets a flag the loop reads between queries, rather than raising KeyboardInterrupt
    # wherever the main thread happens to be (inside SQLAlchemy or the SQLite driver): the
    # command then stops within one interval, with nothing half-done.
    stop: list[bool] = []
    try:
        previous: Any = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    except ValueError:  # not the main thread (the CLI called from code): Ctrl-C raises as usual
        previous = None
    try:
        while not stop:
            time.sleep(args.interval)
            if stop:
                break
            fresh = [c for c in store.recent(1000, since=newest - lookback, **filters) if c.id not in seen_set]
            for c in fresh:
                if len(seen) == seen.maxlen:
                    seen_set.discard(seen[0])
                seen.append(c.id)
                seen_set.add(c.id)
                newest = max(newest, c.started_at.timestamp())
            if not fresh:
                continue
            if args.json:
                for c in fresh:
                    out.write(_json_line(c) + "\n")
            else:
                widths = _table(_TAIL_HEADER if widths is None else (), [_tail_row(c) for c in fresh],
                                _TAIL_RIGHT, out, widths or _follow_widths())
            out.flush()
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the handler was in place
        return EXIT_OK
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return EXIT_OK


def _follow_widths() -> list[int]:
    return [19, 8, 16, 6, 8, 8, 10, 12, 48]


def cmd_show(store: Any, args: argparse.Namespace, out: TextIO) -> int:
    try:
        call = store.get(args.id)
    except AmbiguousIdError as exc:
        shown = ", ".join(short_id(i) for i in exc.candidates[:LISTED])
        more = " (and more)" if len(exc.candidates) > LISTED else ""
        return _fail(EXIT_USAGE, f"id {safe_text(args.id, one_line=True)!r} matches several calls: "
                                 f"{shown}{more}; give more digits")
    if call is None:
        return _fail(EXIT_NOT_FOUND, f"no call with id {safe_text(args.id, one_line=True)!r} in {store.display_url}")
    out.write(_json_safe(call.model_dump_json(indent=2)) + "\n" if args.json else render([call]))
    return EXIT_OK


def cmd_stats(store: Any, args: argparse.Namespace, out: TextIO) -> int:
    groups = store.stats(by=args.by, **_filters(args))
    if args.json:
        import json

        out.write(json.dumps([g.model_dump(mode="json") for g in groups], indent=2) + "\n")
        return EXIT_OK
    if not groups:
        out.write("no calls recorded\n")
        return EXIT_OK
    rows = [[_int(g.calls), _int(g.errors), f"{100 * g.error_rate:.1f}%", _int(g.total_tokens),
             format_cost(g.cost), format_duration(g.latency_mean_s), format_duration(g.latency_p50_s),
             format_duration(g.latency_p95_s)] for g in groups]
    header = ["CALLS", "ERRORS", "ERR%", "TOKENS", "COST", "MEAN", "P50", "P95"]
    right = {0, 1, 2, 3, 4, 5, 6, 7}
    if args.by:  # a first column naming each group
        rows = [[_cell(None if g.group is None else str(g.group)), *r] for g, r in zip(groups, rows, strict=True)]
        header = [args.by.upper(), *header]
        right = {i + 1 for i in right}
    _table(header, rows, right, out)
    first = min(g.first_call for g in groups if g.first_call is not None)
    last = max(g.last_call for g in groups if g.last_call is not None)
    out.write(f"\n{sum(g.calls for g in groups):,} calls from {_time(first)} to {_time(last)} UTC "
              f"in {store.display_url}\n")
    return EXIT_OK


_SESSIONS_HEADER = ("LAST ACTIVITY (UTC)", "FIRST (UTC)", "SESSION", "CALLS", "ERRORS", "TOKENS", "COST")


def _iso(moment: _dt.datetime) -> str:
    """A time as pydantic writes it in JSON (UTC as Z), so that plain rows print as the models would."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def cmd_sessions(store: Any, args: argparse.Namespace, out: TextIO) -> int:
    if args.id is not None:
        return _show_session(store, args, out)
    # Plain rows (Store.session_rows): the list needs no pydantic model.
    try:
        page = store.session_rows(args.n, before=args.before)
    except ValueError as exc:
        raise _UsageError(f"argument --before: {exc}") from None
    more = page[-1]["cursor"] if len(page) == args.n and page else None
    if more is not None and not store.session_rows(1, before=more):
        more = None  # the page ended exactly at the last session
    if args.json:
        import json  # here: json costs the table 5 million instructions to import

        rows = [{**s, "first_at": _iso(s["first_at"]), "last_at": _iso(s["last_at"])} for s in page]
        out.write(_json_safe(json.dumps({"sessions": rows, "next": more}, indent=2, ensure_ascii=False)) + "\n")
        return EXIT_OK
    if not page:
        out.write("no sessions recorded\n" if args.before is None else "no more sessions\n")
        return EXIT_OK
    _table(_SESSIONS_HEADER, [[_time(s["last_at"]), _time(s["first_at"]), _cell(s["id"]), _int(s["calls"]),
                               _int(s["errors"]), _int(s["total_tokens"]), format_cost(s["cost"])] for s in page],
           {3, 4, 5, 6}, out)
    if more is not None:
        out.write(f"\nnext page: historymw sessions --before {_shell_quote(more)}\n")
    return EXIT_OK


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(safe_text(text, one_line=True))


def _show_session(store: Any, args: argparse.Namespace, out: TextIO) -> int:
    summary = store.session_row(args.id)
    if summary is None:
        return _fail(EXIT_NOT_FOUND, f"no session {safe_text(args.id, one_line=True)!r} in {store.display_url}")
    if args.json:  # the session and its calls as the models write themselves
        from .store_models import SessionSummary

        out.write("{\"session\": " + _json_safe(SessionSummary(**summary).model_dump_json(exclude={"cursor"}))
                  + ", \"calls\": [")
        for i, c in enumerate(store.calls(session=args.id)):  # streamed: a session may be long
            out.write(("\n  " if i == 0 else ",\n  ") + _json_line(c))
        out.write("\n]}\n")
        return EXIT_OK
    # The table's rows are read before anything is printed (a reader that fails leaves nothing half-printed).
    rows = None if args.full else [_tail_row(c) for c in store.calls(session=args.id)]
    out.write(f"session {_cell(summary['id'])}: {summary['calls']:,} calls, {summary['errors']:,} errors, "
              f"{summary['total_tokens']:,} tokens, cost {format_cost(summary['cost'])}, "
              f"from {_time(summary['first_at'])} to {_time(summary['last_at'])} UTC\n\n")
    if rows is None:  # --full: the conversation as it was, one call after another
        for c in store.calls(session=args.id):
            out.write(render([c]))
    else:
        _table(_TAIL_HEADER, rows, _TAIL_RIGHT, out)
    return EXIT_OK


def cmd_export(store: Any, args: argparse.Namespace, out: TextIO) -> int:
    if args.output in (None, "-"):
        n = _write_export(store, args, out)
    else:
        n = _export_to_file(store, args)
        print(f"exported {n:,} calls to {args.output}", file=sys.stderr)
    return EXIT_OK


def _write_export(store: Any, args: argparse.Namespace, target: TextIO) -> int:
    n = 0
    if args.format == "jsonl":
        for c in store.calls(**_filters(args)):
            target.write(_json_line(c) + "\n")
            n += 1
    else:
        import csv
        import json

        from .models import LMCall

        fields = tuple(LMCall.model_fields)
        writer = csv.writer(target)
        writer.writerow(fields)
        for c in store.calls(**_filters(args)):
            d = c.model_dump(mode="json")
            writer.writerow([json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else
                             ("" if v is None else v) for v in (d[f] for f in fields)])
            n += 1
    return n


def _export_to_file(store: Any, args: argparse.Namespace) -> int:
    """Write to a new owner-only file beside the target, then rename it over the target: a reader
    never sees half a file, a failed export leaves the target as it was, and a symlink at the target
    is replaced, never written through."""
    path = os.path.abspath(args.output)
    for db_file in store.files():
        if os.path.realpath(path) == os.path.realpath(db_file) or (
                os.path.exists(path) and os.path.exists(db_file) and os.path.samefile(path, db_file)):
            raise _UsageError(f"refusing to export to {args.output}: it is the history database itself")
    if os.path.lexists(path):
        if os.path.isdir(path):
            raise _UsageError(f"{args.output} is a directory")
        if not args.force:
            kind = "a symlink" if os.path.islink(path) else "a file"
            raise _UsageError(f"{args.output} exists ({kind}); use --force to replace it")
    import tempfile

    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            n = _write_export(store, args, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return n


def cmd_prune(store: Any, args: argparse.Namespace, out: TextIO) -> int:
    why = f"older than {args.older_than_text}" if args.older_than is not None else f"beyond the newest {args.keep:,}"
    if not (args.dry_run or args.yes or _interactive()):
        # Refused whatever the count, so that a script learns it needs --yes on its first run.
        raise _UsageError("prune deletes calls: pass --yes to confirm (standard input is not a terminal), "
                          "or --dry-run to count them")
    if args.dry_run or not args.yes:
        n = store.prune_count(older_than=args.older_than, keep=args.keep)
        if args.dry_run:
            out.write(f"would delete {n:,} calls {why} (dry run: nothing deleted)\n")
            return EXIT_OK
        if n == 0:
            out.write(f"deleted 0 calls {why}\n")
            return EXIT_OK
        if not _confirm(f"delete {n:,} calls {why} from {store.display_url}? [y/N] "):
            return _fail(EXIT_USAGE, "nothing deleted")
    n = store.prune(older_than=args.older_than, keep=args.keep)
    out.write(f"deleted {n:,} calls {why}\n")
    return EXIT_OK


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _confirm(question: str) -> bool:
    """Ask on the terminal (the caller checked there is one); yes only for y or yes."""
    sys.stderr.write(question)
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


# -- the parser and main --------------------------------------------------------------


def _add_filters(p: argparse.ArgumentParser, since: bool = True) -> None:
    p.add_argument("--session", help="only calls of this session")
    p.add_argument("--model", help="only calls to this model")
    p.add_argument("--status", choices=("ok", "error"), help="only successful or failed calls")
    if since:
        p.add_argument("--since", type=_when, metavar="WHEN",
                       help="only calls since a duration ago (24h, 7d) or a date/time (2026-05-01T12:00Z)")
        p.add_argument("--until", type=_when, metavar="WHEN", help="only calls before this (same forms)")


def _db_option(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--db", metavar="URL", default=default,
                   help=f"the history database: a URL or a SQLite file (default: $HISTORYMW_SQL_URL, else "
                        f"{_DEFAULT_URL})")


_COMMANDS = ("tail", "show", "stats", "sessions", "export", "prune", "ui")


def _command_in(argv: Sequence[str]) -> str:
    """The command argparse will find in `argv`: its first positional argument, past the main parser's
    options (-h, --db URL, --db=URL, and their abbreviations); "" when that is not a command's name
    (then argparse prints the main help, or says what is missing or wrong, before any command's
    arguments are looked at)."""
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--":
            return argv[i + 1] if i + 1 < len(argv) and argv[i + 1] in _COMMANDS else ""
        elif arg.startswith("-"):
            skip = len(arg) >= 3 and "--db".startswith(arg)  # --db (or --d) takes the next argument
        else:
            return arg if arg in _COMMANDS else ""
    return ""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser. With `only`, the arguments of that command alone ("": of none); every
    command is listed, as `historymw --help` shows them. `main` declares only those of the command in its
    argv: each argparse argument costs a few hundred thousand instructions to declare."""
    parser = _Parser(prog="historymw", description="Read and prune the LLM call history stored by historymw.",
                     epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _db_option(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help_text: str, fn: Callable[..., int]) -> argparse.ArgumentParser | None:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(fn=fn)
        if only is not None and name != only:
            return None  # listed; its arguments are not declared
        # After the command too; SUPPRESS: absent there, the value given before the command stands.
        _db_option(p, argparse.SUPPRESS)
        return p

    if p := command("tail", "the newest calls, one line each (newest last)", cmd_tail):
        p.add_argument("-n", type=_count, default=20, metavar="N", help="how many calls (default 20)")
        p.add_argument("-f", "--follow", action="store_true", help="keep printing new calls until Ctrl-C")
        p.add_argument("--interval", type=_interval, default=1.0, metavar="DURATION",
                       help="how often --follow looks for new calls (default 1s)")
        p.add_argument("--json", action="store_true", help="one JSON record per line")
        _add_filters(p)

    if p := command("show", "one call in full: messages, output, usage", cmd_show):
        p.add_argument("id", metavar="ID", help="the call's short id (as tail shows it), its full id, "
                       "or a unique prefix of either; any case")
        p.add_argument("--json", action="store_true", help="the record as JSON")

    if p := command("stats", "calls, errors, tokens, cost and latency (p50, p95)", cmd_stats):
        p.add_argument("--by", choices=GROUPS, help="one line per model, session, status, ...")
        p.add_argument("--json", action="store_true", help="the numbers as JSON")
        _add_filters(p)

    if p := command("sessions", "sessions, most recent activity first; with ID, that session's calls in order",
                    cmd_sessions):
        p.add_argument("id", metavar="ID", nargs="?", help="show this session: its totals and every call, oldest first")
        p.add_argument("-n", type=_count, default=50, metavar="N", help="sessions per page (default 50)")
        p.add_argument("--before", metavar="CURSOR", help="the next page: the cursor the previous page printed")
        p.add_argument("--full", action="store_true", help="with ID: every call's messages and output in full")
        p.add_argument("--json", action="store_true", help="the page (and its next cursor), or the session, as JSON")

    if p := command("export", "every matching call, oldest first, as JSON lines or CSV", cmd_export):
        p.add_argument("--format", choices=("jsonl", "csv"), required=True)
        p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (created owner-only, replaced "
                       "atomically) instead of standard output")
        p.add_argument("--force", action="store_true", help="replace FILE if it exists")
        _add_filters(p)

    if p := command("prune", "delete old calls", cmd_prune):
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--older-than", metavar="DURATION", dest="older_than_text",
                           help="delete calls that started longer ago than this (e.g. 30d, 12h)")
        group.add_argument("--keep", type=_count, metavar="N", help="delete all but the newest N calls")
        p.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
        p.add_argument("-y", "--yes", action="store_true",
                       help="do not ask for confirmation (required when standard input is not a terminal)")

    # main() runs `ui` itself, before opening a Store: the viewer opens the database read-only.
    if p := command("ui", "a read-only web viewer of the history (127.0.0.1 by default)", lambda *_: EXIT_OK):
        from .ui.command import add_arguments as add_ui_arguments  # the viewer lives in historymw/ui/

        add_ui_arguments(p)
    return parser


def _db_url(given: str | None) -> str:
    """The store's URL: --db (a bare path is a SQLite file), else HISTORYMW_SQL_URL, else the default.
    Only this setting is read: a bad value of another HISTORYMW_* variable concerns recording, not the CLI."""
    from .sql.direct import known_url

    if given is not None:
        url = given if "://" in given else "sqlite:///" + os.path.expanduser(given)
        if not known_url(url):  # the direct readers' URLs are valid as they are (checked without SQLAlchemy)
            from .sql.engine import parse_url

            parse_url(url)
        return url
    env = os.environ.get("HISTORYMW_SQL_URL", "").strip()
    if not env:
        return _DEFAULT_URL
    try:
        if not known_url(env):
            from .sql.engine import parse_url

            parse_url(env)
    except ConfigError as exc:
        raise ConfigError(f"HISTORYMW_SQL_URL={env!r} is not valid: {exc}") from None
    return env


def _read_directly(url: str, args: argparse.Namespace, out: TextIO) -> int | None:
    """`historymw sessions` (the list, or one session's table of calls) read by `sql.direct`: a SQLite file
    with sqlite3, PostgreSQL with libpq, for the imports of SQLAlchemy and psycopg cost several times the
    rest of the command. None when those readers do not read this store, or failed before printing: then
    the Store reads it, and says what is wrong."""
    if args.command != "sessions" or (args.id is not None and (args.json or args.full)):
        return None  # whole calls (messages, JSON): LMCall models, read by the Store
    from .sql import direct

    reader = direct.open_sessions(url)
    if reader is None:
        return None
    with reader:
        try:
            return cmd_sessions(reader, args, out)
        except direct.UnreadableError:
            return None  # nothing printed yet: cmd_sessions prints once its reads are done


def _fail(code: int, message: str) -> int:
    print(f"historymw: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code (see the module's EXIT_* names)."""
    out = sys.stdout if out is None else out
    try:
        args = build_parser(_command_in(sys.argv[1:] if argv is None else argv)).parse_args(argv)
        if getattr(args, "older_than_text", None) is not None:
            try:
                args.older_than = _duration(args.older_than_text)
            except argparse.ArgumentTypeError as exc:
                raise _UsageError(f"argument --older-than: {exc}") from None
        else:
            args.older_than = None
        url = _db_url(args.db)
        if args.command == "ui":  # opens the database itself, read-only (never migrates)
            from .ui.command import run as run_ui

            return run_ui(url, args, out)
        code = _read_directly(url, args, out)
        if code is not None:
            return code
        from .errors import require

        require("sqlalchemy", what="The historymw command line", extra="sql")
        from .store import Store

        with Store(url) as store:
            return int(args.fn(store, args, out))
    except _UsageError as exc:
        return _fail(EXIT_USAGE, f"error: {exc}")
    except ConfigError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except (StoreError, MissingDependencyError) as exc:
        return _fail(EXIT_DATABASE, str(exc))
    except BrokenPipeError:
        # The reader went away (`historymw export ... | head`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        return _fail(EXIT_USAGE, f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc))
    except Exception as exc:  # noqa: BLE001 - a command line prints one line, never a traceback
        return _fail(EXIT_DATABASE, f"internal error: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
