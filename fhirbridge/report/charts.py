"""Bar charts of a measure's points, drawn server-side by matplotlib as inline SVG.

No JavaScript and no external asset: the SVG is text in the page, so the report can be
mailed or archived as one file. Each bar is an SVG group whose id is
``{chart id}-bar-{n}``, so a reader (or a browser test) can find the bars that carry data.
Text stays text (``svg.fonttype: none``) and ids are stable (``svg.hashsalt``), so the same
figures give the same bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any, Literal

import matplotlib as mpl
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from matplotlib.typing import RcKeyType

from fhirbridge.report.model import Point, Unit

__all__ = ["ChartUnit", "bar_chart"]

#: A measure's unit, or ``count`` for plain counts (the console's metrics).
ChartUnit = Unit | Literal["count"]

STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "fhirbridge",
    "font.family": "sans-serif",
    "font.size": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
BAR = "#2b6cb0"
EMPTY = "#cbd5e0"
_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.S)


def _tick(label: str, limit: int = 18) -> str:
    """A tick label short enough to sit under its bar (the caption keeps the full one)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _label(point: Point, unit: ChartUnit) -> str:
    if point.value is None:
        return "-"
    if unit == "days":
        return f"{point.value:g} d"
    if unit == "count":
        return f"{point.value:g}"
    return f"{point.value:.0%}"


def bar_chart(
    chart_id: str,
    points: Sequence[Point],
    *,
    unit: ChartUnit,
    title: str,
    width: float = 4.6,
    rotate: bool = False,
) -> str:
    """An SVG bar chart of ``points`` (value per label); a bar for a point with no
    denominator is drawn empty, at zero. Returns the ``<svg>`` element as text."""
    labels = [p.label for p in points]
    ticks = [_tick(label) for label in labels]
    slanted = rotate or len(points) > 4 or any(len(t) > 10 for t in ticks)
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(width, 2.3), dpi=96)
        figure.subplots_adjust(left=0.12, right=0.98, top=0.86, bottom=0.36 if slanted else 0.16)
        FigureCanvasSVG(figure)
        axes = figure.add_subplot()
        heights = [(p.value or 0.0) * (100 if unit == "share" else 1) for p in points]
        bars = axes.bar(
            range(len(points)),
            heights,
            color=[BAR if p.denominator else EMPTY for p in points],
            width=0.7,
        )
        for n, (bar, point) in enumerate(zip(bars, points, strict=True)):
            bar.set_gid(f"{chart_id}-bar-{n}")
            axes.annotate(
                f"{_label(point, unit)}\n{point.numerator}/{point.denominator}"
                if unit == "share"
                else _label(point, unit),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=6.5,
                xytext=(0, 1),
                textcoords="offset points",
            )
        axes.set_xticks(
            range(len(points)),
            ticks,
            rotation=30 if slanted else 0,
            ha="right" if slanted else "center",
            fontsize=6.5 if slanted else 8,
        )
        if unit == "share":
            axes.set_ylim(0, 118)
            axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}%"))
        else:
            top = max(heights, default=0.0)
            axes.set_ylim(0, top * 1.25 + 1)
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        figure.text(0.01, 0.97, title, fontsize=8, va="top")
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return _PROLOGUE.sub("", buffer.getvalue(), count=1)
