"""Charts as inline SVG, drawn on the server: no script, no chart library, nothing to fetch.

Every label goes through `escape`; numbers are formatted here. Colours come from
classes the stylesheet defines, so the strict Content-Security-Policy (no inline
styles) holds.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

W, H = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 28


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** len(str(int(v))) / 10 if v >= 1 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= v:
            return float(m * exp)
    return float(10 * exp)


def _time_label(t: float, span: float) -> str:
    d = _dt.datetime.fromtimestamp(t, _dt.timezone.utc)
    return d.strftime("%H:%M") if span <= 2 * 86400 else d.strftime("%m-%d %H:%M")


def _frame(ymax: float, fmt: Callable[[float], str], starts: Sequence[float], width: float, title: str) -> list[str]:
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}" '
           f'xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>"]
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{escape(fmt(ymax * i / 4))}</text>")
    n = len(starts)
    if n:
        span = starts[-1] + width - starts[0]
        for i in range(0, n, max(n // 6, 1)):
            x = LEFT + plot_w * i / n
            out.append(f'<text class="axis" x="{x:.1f}" y="{H - 8}" text-anchor="start">'
                       f"{escape(_time_label(starts[i], span))}</text>")
    return out


def calls_chart(buckets: Sequence[dict[str, float]], width: float) -> Markup:
    """Stacked bars per time bucket: successful calls and errors."""
    starts = [b["start"] for b in buckets]
    ymax = _nice_max(max((b["calls"] for b in buckets), default=0))
    out = _frame(ymax, lambda v: f"{v:,.1f}".rstrip("0").rstrip("."), starts, width, "calls and errors over time")
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    bw = plot_w / max(len(buckets), 1)
    for i, b in enumerate(buckets):
        if not b["calls"]:
            continue
        x = LEFT + i * bw + bw * 0.12
        h_all = plot_h * b["calls"] / ymax
        h_err = plot_h * b["errors"] / ymax
        tip = escape(f"{_time_label(b['start'], 0)} UTC: {b['calls']:,} calls, {b['errors']:,} errors")
        out.append(f'<g><title>{tip}</title>'
                   f'<rect class="bar-ok" x="{x:.1f}" y="{TOP + plot_h - h_all:.1f}" width="{bw * 0.76:.1f}" '
                   f'height="{h_all - h_err:.1f}"/>'
                   f'<rect class="bar-err" x="{x:.1f}" y="{TOP + plot_h - h_err:.1f}" width="{bw * 0.76:.1f}" '
                   f'height="{h_err:.1f}"/></g>')
    out.append("</svg>")
    return Markup("".join(out))


def _fmt_seconds(v: float) -> str:
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"


def latency_chart(buckets: Sequence[dict[str, float | None]], width: float) -> Markup:
    """Latency p50 and p95 per time bucket, as two lines (gaps where a bucket had no calls)."""
    starts = [float(b["start"] or 0) for b in buckets]
    ymax = _nice_max(max((float(b["p95"] or 0) for b in buckets), default=0.0))
    out = _frame(ymax, _fmt_seconds, starts, width, "latency p50 and p95 over time")
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    bw = plot_w / max(len(buckets), 1)
    for key, cls in (("p95", "line-p95"), ("p50", "line-p50")):
        segs: list[list[str]] = [[]]
        for i, b in enumerate(buckets):
            v = b[key]
            if v is None:
                if segs[-1]:
                    segs.append([])
                continue
            segs[-1].append(f"{LEFT + i * bw + bw / 2:.1f},{TOP + plot_h - plot_h * float(v) / ymax:.1f}")
        for seg in segs:
            if len(seg) == 1:
                x, y = seg[0].split(",")
                out.append(f'<circle class="{cls}" cx="{x}" cy="{y}" r="2.5"/>')
            elif seg:
                out.append(f'<polyline class="{cls}" points="{" ".join(seg)}"/>')
    out.append("</svg>")
    return Markup("".join(out))


def hbars(items: Sequence[tuple[str, float]], fmt: Callable[[float], str], title: str) -> Markup:
    """Horizontal bars, one per label (tokens or cost per model)."""
    row_h, label_w, w = 26, 200, W
    h = max(len(items), 1) * row_h + 8
    vmax = max((v for _, v in items), default=0.0) or 1.0
    out = [f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{escape(title)}" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    if not items:
        out.append(f'<text class="axis" x="8" y="20">{escape("nothing in this range")}</text>')
    for i, (label, v) in enumerate(items):
        y = 4 + i * row_h
        bar = (w - label_w - 110) * v / vmax
        short = label if len(label) <= 28 else label[:27] + "…"
        out.append(f'<text class="label" x="{label_w - 8}" y="{y + 17}" text-anchor="end">'
                   f'<title>{escape(label)}</title>{escape(short)}</text>'
                   f'<rect class="bar-model" x="{label_w}" y="{y + 4}" width="{max(bar, 1):.1f}" height="{row_h - 8}"/>'
                   f'<text class="axis" x="{label_w + bar + 6:.1f}" y="{y + 17}">{escape(fmt(v))}</text>')
    out.append("</svg>")
    return Markup("".join(out))
