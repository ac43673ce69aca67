"""`inspect_history(n)`: the last n calls, printed for a person (DSPy-style)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .models import LMCall

_RESET, _BOLD, _DIM, _GREEN, _RED, _BLUE, _YELLOW = (
    "\033[0m", "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[34m", "\033[33m")


# Characters a terminal may act on instead of printing: C0 controls (ESC starts CSI/OSC sequences:
# window title, OSC 52 clipboard, screen clear; CR rewrites the line), DEL, the C1 controls (U+009B
# is a one-character CSI on some terminals) and the bidirectional overrides that reorder what is
# shown. Tab and newline are kept where text spans lines.
# Each is escaped as \x1b (\u202e above U+00FF). str.translate tables, not a regex: compiling that
# character class cost the command line 2.4 million instructions a pattern, more than its query.
_UNSAFE_IN_LINE = {o: f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"
                   for o in (*range(0x20), *range(0x7f, 0xa0), 0x61c, 0x200e, 0x200f, *range(0x202a, 0x202f),
                             *range(0x2066, 0x206a))}
_UNSAFE = {o: e for o, e in _UNSAFE_IN_LINE.items() if o not in (0x09, 0x0a)}


def safe_text(text: str, *, one_line: bool = False) -> str:
    """Recorded text made inert for a terminal: control characters shown as `\\x1b`-style escapes
    (model output can carry escape sequences: it must be read, never executed)."""
    return text.translate(_UNSAFE_IN_LINE if one_line else _UNSAFE)


def _use_colour(out: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(out, "isatty", None)
    try:
        return bool(isatty and isatty())
    except Exception:  # noqa: BLE001
        return False


def _content_text(content: Any) -> str:
    import json  # here: the command line's tables print no JSON

    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                parts.append(json.dumps(part, ensure_ascii=False, default=str))
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False, default=str)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.0f}ms"
    return f"{seconds:.2f}s"


def format_cost(cost: float | None) -> str:
    return "-" if cost is None else f"${cost:.6f}".rstrip("0").rstrip(".") if cost else "$0"


def render(records: list[LMCall], colour: bool = False) -> str:
    """The records as text for a person; recorded text is passed through `safe_text`."""
    import json

    def c(code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if colour else text

    def one(value: object) -> str:
        return safe_text(str(value), one_line=True)

    lines: list[str] = []
    for r in records:
        status = c(_GREEN, "ok") if r.status == "ok" else c(_RED, one(f"error {r.error_type or ''}".strip()))
        who = one("/".join(p for p in (r.provider, r.model) if p) or "?")
        head = [c(_BOLD, f"[{r.started_at:%Y-%m-%d %H:%M:%S} UTC]"), who, one(r.operation), status,
                format_duration(r.duration_s)]
        if r.stream:
            head.append(f"stream (first token {format_duration(r.time_to_first_token_s)})")
        if r.session:
            head.append(f"session={one(r.session)}")
        if r.tags:
            head.append(one(" ".join(f"{k}={v}" for k, v in r.tags.items())))
        lines.append("  ".join(head))
        lines.append(c(_DIM, one(f"id {r.id}  source {r.source}" + (f"  trace {r.trace_id}" if r.trace_id else ""))))
        lines.append("")
        for m in r.messages:
            role = m.get("role", "message") if isinstance(m, dict) else "message"
            content = m.get("content") if isinstance(m, dict) else m
            lines.append(c(_BLUE, f"{one(str(role).capitalize())} message:"))
            lines.append("")
            lines.append(safe_text(_content_text(content)))
            lines.append("")
        if r.status == "error":
            lines.append(c(_RED, "Error:"))
            lines.append("")
            lines.append(safe_text(f"{r.error_type}: {r.error_message}"))
        else:
            lines.append(c(_GREEN, "Response:"))
            lines.append("")
            lines.append(safe_text(r.output_text) if r.output_text is not None else c(_DIM, "(no text)"))
            for out in r.outputs:
                if isinstance(out, dict) and out.get("tool_calls"):
                    lines.append(c(_YELLOW, "Tool calls: ") + one(json.dumps(out["tool_calls"], ensure_ascii=False,
                                                                          default=str)))
        lines.append("")
        usage = (f"tokens in {r.input_tokens if r.input_tokens is not None else '-'}"
                 f" / out {r.output_tokens if r.output_tokens is not None else '-'}"
                 f" / total {r.total_tokens if r.total_tokens is not None else '-'}")
        extra = [usage, f"cost {format_cost(r.cost)}"]
        if r.finish_reason:
            extra.append(f"finish {one(r.finish_reason)}")
        if r.cache_hit:
            extra.append("cache hit")
        lines.append(c(_DIM, "  ".join(extra)))
        lines.append("")
        lines.append("")
    return "\n".join(lines)


def inspect_history(n: int = 1, *, file: TextIO | None = None, records: list[LMCall] | None = None) -> str:
    """Print the last `n` recorded calls (oldest first) and return the text printed."""
    from .api import recent

    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"inspect_history(n): n must be a whole number of calls, not {n!r}")
    if n < 0:
        raise ValueError(f"inspect_history(n): n must be >= 0, not {n}")

    out = sys.stdout if file is None else file
    records = recent(n) if records is None else records
    if not records:
        text = "historymw: no calls recorded yet (is a 'ring' backend configured and the policy on?)\n"
    else:
        text = render(records, _use_colour(out))
    out.write(text)
    return text
