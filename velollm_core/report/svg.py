"""Charts as inline SVG text: line/scatter charts and bar charts with spread, nothing fetched, no script.

Why our own SVG rather than a plotting library: see docs/ARCHITECTURE.md ("Reports"). Every mark
carries a ``<title>`` (the browser shows it on hover) and a class the report test counts
(``point``, ``bar``), so a chart without data is caught in the rendered page.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from html import escape

# Okabe-Ito: told apart by people with any common colour vision deficiency (its yellow is left out:
# too pale on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#999999")
WIDTH, HEIGHT = 680, 330
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 52, 50
CATEGORY_CHAR_PX, CATEGORY_SLANT = 6.4, 35  # a tick character's width (11 px sans), degrees of slant
# The charts' own style rules: the report's page includes them, and standalone() inlines them.
CHART_CSS = """\
.chart-title{font-size:14px;font-weight:600;fill:#1b1b1b}.legend{font-size:12px;fill:#333}
.tick{font-size:11px;fill:#555}.axis-label{font-size:12px;fill:#333}
.grid{stroke:#eee}.axis{stroke:#888}.reference{stroke:#555;stroke-dasharray:6 4}
.reference-label,.span-label{font-size:11px;fill:#555}.span{fill:#0072B2}
.point-label{font-size:10px;fill:#444}.mark-label{font-size:12px;font-weight:600}.bar-label{font-size:10px;fill:#333}
"""


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def fmt(value: float) -> str:
    """A number for a label: 3 significant digits, thousands as k/M (exponent notation beyond 1e15)."""
    magnitude = abs(value)
    if not math.isfinite(value) or magnitude >= 1e15:
        return f"{value:.3g}"
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k"
    if magnitude >= 100:  # not 3 significant digits: '6e+03'
        return f"{value:.0f}"
    return f"{value:.3g}" if magnitude >= 1 or value == 0 else f"{value:.2g}"


def _ticks(lo: float, hi: float, count: int) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering lo..hi (1, 2, 2.5 or 5 times a power of ten apart).

    Values beyond 1e12 or below 1e-6 are ticked in units of their power of ten, so nothing overflows
    (hi - lo does from ±1.7e308) or rounds to zero; a tick beyond the float range is the largest float.
    """
    magnitude = max(abs(lo), abs(hi))
    exponent = math.floor(math.log10(magnitude)) if magnitude > 1e12 or 0 < magnitude < 1e-6 else 0
    scale = 10.0 ** max(exponent, -300)
    ticks = [float(tick) * scale for tick in _ticks(lo / scale, hi / scale, count)]
    return [tick if math.isfinite(tick) else math.copysign(sys.float_info.max, tick) for tick in ticks]


@dataclass
class Series:
    name: str
    color: str
    points: list[tuple[float, float]]
    labels: list[str] = field(default_factory=list)  # one per point, written beside it
    dashed: bool = False
    line: bool = True


@dataclass
class Mark:
    """A point drawn on top of the series (the knee, a prediction), with a label."""

    x: float
    y: float
    text: str
    color: str = "#D55E00"


class _Frame:
    """The plot area and the value-to-pixel mapping of one chart."""

    def __init__(self, xs: list[float], ys: list[float], *, y_zero: bool, x_zero: bool = False,
                 legend_rows: int = 1, bottom_extra: float = 0.0) -> None:
        extra = 14 * max(legend_rows - 1, 0)  # a legend on more rows pushes the plot down, the chart grows
        self.top, self.height = TOP + extra, HEIGHT + extra + round(bottom_extra)
        x_lo, x_hi = min(xs), max(xs)
        y_lo, y_hi = (min(0.0, min(ys)) if y_zero else min(ys)), max(ys)
        if x_zero:
            x_lo = min(0.0, x_lo)
        self.x_ticks = nice_ticks(x_lo, x_hi)
        self.y_ticks = nice_ticks(y_lo, y_hi)
        self.x0, self.x1 = self.x_ticks[0], self.x_ticks[-1]
        self.y0, self.y1 = self.y_ticks[0], self.y_ticks[-1]
        self.w, self.h = WIDTH - LEFT - RIGHT, self.height - self.top - BOTTOM - round(bottom_extra)

    # Differences are taken of halves: x - x0 overflows where both lie near ±1.7e308.
    def px(self, x: float) -> float:
        return LEFT + (x / 2 - self.x0 / 2) / ((self.x1 / 2 - self.x0 / 2) or 1) * self.w

    def py(self, y: float) -> float:
        return self.top + self.h - (y / 2 - self.y0 / 2) / ((self.y1 / 2 - self.y0 / 2) or 1) * self.h


def _open(title: str, chart_id: str, height: int) -> list[str]:
    return [(f'<svg class="chart-svg" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
            f'height="{height}" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'),
            f"<title>{escape(title)}</title>",
            f'<text class="chart-title" x="{LEFT}" y="18">{escape(title)}</text>']


def _legend(entries: list[tuple[str, str, bool]]) -> tuple[list[str], int]:
    """Swatches in a row under the title, wrapping to more rows: (elements, rows)."""
    out, x, y, rows = [], LEFT, 36, 1
    for name, colour, dashed in entries:
        width = 26 + 6.6 * len(name)
        if x + width > WIDTH - RIGHT and x > LEFT:
            x, y, rows = LEFT, y + 14, rows + 1
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        out.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 16}" y2="{y - 4}" stroke="{colour}" stroke-width="3"{dash}/>'
                   f'<text class="legend" x="{x + 20}" y="{y}">{escape(name)}</text>')
        x += width + 12
    return out, rows


def _axes(frame: _Frame, x_label: str | None, y_label: str, x_categories: bool = False) -> list[str]:
    out = []
    for tick in frame.y_ticks:
        y = frame.py(tick)
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(tick)}</text>')
    if not x_categories:
        for tick in frame.x_ticks:
            x = frame.px(tick)
            out.append(f'<line class="axis" x1="{x:.1f}" y1="{frame.top + frame.h}" x2="{x:.1f}" y2="{frame.top + frame.h + 4}"/>'
                       f'<text class="tick" x="{x:.1f}" y="{frame.top + frame.h + 17}" text-anchor="middle">{fmt(tick)}</text>')
    out.append(f'<line class="axis" x1="{LEFT}" y1="{frame.top + frame.h}" x2="{WIDTH - RIGHT}" y2="{frame.top + frame.h}"/>'
               f'<line class="axis" x1="{LEFT}" y1="{frame.top}" x2="{LEFT}" y2="{frame.top + frame.h}"/>')
    if x_label:
        out.append(f'<text class="axis-label" x="{LEFT + frame.w / 2}" y="{frame.height - 8}" '
                   f'text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text class="axis-label" transform="translate(16 {frame.top + frame.h / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    return out


def _hline(frame: _Frame, value: float | None, text: str) -> list[str]:
    if value is None or not frame.y0 <= value <= frame.y1:
        return []
    y = frame.py(value)
    return [(f'<line class="reference" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
             f'<text class="reference-label" x="{WIDTH - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end">'
             f"{escape(text)}</text>")]


def xy_chart(chart_id: str, title: str, x_label: str, y_label: str, series: list[Series], *,
             marks: list[Mark] = (), hline: tuple[float, str] | None = None,
             spans: list[tuple[float, float, str]] = (), y_zero: bool = True, x_zero: bool = False) -> str:
    """Lines through points (or points alone), labelled points, marks on top and shaded x spans."""
    xs = [x for s in series for x, _ in s.points] + [m.x for m in marks] + [v for a, b, _ in spans for v in (a, b)]
    ys = [y for s in series for _, y in s.points] + [m.y for m in marks] + ([hline[0]] if hline else [])
    legend, rows = _legend([(s.name, s.color, s.dashed) for s in series])
    frame = _Frame(xs, ys, y_zero=y_zero, x_zero=x_zero, legend_rows=rows)
    out = _open(title, chart_id, frame.height) + legend
    for i, (start, end, text) in enumerate(spans):
        a, b = frame.px(start), frame.px(end)
        out.append(f'<rect class="span" x="{a:.1f}" y="{frame.top}" width="{max(b - a, 0.5):.1f}" height="{frame.h}" '
                   f'fill-opacity="{0.10 if i % 2 == 0 else 0.05}"><title>{escape(text)}</title></rect>'
                   f'<text class="span-label" x="{a + 3:.1f}" y="{frame.top + 11}">{escape(text)}</text>')
    out += _axes(frame, x_label, y_label)
    out += _hline(frame, *(hline or (None, "")))
    for s in series:
        pts = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in s.points)
        dense = len(s.points) > 64  # a time series: the line alone, its points in data-n
        if s.line and len(s.points) > 1:
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            out.append(f'<polyline class="series" points="{pts}" fill="none" stroke="{s.color}" '
                       f'stroke-width="{1.6 if dense else 2}"{dash} data-n="{len(s.points) if dense else 0}">'
                       f"<title>{escape(s.name)}</title></polyline>")
        for i, (x, y) in enumerate([] if dense and s.line else s.points):
            label = s.labels[i] if i < len(s.labels) else ""
            tip = f"{s.name}: {label + ' ' if label else ''}{x_label} {fmt(x)}, {y_label} {fmt(y)}"
            out.append(f'<circle class="point" cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="3.5" '
                       f'fill="{"#fff" if s.dashed else s.color}" stroke="{s.color}" stroke-width="1.5">'
                       f"<title>{escape(tip)}</title></circle>")
            if label:
                out.append(f'<text class="point-label" x="{frame.px(x) + 6:.1f}" y="{frame.py(y) - 6:.1f}">'
                           f"{escape(label)}</text>")
    for m in marks:
        x, y = frame.px(m.x), frame.py(m.y)
        out.append(f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="8" fill="none" stroke="{m.color}" '
                   f'stroke-width="2.5"><title>{escape(m.text)}</title></circle>'
                   f'<text class="mark-label" x="{x - 10:.1f}" y="{y + 18:.1f}" text-anchor="end" '
                   f'fill="{m.color}">{escape(m.text)}</text>')
    out.append("</svg>")
    return "\n".join(out)


@dataclass
class Bar:
    """One bar: the median, whiskers low..high, and the single values as dots."""

    median: float
    low: float
    high: float
    values: list[float] = field(default_factory=list)
    note: str = ""


def bar_chart(chart_id: str, title: str, y_label: str, categories: list[str],
              groups: list[tuple[str, str, list[Bar | None]]], *, hline: tuple[float, str] | None = None,
              whisker_label: str = "min-max") -> str:
    """Grouped bars: one group per category, one bar per (name, colour, bars) entry of ``groups``."""
    values = [v for _, _, bars in groups for bar in bars if bar for v in (bar.median, bar.low, bar.high, *bar.values)]
    legend, rows = _legend([(name, colour, False) for name, colour, _ in groups])
    # Category names wider than their slot are written slanted (below the axis, the chart grows).
    slot = (WIDTH - LEFT - RIGHT) / max(len(categories), 1)
    longest = max((len(c) for c in categories), default=0) * CATEGORY_CHAR_PX
    slanted = longest > slot * 0.92
    bottom_extra = max(longest * math.sin(math.radians(CATEGORY_SLANT)) - 18, 0.0) if slanted else 0.0
    frame = _Frame([0.0, 1.0], values + ([hline[0]] if hline else []), y_zero=True, legend_rows=rows,
                   bottom_extra=bottom_extra)
    out = _open(title, chart_id, frame.height) + legend
    out += _axes(frame, None, y_label, x_categories=True)
    out += _hline(frame, *(hline or (None, "")))
    width = min(46.0, slot * 0.8 / max(len(groups), 1))
    for c, category in enumerate(categories):
        centre = LEFT + slot * (c + 0.5)
        y = frame.top + frame.h + 17
        if slanted:
            out.append(f'<text class="tick category" x="{centre + 4:.1f}" y="{y - 4}" text-anchor="end" '
                       f'transform="rotate(-{CATEGORY_SLANT} {centre + 4:.1f} {y - 4})">{escape(category)}</text>')
        else:
            out.append(f'<text class="tick category" x="{centre:.1f}" y="{y}" '
                       f'text-anchor="middle">{escape(category)}</text>')
        for g, (name, colour, bars) in enumerate(groups):
            bar = bars[c] if c < len(bars) else None
            if bar is None:
                continue
            x = centre + (g - len(groups) / 2) * width
            top, base = frame.py(bar.median), frame.py(max(frame.y0, 0.0))
            tip = (f"{name} · {category}: median {fmt(bar.median)} {y_label}, {whisker_label} "
                   f"{fmt(bar.low)}-{fmt(bar.high)}, n={len(bar.values)}{bar.note}")
            out.append(f'<rect class="bar" x="{x + 1:.1f}" y="{top:.1f}" width="{width - 2:.1f}" '
                       f'height="{max(base - top, 0.5):.1f}" fill="{colour}" fill-opacity="0.75">'
                       f"<title>{escape(tip)}</title></rect>")
            mid, lo, hi = x + width / 2, frame.py(bar.low), frame.py(bar.high)
            if bar.high > bar.low:  # no whisker for a single value (a % of roofline)
                out.append(f'<path class="whisker" d="M{mid:.1f},{lo:.1f}V{hi:.1f}M{mid - 5:.1f},{lo:.1f}h10'
                           f'M{mid - 5:.1f},{hi:.1f}h10" stroke="#222" stroke-width="1.3" fill="none"/>')
            for i, value in enumerate(bar.values):
                jitter = ((i % 5) - 2) * min(3.0, width / 12)
                out.append(f'<circle class="run" cx="{mid + jitter:.1f}" cy="{frame.py(value):.1f}" r="2.2" '
                           f'fill="#fff" stroke="#222" stroke-width="1"/>')
            out.append(f'<text class="bar-label" x="{mid:.1f}" y="{min(top, hi) - 4:.1f}" text-anchor="middle">'
                       f"{fmt(bar.median)}</text>")
    out.append("</svg>")
    return "\n".join(out)


def standalone(svg: str) -> str:
    """A chart that renders on its own (a browser, GitHub's Markdown): its style rules and font inlined."""
    style = f"<style>svg{{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}}{CHART_CSS}</style>"
    return svg.replace("<title>", style + "<title>", 1)
